"""Lip sync a face video or a still image to a soundtrack: the official Wav2Lip ``inference.py`` pipeline, streamed.

What matches the official code (Rudrabha/Wav2Lip ``inference.py``), frame for frame before encoding:
- one output frame per mel window (``chunk_starts``: step ``80/fps`` mel frames, the last window forced to the
  end); a still image is repeated, a video shorter than the sound loops from its start (frame ``i % n``);
- the face box: the detector's highest-score box truncated to ints, padded by ``pads`` (top, bottom, left,
  right; official default 0, 10, 0, 0) and clipped to the frame, then smoothed over the next 5 frames with the
  official quirks (integer truncation, tail windows reusing boxes already smoothed, the short-clip slices);
- the network input: the box crop resized to 96x96 by ``cv2.resize`` (bilinear), BGR, lower half zeroed for
  channels 0-2, the unmasked crop as channels 3-5, ``/255`` in float64 then float32;
- paste-back: ``prediction * 255`` truncated to uint8, resized to the box by ``cv2.resize``, replacing the whole
  box (``blend=0``); ``blend > 0`` feathers the box border instead.

What differs is how it runs: detection goes through ``facesynth.extract`` backends (dlib, face-alignment) instead
of the bundled S3FD; the video is read twice, streamed (a detection pass that keeps only boxes, then the
synthesis pass, re-opening the file each time it loops), and so is the sound (once to count its mel frames,
then into mel windows as the frames need them), so memory does not grow with the video's or the sound's length; the
network runs with BatchNorm folded into the convs and channels-last tensors, at a smaller batch than the
official 128 (faster on CPU); the sound is muxed by ``facesynth.media.VideoWriter`` (H.264 + AAC), through
``facesynth.provenance.VideoWriter``, which also signs a C2PA manifest into the result (``c2pa.edited`` for a face
video, ``c2pa.created`` for a still) unless ``provenance=False``.
"""
from __future__ import annotations

import itertools
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch

from facesynth.errors import ConfigError, MediaError, NoFaceError
from facesynth.gpu import (HALF_PRECISIONS, call_compiled, compile_mode, cudnn_autotune, fp16_fallback, pad_batch,
                           precision_name)
from facesynth.lipsync.audio import HOP, MelWindows, chunk_starts, count_mel_frames
from facesynth.lipsync.model import Wav2Lip, fuse_batchnorm

if TYPE_CHECKING:
    from facesynth.provenance import Provenance

__all__ = ["lipsync", "write_lipsync", "iter_lipsync", "LipsyncPlan", "plan_lipsync", "pad_box", "smooth_boxes",
           "face_batch", "paste_prediction", "InferenceWav2Lip", "DEFAULT_PADS", "FACE_SIZE", "DEFAULT_BATCH_SIZE"]

DEFAULT_PADS = (0, 10, 0, 0)   # official --pads: top, bottom, left, right (more chin)
FACE_SIZE = 96
# frames per network call (official 128). On 2 CPU cores at 32 the batched early decoder stages read their large
# weights once for more frames: 28.8 frames/s against 26.5 at 16 and 28.0 at 64 (2026-12-07)
DEFAULT_BATCH_SIZE = 32
PRECISIONS = ("fp32", *HALF_PRECISIONS)          # "fp32", "bf16", "fp16"
SMOOTH_WINDOW = 5


@dataclass
class LipsyncPlan:
    """What ``iter_lipsync`` will do: frame source, rate, the sound, its windows and one crop box per source frame.

    ``audio`` is the sound file (streamed again by ``iter_lipsync``) or mono 16 kHz samples. ``coords`` is ``(n_frames, 4)`` int64 rows ``(y1, y2, x1, x2)`` (the official order), crop rows y1..y2-1 and
    columns x1..x2-1; output frame ``i`` uses source frame ``i % n_frames``.
    """
    face: Path
    still: bool
    fps: float
    audio: Path | np.ndarray
    num_mel_frames: int      # T: the sound's mel frames (80 per second)
    starts: np.ndarray       # (n_out,) int64: first mel frame of each output frame's window
    coords: np.ndarray       # (n_frames, 4) int64
    frame_size: tuple[int, int]   # (width, height)
    settings: dict = field(default_factory=dict)   # detector, pads, smooth, box as asked (for provenance)

    @property
    def num_frames(self) -> int:
        """Output frames (one per mel window)."""
        return len(self.starts)


def lipsync(face: str | os.PathLike, audio: str | os.PathLike, out: str | os.PathLike,
            checkpoint: str | os.PathLike | Wav2Lip = "wav2lip-gan", fps: float = 25.0,
            provenance: bool | Provenance | None = None, **options) -> Path:
    """Make the face in ``face`` speak ``audio``; write an MP4 with the sound to ``out``.

    Args:
        face: a video, or a still image (png, jpg…) that is repeated.
        audio: any file with sound (wav, mp3, a video); decoded at 16 kHz through the bundled ffmpeg.
        out: the MP4 to write (H.264 + AAC; appears only when complete).
        checkpoint: an official Wav2Lip checkpoint path or registry name (``"wav2lip"``, ``"wav2lip-gan"``), or
            a loaded network (``load_wav2lip``, ``random_wav2lip``).
        fps: the output rate for a still image (official default 25); a video keeps its own rate.
        provenance: sign a C2PA manifest into ``out`` (``c2pa.edited`` of a face video, ``c2pa.created`` from a
            still; the face's, the sound's and the checkpoint's SHA-256; the settings), mark its frames and write
            ``<out>.provenance.json``. On by default (None: unless ``$FACESYNTH_PROVENANCE=0``); False for a plain
            file; or a ``facesynth.provenance.Provenance`` to sign instead of lipsync's own (``talking_portrait``).
        options: see ``iter_lipsync`` (``detector``, ``pads``, ``smooth``, ``box``, ``batch_size``, ``blend``,
            ``device``, ``precision``, ``compile``, ``progress``).

    Returns:
        ``out``. The video has one frame per official mel window (``len(chunk_starts(T, fps))``, about
        ``fps`` x the sound's duration) and the frame size of ``face``.

    Raises:
        MediaError: unreadable face or sound, or a sound shorter than 0.2 s. NoFaceError: a frame without a
        face (the message names it; give ``box`` or another ``detector``). CheckpointError: a bad checkpoint.

    Example:
        >>> lipsync("portrait.png", "speech.wav", "talking.mp4", checkpoint="wav2lip_gan.pth")  # doctest: +SKIP
    """
    plan = plan_lipsync(face, audio, fps=fps, **_plan_options(options))
    return write_lipsync(plan, out, checkpoint, provenance=provenance, **_run_options(options))


def write_lipsync(plan: LipsyncPlan, out: str | os.PathLike, checkpoint: str | os.PathLike | Wav2Lip = "wav2lip-gan",
                  provenance: bool | Provenance | None = None, **options) -> Path:
    """Write the frames of ``iter_lipsync(plan, checkpoint, **options)`` to the MP4 ``out`` with the plan's sound;
    ``provenance`` as ``lipsync``."""
    from facesynth import provenance as pv

    if not isinstance(provenance, pv.Provenance):
        provenance = _provenance(plan, checkpoint, options) if pv.enabled(provenance) else None
    with pv.VideoWriter(out, plan.fps, audio=plan.audio if isinstance(plan.audio, Path) else None,
                        provenance=provenance) as writer:
        for frame in iter_lipsync(plan, checkpoint, **options):
            writer.write(frame)
    return Path(out)


def _provenance(plan: LipsyncPlan, checkpoint, options: dict) -> Provenance:
    """The record of a lip sync: an edit of a face video; a new video made from a still."""
    from facesynth import provenance as pv

    weights, noted = pv.model_weights(checkpoint)
    sound = [plan.audio] if isinstance(plan.audio, Path) else []
    parameters = {"fps": plan.fps, "still": plan.still, "frames": plan.num_frames, **plan.settings,
                  "blend": options.get("blend", 0.0), "precision": options.get("precision", "fp32"),
                  "compile": options.get("compile", False), **noted}
    if not sound:
        parameters["audio"] = "samples passed in memory"
    return pv.Provenance("lipsync", inputs=[plan.face, *sound], weights=weights, parameters=parameters,
                         edited=not plan.still)


def plan_lipsync(face: str | os.PathLike, audio: str | os.PathLike | np.ndarray, fps: float = 25.0,
                 detector="auto", pads: Sequence[int] = DEFAULT_PADS, smooth: bool = True,
                 box: Sequence[int] | None = None, device: str = "auto", progress: bool | None = None) -> LipsyncPlan:
    """The sound's mel windows and the face boxes (a streamed detection pass over the frames that will be used).

    ``audio`` may also be mono float samples at 16 kHz. ``detector``: ``"auto"``, ``"dlib"``, ``"fan"`` or a
    ``FaceBackend``; the face with the highest score of each frame is used. ``box``: a fixed ``(y1, y2, x1, x2)``
    for every frame instead (the official ``--box``: no detection, no pads, no smoothing). ``smooth=False`` is
    the official ``--nosmooth``.
    """
    from facesynth.media import is_image, probe, read_image

    path = Path(face)
    if not path.exists():
        raise MediaError(f"{path}: no such face video or image; check the path")
    pads = tuple(int(p) for p in pads)
    if len(pads) != 4 or min(pads) < 0:
        raise ConfigError(f"pads must be four non-negative ints (top, bottom, left, right), got {pads}")
    still = is_image(path)
    if still:
        height, width = read_image(path).shape[:2]
        if not fps or fps <= 0:
            raise ConfigError(f"fps must be positive for a still image, got {fps}")
    else:
        info = probe(path)
        fps, width, height = info.fps, info.width, info.height
    if isinstance(audio, np.ndarray):
        if audio.ndim != 1:
            raise MediaError(f"audio samples must be mono (N,), got shape {audio.shape}")
        num_mel = 1 + audio.size // HOP
    else:
        audio = Path(audio)
        num_mel = count_mel_frames(audio)
    starts = chunk_starts(num_mel, fps)
    if box is not None:
        y1, y2, x1, x2 = (int(v) for v in box)
        if not (0 <= y1 < y2 <= height and 0 <= x1 < x2 <= width):
            raise ConfigError(f"box {tuple(box)} (y1, y2, x1, x2) is not inside the {width}x{height} frame")
        n = 1 if still else _count_frames(path, limit=len(starts))
        coords = np.tile(np.array([y1, y2, x1, x2], np.int64), (n, 1))
    else:
        n_frames = 1 if still else len(starts)
        detections = _detect(path, still, n_frames, detector, device, progress)
        boxes = np.array([pad_box(d, pads, (width, height)) for d in detections], np.int64)
        if smooth:
            boxes = smooth_boxes(boxes)
        coords = boxes[:, [1, 3, 0, 2]]
    settings = {"detector": getattr(detector, "name", detector), "pads": pads, "smooth": smooth,
                "box": None if box is None else [int(v) for v in box]}
    return LipsyncPlan(path, still, float(fps), audio, num_mel, starts, coords, (width, height), settings)


def iter_lipsync(plan: LipsyncPlan, checkpoint: str | os.PathLike | Wav2Lip = "wav2lip-gan",
                 batch_size: int = DEFAULT_BATCH_SIZE,
                 blend: float = 0.0, device: str = "auto", precision: str = "fp32",
                 progress: bool | None = None, compile: bool | str = False) -> Iterator[np.ndarray]:
    """Yield the lip-synced frames of ``plan`` as uint8 H x W x 3 RGB, in order, one batch in memory at a time.

    ``batch_size``: frames per network call (official 128; 32 is faster on CPU). ``blend``: 0 is the official
    hard paste of the whole box; a value in (0, 0.5] feathers the border over that fraction of the box side.
    ``precision``: ``"fp32"`` (equal to the official network within float rounding), ``"bf16"`` (autocast:
    faster on CPUs with bf16 instructions and on GPUs, pixels may differ by a few levels) or ``"fp16"`` (autocast,
    for a GPU: 8 times finer rounding than bf16 at the same speed; see ``InferenceWav2Lip``). ``compile``:
    ``torch.compile`` the network (CUDA graphs on a GPU; see ``InferenceWav2Lip``), off by default.
    """
    from tqdm.auto import tqdm

    from facesynth.media import read_image

    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if not 0 <= blend <= 0.5:
        raise ConfigError(f"blend must be in [0, 0.5], got {blend}")
    net = InferenceWav2Lip(checkpoint, device=device, precision=precision, compile=compile)
    n_src = len(plan.coords)
    if plan.still:
        image = read_image(plan.face)
        frames = itertools.repeat(image)
        still_crop = _crop96(image, plan.coords[0])
    else:
        frames = _looped_frames(plan.face, n_src)
    windows = MelWindows(plan.audio)
    disable = None if progress is None else not progress
    with tqdm(total=plan.num_frames, desc="lipsync", unit="frame", disable=disable) as bar:
        for first in range(0, plan.num_frames, batch_size):
            idx = range(first, min(first + batch_size, plan.num_frames))
            batch = [next(frames) for _ in idx]
            coords = [plan.coords[i % n_src] for i in idx]
            crops = [still_crop] * len(batch) if plan.still else [_crop96(f, c) for f, c in zip(batch, coords)]
            pred = net(windows.take(plan.starts[first:first + len(batch)]), face_batch(crops))
            for frame, c, p in zip(batch, coords, pred):
                yield paste_prediction(frame, p, c, blend)
            bar.update(len(batch))


class InferenceWav2Lip:
    """A Wav2Lip generator prepared for inference: BatchNorm folded, eval, no autograd; channels-last on a GPU
    and in half precision, NCHW in float32 on a CPU, where the large decoder stages run frame by frame on NNPACK,
    which takes NCHW (``Wav2Lip.decode``).

    Called with the official tensors (``mel (B,1,80,16)``, ``faces (B,6,96,96)`` BGR) → ``(B,3,96,96)`` float32
    on the CPU. ``checkpoint`` is anything ``load_wav2lip`` takes, or a ``Wav2Lip`` module (not modified).
    ``precision``: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast; fp16 rounds 8 times finer than bf16, for a GPU:
    a CPU has no fast fp16 kernels). Where fp16 overflows (a non-finite output) a warning says so and that batch
    and the rest run in bf16 on GPUs with bf16, else in fp32.

    ``compile`` (off by default): the network through ``torch.compile`` (``gpu.compile_mode``: True is
    ``"reduce-overhead"`` on a GPU, CUDA graphs: its 96x96 layers are short, so launching them one by one costs a
    large part of the time there). Each call is padded to the largest batch seen so far (one shape to compile;
    a larger batch compiles again); the first call pays the compilation. Meant for a GPU: on a CPU it gives up
    the NNPACK frame-by-frame decoder.
    """

    def __init__(self, checkpoint: str | os.PathLike | Wav2Lip = "wav2lip-gan", device: str = "auto",
                 precision: str = "fp32", compile: bool | str = False):
        from facesynth.gpu import pick_device
        from facesynth.lipsync.checkpoint import load_wav2lip

        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
        self.device = pick_device(device)
        self.compile_mode = compile_mode(compile, self.device)
        self._compiled_batch = 0
        if self.compile_mode is not None and self.device.type == "cpu":
            warnings.warn("compile on a CPU runs the decoder batched on oneDNN instead of frame by frame on NNPACK: "
                          "slower than the default; it is meant for a GPU", stacklevel=2)
        if precision == "fp16" and self.device.type == "cpu":
            warnings.warn("fp16 on a CPU has no fast kernels (about 10 times slower than fp32): use precision='bf16' "
                          "or 'fp32' there", stacklevel=2)
        net = checkpoint if isinstance(checkpoint, Wav2Lip) else load_wav2lip(checkpoint, device="cpu")
        self.net = fuse_batchnorm(net).to(self.device)
        self._set_precision(precision)
        # the logits before the final sigmoid: an fp16 overflow there (+-inf) would pass as a pixel of 0 or 1
        self.net.output_block[-2].register_forward_hook(
            lambda module, args, out: out.masked_fill(out.isinf(), float("nan")) if out.dtype == torch.float16
            else None)

    def _set_precision(self, precision: str) -> None:
        self.precision = precision
        self.memory_format = (torch.contiguous_format if self.device.type == "cpu" and precision == "fp32"
                              else torch.channels_last)
        self.net.to(memory_format=self.memory_format)

    def _run(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        faces = faces.contiguous(memory_format=self.memory_format)
        dtype = HALF_PRECISIONS.get(self.precision)
        with torch.inference_mode(), cudnn_autotune(self.device), \
                torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            if self.compile_mode is None:
                return self.net(mel, faces).float().cpu()
            b = faces.shape[0]
            self._compiled_batch = size = max(self._compiled_batch, b)
            out = call_compiled(_forward, self.compile_mode, self.net, pad_batch(mel, size),
                                pad_batch(faces, size).contiguous(memory_format=self.memory_format))
            return out[:b].to("cpu", torch.float32, copy=True)     # a copy: a CUDA graph reuses its output

    def __call__(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        mel, faces = mel.to(self.device), faces.to(self.device)
        out = self._run(mel, faces)
        if self.precision == "fp16" and not bool(torch.isfinite(out).all()):
            fallback = precision_name(fp16_fallback(self.device))
            warnings.warn(f"fp16 overflowed in Wav2Lip (non-finite output): this batch and the rest run in {fallback}",
                          stacklevel=2)
            self._set_precision(fallback)
            out = self._run(mel, faces)
        return out


def _forward(net: Wav2Lip, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """``net(mel, faces)``: the function ``torch.compile`` compiles for ``InferenceWav2Lip``."""
    return net(mel, faces)


def pad_box(detection: Sequence[float], pads: Sequence[int], frame_size: tuple[int, int]) -> list[int]:
    """The official crop box of one detection: ``(x1, y1, x2, y2)`` truncated to ints (clipped at 0 first, as the
    official S3FD wrapper does), grown by ``pads`` (top, bottom, left, right) and clipped to the frame."""
    width, height = frame_size
    x1, y1, x2, y2 = (int(max(0.0, float(v))) for v in detection)
    top, bottom, left, right = pads
    return [max(0, x1 - left), max(0, y1 - top), min(width, x2 + right), min(height, y2 + bottom)]


def smooth_boxes(boxes: np.ndarray, window: int = SMOOTH_WINDOW) -> np.ndarray:
    """The official temporal box smoothing (``get_smoothened_boxes``), quirks included.

    Row i becomes the mean of rows i..i+window-1, computed in place in order, so the tail rows (whose window is
    the last ``window`` rows) average boxes already smoothed; written back into the int array, so the mean is
    truncated; with fewer rows than ``window`` the window is the slice ``[n - window:]`` (a negative start).

    Shape: (N, 4) int → (N, 4) int64 (a new array).
    """
    out = np.array(boxes, dtype=np.int64)
    n = len(out)
    for i in range(n):
        rows = out[n - window:] if i + window > n else out[i:i + window]
        out[i] = np.mean(rows, axis=0)
    return out


def face_batch(crops_bgr: Sequence[np.ndarray]) -> torch.Tensor:
    """The network's face input from 96x96 BGR uint8 crops, as the official ``datagen`` builds it.

    Shape: B x (96, 96, 3) uint8 → (B, 6, 96, 96) float32: channels 0-2 the crop with rows 48..95 zeroed,
    channels 3-5 the crop, ``/255`` in float64.
    """
    img = np.asarray(crops_bgr)
    masked = img.copy()
    masked[:, FACE_SIZE // 2:] = 0
    x = np.concatenate((masked, img), axis=3) / 255.0
    return torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))


def paste_prediction(frame_rgb: np.ndarray, prediction_bgr: torch.Tensor, coords: Sequence[int],
                     blend: float = 0.0) -> np.ndarray:
    """Put one network output back into its frame: ``* 255`` truncated to uint8 and resized to the box by
    ``cv2.resize`` (official), then pasted over the whole box (``blend=0``) or feathered at its border.

    Shapes: frame (H, W, 3) uint8 RGB (not modified), prediction (3, 96, 96) BGR in [0, 1],
    coords (y1, y2, x1, x2) → new (H, W, 3) uint8 RGB.
    """
    import cv2

    y1, y2, x1, x2 = (int(v) for v in coords)
    p = (prediction_bgr.numpy().transpose(1, 2, 0) * 255.0).astype(np.uint8)
    p = cv2.resize(p, (x2 - x1, y2 - y1))[:, :, ::-1]
    out = frame_rgb.copy()
    if blend <= 0:
        out[y1:y2, x1:x2] = p
        return out
    h, w = y2 - y1, x2 - x1
    ramp = blend * max(h, w)
    dy = np.minimum(np.arange(h) + 0.5, h - np.arange(h) - 0.5)
    dx = np.minimum(np.arange(w) + 0.5, w - np.arange(w) - 0.5)
    alpha = np.clip(np.minimum(dy[:, None], dx[None, :]) / ramp, 0, 1)[..., None]
    region = out[y1:y2, x1:x2].astype(np.float64)
    out[y1:y2, x1:x2] = np.clip(region * (1 - alpha) + p * alpha + 0.5, 0, 255).astype(np.uint8)
    return out


def _crop96(frame_rgb: np.ndarray, coords: Sequence[int]) -> np.ndarray:
    import cv2

    y1, y2, x1, x2 = (int(v) for v in coords)
    return cv2.resize(np.ascontiguousarray(frame_rgb[y1:y2, x1:x2, ::-1]), (FACE_SIZE, FACE_SIZE))


def _detect(path: Path, still: bool, n_frames: int, detector, device: str, progress: bool | None) -> list:
    """Highest-score face box (x1, y1, x2, y2) of each of the first ``n_frames`` frames, streamed."""
    from tqdm.auto import tqdm

    from facesynth.extract.backends import create_backend
    from facesynth.media import iter_frames, read_image

    backend = create_backend(detector, device=device)
    frames = iter([read_image(path)]) if still else (f for _, f in itertools.islice(iter_frames(path), n_frames))
    boxes: list[np.ndarray] = []
    disable = None if progress is None else not progress
    with tqdm(total=None if still else n_frames, desc=f"detect ({backend.name})", unit="frame",
              disable=disable) as bar:
        while True:
            batch = list(itertools.islice(frames, max(1, backend.batch_size)))
            if not batch:
                break
            for faces in backend.detect(batch):
                if not faces:
                    raise NoFaceError(
                        f"{path}: no face found in frame {len(boxes)} (detector {backend.name}); every frame used "
                        f"needs a visible face: cut the video, try another detector, or give a fixed box")
                boxes.append(max(faces, key=lambda f: f.score).box)
            bar.update(len(batch))
    if not boxes:
        raise MediaError(f"{path}: no frame could be read")
    return boxes


def _count_frames(path: Path, limit: int) -> int:
    """Frames of the video, counted by decoding (streamed), up to ``limit``."""
    from facesynth.media import iter_frames

    return sum(1 for _ in itertools.islice(iter_frames(path), limit))


def _looped_frames(path: Path, n: int) -> Iterator[np.ndarray]:
    """Frames 0..n-1 of the video, again and again, decoding afresh each pass (nothing is kept)."""
    from facesynth.media import iter_frames

    while True:
        count = 0
        for _, frame in itertools.islice(iter_frames(path), n):
            count += 1
            yield frame
        if count == 0:
            raise MediaError(f"{path}: no frame could be decoded")


_PLAN_KEYS = {"detector", "pads", "smooth", "box", "device", "progress"}
_RUN_KEYS = {"batch_size", "blend", "device", "precision", "progress", "compile"}


def _plan_options(options: dict) -> dict:
    unknown = set(options) - _PLAN_KEYS - _RUN_KEYS
    if unknown:
        raise ConfigError(f"unknown lipsync option(s) {sorted(unknown)}; valid: {sorted(_PLAN_KEYS | _RUN_KEYS)}")
    return {k: v for k, v in options.items() if k in _PLAN_KEYS}


def _run_options(options: dict) -> dict:
    return {k: v for k, v in options.items() if k in _RUN_KEYS}

"""Preparing inputs for FOMM: square face crops of the source portrait and of the driving video, and the way back.

The released vox-256 weights were trained on VoxCeleb clips cropped by the official ``crop-video.py`` idea:
one box per face track (the union of the face boxes over time, enlarged), so the head moves inside a still
frame with some context around it. Animating works best when source and driving are framed the same way,
so both are cropped here with one rule, ``square_crop_box``, around a face box derived from the 68
landmarks. The driving video is read twice, both times streamed: a detection pass that keeps only
landmarks, then the crop pass that yields batches, so memory does not grow with the video's length.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from facesynth.errors import ConfigError, MediaError, NoFaceError
from facesynth.extract.align import smooth_landmarks
from facesynth.extract.backends import create_backend
from facesynth.extract.pipeline import batched, detect_faces, sources_of
from facesynth.media import has_audio, iter_frames, probe, read_image, to_image, to_tensor
from facesynth.provenance import VideoWriter

__all__ = ["DEFAULT_MARGIN", "FaceCrop", "DrivingClip", "face_box", "square_crop_box", "crop_and_resize",
           "prepare_source", "prepare_driving", "paste_back", "write_animation"]

# Margin on each side, as a fraction of the face box's longer side (hairline to chin, ear to ear; see
# ``face_box``). 0.4 makes the square 1.8 face heights wide: the face fills a little over half the crop,
# with the top of the head, the neck and the start of the shoulders visible, as in VoxCeleb's 256×256
# crops. The official crop-video.py adds only 10% per side, but to a union of S3FD boxes over a moving head
# (and VoxCeleb's own boxes are loose), which ends up about this wide; a still portrait needs the margin
# given explicitly to get there.
DEFAULT_MARGIN = 0.4
# The 68 points stop at the eyebrows; the forehead up to the hairline adds about a third of the
# brow-to-chin height, and a head-centred crop must include it.
FOREHEAD = 0.3


@dataclass(frozen=True)
class FaceCrop:
    """Where a square crop came from: ``box`` (x0, y0, x1, y1; x1, y1 exclusive) in frame pixels,
    ``frame_size`` (width, height) and ``size`` (the side of the resized crop). ``landmarks`` are the
    detected face's 68 points in crop pixels (``[68,2]``, source crops only)."""
    box: tuple[int, int, int, int]
    frame_size: tuple[int, int]
    size: int
    landmarks: np.ndarray | None = None

    @property
    def side(self) -> int:
        return self.box[2] - self.box[0]

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Frame pixels ``[...,2]`` → pixels of the resized crop."""
        return (np.asarray(points, np.float32) - np.array(self.box[:2], np.float32)) * (self.size / self.side)


@dataclass
class DrivingClip:
    """A driving video cropped with one fixed square ``box`` for all its frames.

    Iterating yields float ``[n,3,size,size]`` batches in [0,1] (``n = batch_size``, the last may be
    shorter), decoding the video afresh each time and holding one batch at a time. ``fps`` and
    ``has_audio`` are the video's; ``num_frames`` is the count read by the detection pass; ``face_boxes``
    holds, per frame, the detector's ``[4]`` box of the largest face (None where none was found).
    """
    path: Path
    box: tuple[int, int, int, int]
    frame_size: tuple[int, int]
    size: int
    fps: float
    has_audio: bool
    num_frames: int
    batch_size: int = 32
    face_boxes: list[np.ndarray | None] = field(default_factory=list, repr=False)

    @property
    def crop(self) -> FaceCrop:
        return FaceCrop(self.box, self.frame_size, self.size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        frames = (frame for _, frame in iter_frames(self.path))
        for batch in batched(frames, self.batch_size):
            yield crop_and_resize(batch, self.box, self.size)


def prepare_source(image: str | os.PathLike | np.ndarray, size: int = 256, detector: str = "auto",
                   margin: float = DEFAULT_MARGIN, device: str = "auto") -> tuple[torch.Tensor, FaceCrop]:
    """Detect the largest face of a portrait and crop a square around it, resized to ``size``.

    Args:
        image: an image file, or uint8 ``H×W×3`` RGB pixels.
        size: side of the output (256 for the vox-256 weights).
        detector: ``"auto"``, ``"fan"`` or ``"dlib"`` (see ``facesynth.extract``).
        margin: context on each side, as a fraction of the face size (see ``DEFAULT_MARGIN``).
        device: where the detector runs; the tensor is returned on the CPU.

    Returns:
        ``(tensor [1,3,size,size] in [0,1], FaceCrop)``; the crop's ``landmarks`` are in output pixels.

    Raises:
        NoFaceError: no face found. ConfigError: invalid option. MediaError: unreadable image.

    Example:
        >>> source, crop = prepare_source("mona_lisa.jpg", detector="dlib")   # doctest: +SKIP
    """
    _check_options(size, margin)
    if isinstance(image, np.ndarray):
        pixels, name = image, "the image"
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ConfigError(f"prepare_source expects uint8 H×W×3 RGB pixels, got {pixels.dtype} {pixels.shape}")
    else:
        pixels, name = read_image(image), str(image)
    backend = create_backend(detector, device=device)
    faces = backend.detect([pixels])[0]
    if not faces:
        raise NoFaceError(f"no face found in {name} (detector {backend.name}); use a portrait where the face is "
                          f"visible, roughly frontal and at least ~40 px wide, or try another detector")
    face = max(faces, key=lambda f: f.area)
    h, w = pixels.shape[:2]
    box = square_crop_box(face.landmarks, (w, h), margin)
    crop = FaceCrop(box, (w, h), size)
    return crop_and_resize([pixels], box, size), replace(crop, landmarks=crop.to_crop(face.landmarks))


def prepare_driving(video: str | os.PathLike, size: int = 256, detector: str = "auto",
                    margin: float = DEFAULT_MARGIN, smooth: int = 5, batch_size: int = 32, device: str = "auto",
                    progress: bool | None = None) -> DrivingClip:
    """One stable square crop for a whole driving video, as the official crop-video idea: the union of the
    face boxes over the clip, enlarged by ``margin`` and made square.

    A streaming detection pass finds the largest face of every frame; landmarks are smoothed over ``smooth``
    frames (odd, 1 = off) so that one jittery detection does not widen the box. Frames without a face are
    left out of the union. A clip with a scene cut gets the union of both shots' faces: the crop then holds
    both places, with smaller faces; cut the video first to keep the framing tight.

    Returns:
        A ``DrivingClip``: iterate it for ``[n,3,size,size]`` batches (lazy, re-iterable); ``box``, ``fps``,
        ``has_audio`` tell where the crop is and what to write the result with.

    Raises:
        NoFaceError: no face in any frame. ConfigError: invalid option. MediaError: unreadable video.

    Example:
        >>> clip = prepare_driving("driving.mp4", detector="dlib")                   # doctest: +SKIP
        >>> next(iter(clip)).shape                                                     # doctest: +SKIP
        torch.Size([32, 3, 256, 256])
        >>> write_animation(frames, "out.mp4", clip.fps, audio_from=clip.path)        # doctest: +SKIP
    """
    _check_options(size, margin)
    if not isinstance(smooth, int) or smooth < 1 or smooth % 2 == 0:
        raise ConfigError(f"smooth must be an odd window ≥ 1 (1 = off), got {smooth!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    sources = sources_of(video)
    if len(sources) != 1 or sources[0].kind != "video":
        raise MediaError(f"{video}: the driving input must be one video file")
    info = probe(sources[0].path)
    backend = create_backend(detector, device=device)
    detections = detect_faces(sources, backend, progress=progress)
    track = smooth_landmarks([d[0].landmarks if d else None for d in detections], smooth)
    boxes = [face_box(lm) for lm in track if lm is not None]
    if not boxes:
        raise NoFaceError(f"no face found in any of the {len(detections)} frames of {video} (detector "
                          f"{backend.name}); the driving video needs a visible face of at least ~40 px")
    stacked = np.stack(boxes)
    union = np.concatenate([stacked[:, :2].min(0), stacked[:, 2:].max(0)])
    box = square_crop_box(union, (info.width, info.height), margin)
    return DrivingClip(path=sources[0].path, box=box, frame_size=(info.width, info.height), size=size,
                       fps=info.fps, has_audio=info.has_audio, num_frames=len(detections), batch_size=batch_size,
                       face_boxes=[d[0].box if d else None for d in detections])


def face_box(landmarks: np.ndarray) -> np.ndarray:
    """The head's box from 68 landmarks ``[68,2]``: their extent, raised to the hairline → ``[4]`` float32."""
    lm = np.asarray(landmarks, np.float32)
    x0, y0 = lm.min(0)
    x1, y1 = lm.max(0)
    return np.array([x0, y0 - FOREHEAD * (y1 - y0), x1, y1], np.float32)


def square_crop_box(landmarks_or_box: np.ndarray | Sequence[float], frame_size: tuple[int, int],
                    margin: float = DEFAULT_MARGIN) -> tuple[int, int, int, int]:
    """A square around a face, with ``margin`` of context on each side, inside the frame.

    Args:
        landmarks_or_box: 68 landmarks ``[68,2]`` (turned into a head box by ``face_box``) or a box
            ``[4]`` (x0, y0, x1, y1) in frame pixels.
        frame_size: (width, height) of the frame.
        margin: added on each side, as a fraction of the box's longer side.

    Returns:
        Integer ``(x0, y0, x1, y1)``, ``x1 - x0 == y1 - y0``, x1/y1 exclusive. The square is centred on the
        face and then shifted to lie inside the frame; when it would be larger than the frame's shorter side
        it is shrunk to that side. Never padding means no invented pixels for the model to animate, at
        the price of a tighter framing for faces that fill the picture.
    """
    if margin < 0:
        raise ConfigError(f"margin must be ≥ 0, got {margin}")
    a = np.asarray(landmarks_or_box, np.float64)
    if a.ndim == 2 and a.shape[1] == 2:
        a = face_box(a).astype(np.float64)
    if a.shape != (4,) or not np.all(np.isfinite(a)) or a[2] < a[0] or a[3] < a[1]:
        raise ConfigError(f"expected 68 landmarks [68,2] or a box [x0,y0,x1,y1], got {np.asarray(landmarks_or_box)!r}")
    w, h = int(frame_size[0]), int(frame_size[1])
    side = max(a[2] - a[0], a[3] - a[1]) * (1 + 2 * margin)
    side = int(min(max(round(side), 2), w, h))
    cx, cy = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    return x0, y0, x0 + side, y0 + side


def crop_and_resize(frames: Sequence[np.ndarray], box: Sequence[int], size: int) -> torch.Tensor:
    """Cut ``box`` out of uint8 ``H×W×3`` frames and resize → float ``[n,3,size,size]`` in [0,1].

    Bilinear with antialiasing, like the official demo's ``skimage.transform.resize`` of whole frames.
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    t = to_tensor([np.asarray(f)[y0:y1, x0:x1] for f in frames])
    if t.shape[-1] != size or t.shape[-2] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t.clamp_(0, 1)


def paste_back(frame: np.ndarray, face: np.ndarray | torch.Tensor, box: Sequence[int],
               feather: float = 0.1) -> np.ndarray:
    """Blend an animated square back into its full frame.

    Args:
        frame: uint8 ``H×W×3`` RGB, the full driving (or source) frame; not modified.
        face: the animated crop, uint8 ``s×s×3`` or float ``[3,s,s]`` / ``[1,3,s,s]`` in [0,1].
        box: the crop's ``(x0, y0, x1, y1)`` in frame pixels (``FaceCrop.box``, ``DrivingClip.box``).
        feather: width of the blend ramp at the box's border, as a fraction of the box side (0 = hard edge,
            at most 0.5).

    Returns:
        A new uint8 ``H×W×3`` frame; pixels outside the box are the input's.
    """
    if not 0 <= feather <= 0.5:
        raise ConfigError(f"feather must be in [0, 0.5], got {feather}")
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ConfigError(f"paste_back expects a uint8 H×W×3 frame, got {frame.dtype} {frame.shape}")
    x0, y0, x1, y1 = (int(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    if bw <= 0 or bh <= 0:
        raise ConfigError(f"paste_back needs a non-empty box, got {tuple(box)}")
    t = to_tensor(face) if isinstance(face, np.ndarray) else face.detach().float().cpu()
    if t.dim() == 3:
        t = t[None]
    resized = F.interpolate(t[:1], size=(bh, bw), mode="bilinear", align_corners=False, antialias=True)
    patch = resized[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255.0

    # distance of each pixel centre from the box's nearest edge, normalised by the ramp width
    ramp = feather * max(bw, bh)
    dx = np.minimum(np.arange(bw) + 0.5, bw - np.arange(bw) - 0.5)
    dy = np.minimum(np.arange(bh) + 0.5, bh - np.arange(bh) - 0.5)
    alpha = np.minimum(dy[:, None], dx[None, :])
    alpha = np.clip(alpha / ramp, 0, 1) if ramp > 0 else np.ones_like(alpha)

    # only the part of the box that lies inside the frame
    h, w = frame.shape[:2]
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    out = frame.copy()
    if fx0 >= fx1 or fy0 >= fy1:
        return out
    sl = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
    a = alpha[sl][..., None]
    region = out[fy0:fy1, fx0:fx1].astype(np.float64)
    out[fy0:fy1, fx0:fx1] = np.clip(region * (1 - a) + patch[sl] * a + 0.5, 0, 255).astype(np.uint8)
    return out


def write_animation(frames: Iterable[np.ndarray | torch.Tensor], out_path: str | os.PathLike, fps: float,
                    audio_from: str | os.PathLike | None = None, provenance=None) -> Path:
    """Write animated frames as MP4, with the driving video's sound when it has any.

    ``frames`` yields uint8 ``H×W×3`` images, float ``[3,H,W]`` tensors, or float ``[n,3,H,W]`` batches (as
    ``animate`` produces them), consumed as they come. ``audio_from`` (usually the driving video) is muxed
    in only when it has an audio track; a silent driving video gives a silent result without a warning.
    ``provenance``: a ``facesynth.provenance.Provenance`` to sign into the video, or None for a plain one.
    """
    audio = audio_from if audio_from is not None and has_audio(audio_from) else None
    with VideoWriter(out_path, fps, audio=audio, provenance=provenance) as writer:
        for item in frames:
            if isinstance(item, torch.Tensor) and item.dim() == 4:
                for image in to_image(item):
                    writer.write(image)
            else:
                writer.write(item)
    return Path(out_path)


def _check_options(size: int, margin: float) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 16:
        raise ConfigError(f"size must be an integer ≥ 16, got {size!r}")
    if not isinstance(margin, (int, float)) or not np.isfinite(margin) or margin < 0:
        raise ConfigError(f"margin must be a number ≥ 0, got {margin!r}")

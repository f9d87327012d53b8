"""``convert_video`` / ``convert_image``: replace the faces of a video or a photo using a trained swap model.

Two streaming passes, as in extraction. Pass 1 detects the largest face of every frame and keeps only its
landmarks, which are then smoothed over time so the pasted face does not jitter. Pass 2 decodes again and,
for every frame with a face: aligns the crop exactly as the training faces were aligned, paints it through
the other person's decoder (crops of up to ``batch_size`` frames at a time), matches the painted face's
colours to the original, builds a feathered paste mask, warps face and mask back into the frame and blends.
Frames without a face are written unchanged. Memory holds at most ``batch_size`` frames however long the
video.

Both write the result with provenance (``facesynth.provenance``) unless ``provenance=False``: a C2PA manifest saying
``c2pa.edited`` by a trained algorithm, with the input's and the checkpoint's SHA-256 and the conversion settings.

Colour transfers are plain functions on float ``H×W×3`` arrays in [0,1]: ``rct``, ``lct``, ``hist_match``
(and ``color_transfer(method, …)`` to pick one by name, ``"none"`` included).
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from facesynth.errors import CheckpointError, ConfigError, MediaError
from facesynth.extract.align import FACE_TYPES, alignment_matrix, invert_affine, smooth_landmarks, transform_points, \
    warp_face
from facesynth.extract.backends import FaceBackend, available_backends, create_backend
from facesynth.extract.faceset import FaceSet
from facesynth.extract.masks import make_mask
from facesynth.extract.pipeline import batched, detect_faces, sources_of
from facesynth.gpu import autocast
from facesynth.media import has_audio, is_image, iter_frames, probe, read_image, to_tensor
from facesynth.swap.model import SwapModel
from facesynth.swap.train import CONFIG_FILE, load_swap_model

__all__ = ["convert_video", "convert_image", "ConvertWarning", "COLOR_TRANSFERS", "BLENDS", "color_transfer", "rct",
           "lct", "hist_match"]

BLENDS = ("alpha", "seamless")
DIRECTIONS = ("a2b", "b2a")


class ConvertWarning(UserWarning):
    """Conversion went on but not everywhere as asked (no face found, a blend fell back, settings guessed)."""


def convert_video(input: str | os.PathLike, output: str | os.PathLike, model: str | os.PathLike | SwapModel,
                  direction: str = "a2b", *, detector: str | FaceBackend = "auto", color_transfer: str = "rct",
                  blend: str = "alpha", erode: float = 0.05, blur: float = 0.1, sharpen: float = 0.0, smooth: int = 5,
                  batch_size: int = 16, face_type: str | None = None, device: str = "auto",
                  progress: bool | None = None, provenance: bool | None = None) -> Path:
    """Swap the largest face of every frame of ``input`` and write the result to ``output`` (H.264 MP4).

    The output keeps the input's size, frame rate, frame count and audio track. Frames without a face are
    passed through unchanged. A video with no face at all is still written (every frame unchanged) with a
    ConvertWarning: a long batch conversion should not fail at its end for it.

    Args:
        input: video file. output: MP4 to write (appears only when complete).
        model: a SwapTrainer workdir (its ``checkpoint.pt`` is used), or a loaded SwapModel.
        direction: ``"a2b"`` replaces person A's faces by person B (decoded through B); ``"b2a"`` the reverse.
        detector: ``"auto"`` uses the detector the input person's training faces were extracted with when it
            can run here, else the best available; or ``"dlib"``, ``"fan"``, or a FaceBackend instance.
        color_transfer: ``"rct"``, ``"lct"``, ``"hist"`` or ``"none"`` (see ``COLOR_TRANSFERS``).
        blend: ``"alpha"`` (feathered composite) or ``"seamless"`` (Poisson cloning, then the same feather).
        erode: shrink the paste mask by this fraction of the face size (negative grows it).
        blur: feather the mask edge with a Gaussian whose kernel spans this fraction of the face size.
        sharpen: unsharp-mask amount applied to the painted face (0 = off).
        smooth: odd window (frames) of temporal landmark smoothing, 1 = off.
        batch_size: faces painted per network call (and the most frames held in memory).
        face_type: crop type of the training faces; None reads it from the workdir's face sets (``"full"``
            for a SwapModel given directly).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``… for the network (a SwapModel stays where it is) and detector.
        provenance: sign a C2PA manifest into the output (``c2pa.edited``, the input's and the checkpoint's SHA-256,
            these settings), mark its frames and write ``<output>.provenance.json``; on by default (None: unless
            ``$FACESYNTH_PROVENANCE=0``), False for a plain file.

    Returns:
        ``output`` as a Path.

    Raises:
        CheckpointError: no model in the workdir. ConfigError: invalid option. MediaError: unreadable input.
    """
    from tqdm.auto import tqdm

    if not isinstance(smooth, int) or smooth < 1 or smooth % 2 == 0:
        raise ConfigError(f"smooth must be an odd integer ≥ 1 (1 = off), got {smooth!r}")
    options = _Options.checked(direction, color_transfer, blend, erode, blur, sharpen, batch_size)
    input, output = Path(input), Path(output)
    sources = sources_of(input)
    if len(sources) != 1 or sources[0].kind != "video":
        raise ConfigError(f"{input}: not a video; use convert_image for photos")
    if output.resolve() == input.resolve():
        raise ConfigError(f"{output}: the output would overwrite the input; choose another file name")
    swapper = _Swapper.create(model, options, face_type, device)
    backend = create_backend(swapper.detector(detector), device=device)
    info = probe(input)

    detections = detect_faces(sources, backend, progress=progress)
    track = smooth_landmarks([d[0].landmarks if d else None for d in detections], smooth)
    n_faces = sum(lm is not None for lm in track)
    if n_faces == 0:
        warnings.warn(f"{input}: no face found in {len(track)} frames (detector {backend.name}); writing the "
                      f"video unchanged", ConvertWarning, stacklevel=2)

    from facesynth import provenance as pv

    prov = _provenance(provenance, input, swapper, backend, smooth=smooth)
    disable = None if progress is None else not progress
    with pv.VideoWriter(output, info.fps, audio=input if has_audio(input) else None, provenance=prov) as writer, \
            tqdm(total=len(track), desc="convert", unit="frame", disable=disable) as bar:
        for batch in batched(iter_frames(input), options.batch_size):
            landmarks = [track[i] if i < len(track) else None for i, _ in batch]
            for frame in swapper.convert([frame for _, frame in batch], landmarks):
                writer.write(frame)
            bar.update(len(batch))
    return output


def convert_image(input: str | os.PathLike, output: str | os.PathLike, model: str | os.PathLike | SwapModel,
                  direction: str = "a2b", *, detector: str | FaceBackend = "auto", color_transfer: str = "rct",
                  blend: str = "alpha", erode: float = 0.05, blur: float = 0.1, sharpen: float = 0.0,
                  batch_size: int = 16, face_type: str | None = None, device: str = "auto",
                  progress: bool | None = None, provenance: bool | None = None) -> Path:
    """Swap the largest face of a photo; ``output`` has the input's size (use PNG to keep it lossless).

    Options as ``convert_video`` (``provenance`` too: PNG and JPEG carry the manifest). An image without a face is
    written unchanged, with a ConvertWarning.
    """
    from facesynth import provenance as pv

    options = _Options.checked(direction, color_transfer, blend, erode, blur, sharpen, batch_size)
    input, output = Path(input), Path(output)
    if not is_image(output):
        raise ConfigError(f"{output}: not an image file name; end it in .png (lossless) or .jpg")
    sources = sources_of(input)
    if len(sources) != 1 or sources[0].kind != "image":
        raise ConfigError(f"{input}: not a single image; use convert_video for videos")
    swapper = _Swapper.create(model, options, face_type, device)
    backend = create_backend(swapper.detector(detector), device=device)
    faces = detect_faces(sources, backend, progress=progress)[0]
    if not faces:
        warnings.warn(f"{input}: no face found (detector {backend.name}); writing the image unchanged",
                      ConvertWarning, stacklevel=2)
    image = read_image(input)
    [converted] = swapper.convert([image], [faces[0].landmarks if faces else None])
    return pv.write_image(output, converted, _provenance(provenance, input, swapper, backend))


def _provenance(provenance: bool | None, input: Path, swapper: "_Swapper", backend: FaceBackend, **extra):
    """The record of a conversion (an edit of the input), or None when provenance is off."""
    from facesynth import provenance as pv

    if not pv.enabled(provenance):
        return None
    weights, noted = pv.model_weights(swapper.model)
    opt, config = swapper.options, swapper.model.config
    return pv.Provenance("swap", inputs=[input], weights=weights, edited=True, parameters={
        "direction": opt.direction, "preset": config.preset_name, "architecture": config.architecture,
        "resolution": swapper.resolution, "iterations": getattr(swapper.model, "trained_iterations", None),
        "face_type": swapper.face_type, "detector": backend.name, "color_transfer": opt.color_transfer,
        "blend": opt.blend, "erode": opt.erode, "blur": opt.blur, "sharpen": opt.sharpen, **extra, **noted})


# --- colour transfer ------------------------------------------------------------------------------------------

def rct(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer: give ``source`` the per-channel mean and std of ``target`` in L*a*b*.

    Reinhard et al. (2001), "Color transfer between images". Statistics are taken over the pixels where
    ``mask > 0.5`` in each image; the mapping is applied to every pixel of ``source``.

    Args:
        source: float ``H×W×3`` RGB in [0,1], the image to recolour. target: float ``H×W×3`` RGB in [0,1],
            the image whose colours to take. mask: float ``H×W`` (or ``H×W×1``) in [0,1].
    Returns:
        float32 ``H×W×3`` RGB in [0,1] (clipped). With no pixel inside the mask, ``source`` unchanged.
    """
    src, tgt, inside = _check_transfer(source, target, mask)
    if not inside.any():
        return src
    src_lab = cv2.cvtColor(src, cv2.COLOR_RGB2Lab)
    tgt_lab = cv2.cvtColor(tgt, cv2.COLOR_RGB2Lab)
    s, t = src_lab[inside], tgt_lab[inside]
    scale = t.std(0) / np.maximum(s.std(0), 1e-3)     # a flat channel (std ≈ 0) is shifted, not blown up
    out_lab = (src_lab - s.mean(0)) * scale + t.mean(0)
    return np.clip(cv2.cvtColor(out_lab.astype(np.float32), cv2.COLOR_Lab2RGB), 0.0, 1.0)


def lct(source: np.ndarray, target: np.ndarray, mask: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Linear colour transfer: map ``source``'s RGB mean and covariance onto ``target``'s (inside the mask).

    Uses the Monge–Kantorovich linear map (Pitié & Kokaram 2007, "The linear Monge-Kantorovitch linear colour
    mapping"), ``A = Cs^-½ (Cs^½ Ct Cs^½)^½ Cs^-½``: of all linear maps with ``A Cs Aᵀ = Ct`` it moves colours
    the least, so it does not rotate hues as the plain ``Ct^½ Cs^-½`` can. ``eps`` regularises both
    covariances (a face's colours are nearly collinear).

    Shapes and ranges as ``rct``; returns float32 ``H×W×3`` in [0,1].
    """
    src, tgt, inside = _check_transfer(source, target, mask)
    if not inside.any():
        return src
    s, t = src[inside].astype(np.float64), tgt[inside].astype(np.float64)
    mu_s, mu_t = s.mean(0), t.mean(0)
    cov_s = np.cov(s, rowvar=False, bias=True) + eps * np.eye(3)
    cov_t = np.cov(t, rowvar=False, bias=True) + eps * np.eye(3)
    half_s = _sqrtm(cov_s)
    inv_half_s = np.linalg.inv(half_s)
    a = inv_half_s @ _sqrtm(half_s @ cov_t @ half_s) @ inv_half_s
    out = (src.reshape(-1, 3) - mu_s) @ a.T + mu_t
    return np.clip(out.reshape(src.shape), 0.0, 1.0).astype(np.float32)


def hist_match(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-channel histogram matching: each RGB channel of ``source`` takes ``target``'s distribution.

    A source value at quantile ``q`` of the source's masked pixels becomes the target's masked quantile ``q``
    (piecewise-linear between observed values). Shapes and ranges as ``rct``.
    """
    src, tgt, inside = _check_transfer(source, target, mask)
    if not inside.any():
        return src
    out = np.empty_like(src)
    for c in range(3):
        s_values, s_counts = np.unique(src[..., c][inside], return_counts=True)
        t_values, t_counts = np.unique(tgt[..., c][inside], return_counts=True)
        s_quantiles = np.cumsum(s_counts) / s_counts.sum()
        t_quantiles = np.cumsum(t_counts) / t_counts.sum()
        mapped = np.interp(s_quantiles, t_quantiles, t_values)
        out[..., c] = np.interp(src[..., c], s_values, mapped)
    return out


def _no_transfer(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return _check_transfer(source, target, mask)[0]


COLOR_TRANSFERS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "rct": rct, "lct": lct, "hist": hist_match, "none": _no_transfer,
}


def color_transfer(method: str, source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``COLOR_TRANSFERS[method](source, target, mask)``; ``"none"`` returns ``source`` (as float32) unchanged."""
    if method not in COLOR_TRANSFERS:
        raise ConfigError(f"unknown color_transfer {method!r}; choose one of {', '.join(COLOR_TRANSFERS)}")
    return COLOR_TRANSFERS[method](source, target, mask)


def _check_transfer(source: np.ndarray, target: np.ndarray, mask: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = np.asarray(source, dtype=np.float32)
    tgt = np.asarray(target, dtype=np.float32)
    m = np.asarray(mask, dtype=np.float32)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if src.ndim != 3 or src.shape[2] != 3 or tgt.shape != src.shape or m.shape != src.shape[:2]:
        raise ConfigError(f"colour transfer needs source and target H×W×3 and a mask H×W of the same size, got "
                          f"{src.shape}, {tgt.shape} and {np.shape(mask)}")
    return src, tgt, m > 0.5


def _sqrtm(c: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


# --- conversion of frames -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Options:
    direction: str
    color_transfer: str
    blend: str
    erode: float
    blur: float
    sharpen: float
    batch_size: int

    @classmethod
    def checked(cls, direction: str, color_transfer: str, blend: str, erode: float, blur: float, sharpen: float,
                batch_size: int) -> "_Options":
        if direction not in DIRECTIONS:
            raise ConfigError(f"direction must be 'a2b' (A's faces become B) or 'b2a', got {direction!r}")
        if color_transfer not in COLOR_TRANSFERS:
            raise ConfigError(f"unknown color_transfer {color_transfer!r}; choose one of {', '.join(COLOR_TRANSFERS)}")
        if blend not in BLENDS:
            raise ConfigError(f"unknown blend {blend!r}; choose one of {', '.join(BLENDS)}")
        if not -0.5 <= erode <= 0.5:
            raise ConfigError(f"erode is a fraction of the face size in [-0.5, 0.5], got {erode}")
        if not 0 <= blur <= 1:
            raise ConfigError(f"blur is a fraction of the face size in [0, 1], got {blur}")
        if sharpen < 0:
            raise ConfigError(f"sharpen must be ≥ 0 (0 = off), got {sharpen}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
        return cls(direction, color_transfer, blend, float(erode), float(blur), float(sharpen), batch_size)


class _Swapper:
    """Paints the faces of frames through the model and blends them back; the per-frame work of conversion.

    Crop geometry: faces are cut at the face set's extraction size and resized to the network's resolution
    with the interpolation ``FaceData`` uses in training, so the network sees crops sampled as its training
    faces were (cutting straight at a smaller resolution would alias where training area-averaged).
    """

    def __init__(self, model: SwapModel, options: _Options, face_type: str, crop_size: int,
                 trained_detector: str | None):
        self.model = model
        self.options = options
        self.face_type = face_type
        self.crop_size = crop_size
        self.resolution = model.resolution
        self.trained_detector = trained_detector
        self.device = next(model.parameters()).device
        self._warned_border = False

    @classmethod
    def create(cls, model: str | os.PathLike | SwapModel, options: _Options, face_type: str | None,
               device: str) -> "_Swapper":
        if face_type is not None and face_type not in FACE_TYPES:
            raise ConfigError(f"unknown face_type {face_type!r}; choose one of {', '.join(FACE_TYPES)}")
        if isinstance(model, SwapModel):
            return cls(model, options, face_type or "full", model.resolution, None)
        if not isinstance(model, (str, os.PathLike)):
            raise ConfigError(f"model must be a workdir path or a SwapModel, got {type(model).__name__}")
        workdir = Path(model)
        if not workdir.is_dir():
            raise CheckpointError(f"{workdir}: no such model folder; give the workdir a SwapTrainer trained in "
                                  f"(it holds checkpoint.pt and config.json)")
        net = load_swap_model(workdir, device=device)
        settings = _input_faceset_settings(workdir, options.direction)
        return cls(net, options, face_type or settings.get("face_type", "full"),
                   int(settings.get("size", net.resolution)), settings.get("detector"))

    def detector(self, asked: str | FaceBackend) -> str | FaceBackend:
        """``asked``, except that ``"auto"`` prefers the detector the training faces came from.

        When that is the one ``"auto"`` tries first anyway, ``"auto"`` is kept: it passes over a backend whose
        weights are empty or unreadable, with a warning, instead of failing on them.
        """
        available = available_backends() if asked == "auto" else []
        if self.trained_detector in available[1:]:
            return self.trained_detector
        return asked

    def convert(self, frames: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        """uint8 ``H×W×3`` frames and each one's ``[68,2]`` landmarks (None: no face) → the converted frames.

        A frame without landmarks is returned as is (the same array).
        """
        todo = [i for i, lm in enumerate(landmarks) if lm is not None]
        if not todo:
            return list(frames)
        r, s = self.resolution, self.crop_size
        crops, matrices, crop_landmarks = [], [], []
        for i in todo:
            matrix = alignment_matrix(landmarks[i], size=s, face_type=self.face_type)
            crop = warp_face(frames[i], matrix, s)
            if s != r:
                crop = cv2.resize(crop, (r, r), interpolation=cv2.INTER_AREA if s > r else cv2.INTER_CUBIC)
                matrix = _resized_matrix(matrix, r / s)
            crops.append(crop)
            matrices.append(matrix)
            crop_landmarks.append(transform_points(landmarks[i], matrix))
        painted, predicted_masks = self._paint(np.stack(crops))
        out = list(frames)
        for k, i in enumerate(todo):
            out[i] = self._blend_face(frames[i], crops[k], crop_landmarks[k], matrices[k], painted[k],
                                      None if predicted_masks is None else predicted_masks[k])
        return out

    def _paint(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 ``N×R×R×3`` crops → painted float32 ``N×R×R×3`` and masks ``N×R×R`` (or None) in [0,1]."""
        x = to_tensor(crops, self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), autocast(self.device):
                rgb, mask = self.model.swap(x, self.options.direction)
        finally:
            self.model.train(was_training)
        rgb = rgb.float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        return rgb, None if mask is None else mask.float().clamp(0, 1)[:, 0].cpu().numpy()

    def _blend_face(self, frame: np.ndarray, crop: np.ndarray, crop_landmarks: np.ndarray, matrix: np.ndarray,
                    face: np.ndarray, predicted_mask: np.ndarray | None) -> np.ndarray:
        opt = self.options
        # The landmark hull keeps the paste on the destination face however vague the network's mask still
        # is; the network's mask (soft product) cuts out what it learned is not face (hair, occluders).
        hull = make_mask("components", crop, crop_landmarks).astype(np.float32) / 255.0
        mask = hull if predicted_mask is None else hull * predicted_mask
        # colour statistics over the destination's face hull: stable even while the learned mask is poor
        face = color_transfer(opt.color_transfer, face, crop.astype(np.float32) / 255.0, hull)
        if opt.sharpen > 0:
            face = _unsharp(face, opt.sharpen, sigma=self.resolution / 64)
        face_size = float(np.ptp(crop_landmarks, axis=0).max())
        mask = _feather(mask, opt.erode * face_size, opt.blur * face_size)
        return self._paste(frame, face, mask, matrix)

    def _paste(self, frame: np.ndarray, face: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """Warp the crop-space face and mask back with the inverse of ``matrix`` and blend them into ``frame``.

        Only the crop's footprint in the frame is touched, so every pixel where the warped mask is 0 keeps its
        exact value.
        """
        h, w = frame.shape[:2]
        r = face.shape[0]
        inverse = invert_affine(matrix)
        corners = transform_points(np.array([[0, 0], [r, 0], [0, r], [r, r]], np.float64), inverse)
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, (w, h))
        if x1 <= x0 or y1 <= y0:
            return frame
        to_roi = inverse.copy()
        to_roi[:, 2] -= (x0, y0)
        size = (int(x1 - x0), int(y1 - y0))
        face_roi = cv2.warpAffine(face, to_roi, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(mask, to_roi, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=0)
        alpha = np.clip(alpha, 0.0, 1.0)[..., None]
        face_roi = np.clip(face_roi, 0.0, 1.0) * 255.0
        if self.options.blend == "seamless":
            face_roi = self._seamless(frame, face_roi, alpha[..., 0], (x0, y0))
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        out = frame.copy()
        out[y0:y1, x0:x1] = np.clip(np.rint(roi + alpha * (face_roi - roi)), 0, 255).astype(np.uint8)
        return out

    def _seamless(self, frame: np.ndarray, face_roi: np.ndarray, alpha: np.ndarray, origin: tuple[int, int]
                  ) -> np.ndarray:
        """Poisson-clone the face into the frame over the mask's support; returns the cloned ROI (float 0-255).

        The feathered alpha is applied afterwards by the caller, so the seam stays soft. OpenCV's
        seamlessClone needs the mask's bounding box strictly inside the frame: a face touching the frame
        border falls back to the alpha blend (warned once per conversion).
        """
        h, w = frame.shape[:2]
        x0, y0 = origin
        support = (alpha > 1 / 255).astype(np.uint8) * 255
        ys, xs = np.nonzero(support)
        if len(xs) == 0:
            return face_roi
        bx0, by0, bx1, by1 = xs.min() + x0, ys.min() + y0, xs.max() + x0, ys.max() + y0
        if bx0 < 2 or by0 < 2 or bx1 > w - 3 or by1 > h - 3:
            if not self._warned_border:
                warnings.warn("the face mask touches the frame border, where seamless cloning cannot work; those "
                              "frames are alpha-blended instead (said once per conversion)", ConvertWarning,
                              stacklevel=6)
                self._warned_border = True
            return face_roi
        rh, rw = support.shape
        src = frame.copy()
        src[y0:y0 + rh, x0:x0 + rw] = np.clip(np.rint(face_roi), 0, 255).astype(np.uint8)
        full_mask = np.zeros((h, w), np.uint8)
        full_mask[y0:y0 + rh, x0:x0 + rw] = support
        # seamlessClone centres the mask's bounding box on `center` (integer halves, as OpenCV computes them)
        bw, bh = bx1 - bx0 + 1, by1 - by0 + 1
        center = (int(bx0 + bw // 2), int(by0 + bh // 2))
        cloned = cv2.seamlessClone(src, np.ascontiguousarray(frame), full_mask, center, cv2.NORMAL_CLONE)
        return cloned[y0:y0 + rh, x0:x0 + rw].astype(np.float32)


def _input_faceset_settings(workdir: Path, direction: str) -> dict:
    """Extraction settings (face_type, size, detector) of the face set of the person in the input video.

    Missing or moved face sets are not fatal: conversion then assumes a ``full`` crop at the network's
    resolution and says so.
    """
    key = "faces_a" if direction == "a2b" else "faces_b"
    try:
        path = json.loads((workdir / CONFIG_FILE).read_text())[key]
        return dict(FaceSet.open(path).settings)
    except (OSError, KeyError, ValueError, MediaError) as e:
        warnings.warn(f"{workdir}: cannot read the extraction settings of the training faces ({e}); assuming "
                      f"face_type='full' at the network's resolution (pass face_type= if that is wrong)",
                      ConvertWarning, stacklevel=4)
        return {}


def _resized_matrix(matrix: np.ndarray, k: float) -> np.ndarray:
    """The frame → crop matrix after resizing the crop by ``k`` (cv2.resize maps pixel centres, hence ±0.5)."""
    out = matrix * k
    out[:, 2] = k * (matrix[:, 2] + 0.5) - 0.5
    return out


def _feather(mask: np.ndarray, erode_px: float, blur_px: float) -> np.ndarray:
    """Erode (or, negative, dilate) a float ``H×W`` mask by ``erode_px``, then blur with a ``blur_px`` kernel."""
    r = int(round(abs(erode_px)))
    if r > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        mask = cv2.erode(mask, kernel) if erode_px > 0 else cv2.dilate(mask, kernel)
    k = int(round(blur_px))
    if k > 1:
        k += 1 - k % 2          # Gaussian kernels have odd sides
        mask = cv2.GaussianBlur(mask, (k, k), 0)
    return mask


def _unsharp(face: np.ndarray, amount: float, sigma: float) -> np.ndarray:
    """Unsharp mask of a float ``H×W×3`` image in [0,1]: ``face + amount·(face − blur(face))``, clipped."""
    blurred = cv2.GaussianBlur(face, (0, 0), sigma)
    return np.clip(face + amount * (face - blurred), 0.0, 1.0)


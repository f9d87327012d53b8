"""Umeyama similarity alignment of 68 landmarks to a canonical face, and the crop of each face type.

Face types follow DeepFaceLab's idea: the same alignment, more or less of the surroundings kept.
``full`` (brows to chin), ``whole`` (adds the forehead and the sides of the face), ``head`` (the whole head
with hair).
"""
from __future__ import annotations

import cv2
import numpy as np

from facesynth.errors import ConfigError
from facesynth.extract.template import TEMPLATE_68

__all__ = ["umeyama", "FACE_TYPES", "alignment_matrix", "warp_face", "transform_points", "invert_affine",
           "MIRROR_68", "smooth_landmarks"]

# iBUG 300-W 68-point left/right permutation (a face mirrored horizontally has landmark i at MIRROR_68[i])
MIRROR_68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])

# face type → (half side of the crop in template units, upward shift of its centre in template units);
# the template's inner face (points 17-67) spans the unit square.
FACE_TYPES: dict[str, tuple[float, float]] = {
    "full": (0.70, -0.12),
    "whole": (0.85, 0.00),
    "head": (1.20, 0.20),
}
# brows, nose, eyes and the mouth corners: the rigid part of the face (the jaw line is the least reliable
# part of a 68-point fit and the lips move when talking); eyes weigh 3× so they stay put in the crop
# across head turns, as eye-anchored aligners (FFHQ) do.
ALIGN_POINTS = np.array(list(range(17, 48)) + [48, 54])
ALIGN_WEIGHTS = np.where((ALIGN_POINTS >= 36) & (ALIGN_POINTS < 48), 3.0, 1.0)


def umeyama(src: np.ndarray, dst: np.ndarray, estimate_scale: bool = True,
            weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation; never a reflection).

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point patterns",
    with optional per-point weights (weighted means and covariance).

    Args:
        src: ``[N, 2]`` points. dst: ``[N, 2]`` corresponding points. weights: ``[N]`` non-negative.
    Returns:
        ``[2, 3]`` float64 matrix ``M`` with ``dst ≈ src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ConfigError(f"umeyama needs two [N,2] point sets with N ≥ 2, got {src.shape} and {dst.shape}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    s_c, d_c = src - mu_s, dst - mu_d
    cov = (d_c * w[:, None]).T @ s_c
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:   # the best fit would mirror: flip the weakest axis instead
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var_s = w @ (s_c ** 2).sum(1)
    scale = (sig * d).sum() / var_s if estimate_scale and var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``[2,3]`` affine matrix to ``[N,2]`` points."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a ``[2,3]`` affine matrix (crop → source frame, for pasting a face back)."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def alignment_matrix(landmarks: np.ndarray, size: int = 256, face_type: str = "full") -> np.ndarray:
    """The ``[2,3]`` matrix mapping source-frame pixels to a ``size×size`` aligned crop of ``face_type``.

    ``landmarks``: ``[68,2]`` in source pixels. The crop puts the canonical face (``TEMPLATE_68``) at the
    same place for every face, so eye centres land on fixed crop pixels whatever the head pose in-plane.
    """
    if face_type not in FACE_TYPES:
        raise ConfigError(f"unknown face_type {face_type!r}; choose one of {', '.join(FACE_TYPES)}")
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ConfigError(f"alignment needs 68 landmarks of shape (68,2), got {lm.shape}")
    half, shift = FACE_TYPES[face_type]
    to_template = umeyama(lm[ALIGN_POINTS], TEMPLATE_68[ALIGN_POINTS], weights=ALIGN_WEIGHTS)
    # template units → crop pixels: the crop square is centred at (0.5, 0.5 - shift) with half side `half`
    k = size / (2 * half)
    to_crop = np.array([[k, 0, size / 2 - k * 0.5], [0, k, size / 2 - k * (0.5 - shift)]])
    return _compose(to_crop, to_template)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a ∘ b`` for ``[2,3]`` affine matrices."""
    a3 = np.vstack([a, [0, 0, 1]])
    b3 = np.vstack([b, [0, 0, 1]])
    return (a3 @ b3)[:2]


def warp_face(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Cut the aligned ``size×size`` crop from ``frame`` (uint8 H×W×C); outside the frame is edge-replicated.

    Area-averaging would be better for strong downscaling; cubic is the usual choice (DeepFaceLab, faceswap)
    and keeps detail when a small face is upscaled.
    """
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def smooth_landmarks(track: list[np.ndarray | None], window: int) -> list[np.ndarray | None]:
    """Centred moving average of landmarks over ``window`` frames (odd), within runs of detected frames.

    ``track`` holds one ``[68,2]`` array per frame, or None where no face was found; gaps break the runs so
    a face is never averaged with a different shot. ``window <= 1`` returns the track unchanged.
    """
    if window <= 1:
        return list(track)
    if window % 2 == 0:
        raise ConfigError(f"smoothing window must be odd, got {window}")
    r = window // 2
    out: list[np.ndarray | None] = []
    for i, lm in enumerate(track):
        if lm is None:
            out.append(None)
            continue
        lo, hi = i, i
        while lo > i - r and lo - 1 >= 0 and track[lo - 1] is not None:
            lo -= 1
        while hi < i + r and hi + 1 < len(track) and track[hi + 1] is not None:
            hi += 1
        k = min(i - lo, hi - i)     # symmetric window: no lag at the start or end of a run
        out.append(np.mean(np.stack(track[i - k:i + k + 1]), axis=0).astype(np.float32))
    return out

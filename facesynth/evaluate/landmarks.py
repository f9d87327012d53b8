"""Pose, expression and key-point metrics from 68-point landmarks (iBUG 300-W order).

Definitions (all per frame, then averaged over the frames where both sequences have a face):

- **pose error** (degrees): |Δyaw|, |Δpitch|, |Δroll| between the two faces' head poses (solvePnP of the 68
  points against a generic 3-D face, ``facesynth.extract.quality.head_pose``), and their mean.
- **expression error** (dimensionless): the mean distance between the two faces' landmarks after a similarity
  alignment (Umeyama: rotation, scale, translation) of one onto the other, divided by the reference face's
  inter-ocular distance (outer eye corners 36–45): the normalised mean error (NME) of 300-W, with the head's
  pose and size taken out so only the expression is left. Also reported: the absolute differences of mouth
  opening and eye aspect ratio.
- **mouth opening**: mean gap between the inner lips (61–67, 62–66, 63–65) over the inter-ocular distance.
- **eye aspect ratio** (EAR, Soukupová & Čech 2016): (|p2−p6| + |p3−p5|) / (2 |p1−p4|) per eye, both eyes averaged.
- **AKD** (average key-point distance, FOMM paper Sec. 4.2, protocol of AliaksandrSiarohin/pose-evaluation):
  landmarks are detected in the driving frame and in the generated frame, and AKD is the mean Euclidean
  distance between corresponding points, in pixels of the frames compared (FOMM: 256×256). The pose-evaluation
  code's ``cmp.py`` averages the absolute coordinate differences instead; that value is returned too
  (``akd_mad``); for a shift of k pixels along one axis it is k/2, where AKD is k.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["interocular", "mouth_opening", "eye_aspect_ratio", "expression_distance", "pose_difference",
           "keypoint_distance", "pose_error", "expression_error", "akd"]

_INNER_LIPS = ((61, 67), (62, 66), (63, 65))
_EYES = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47))


def _check(lm: np.ndarray) -> np.ndarray:
    lm = np.asarray(lm, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must be a [68, 2] array (iBUG 300-W order), got shape {lm.shape}")
    return lm


def interocular(lm: np.ndarray) -> float:
    """Distance between the outer eye corners (points 36 and 45), in the landmarks' units."""
    lm = _check(lm)
    return float(np.linalg.norm(lm[36] - lm[45]))


def mouth_opening(lm: np.ndarray) -> float:
    """Mean inner-lip gap over the inter-ocular distance: about 0 closed, 0.2-0.5 for open speech."""
    lm = _check(lm)
    gap = np.mean([np.linalg.norm(lm[a] - lm[b]) for a, b in _INNER_LIPS])
    return float(gap / max(interocular(lm), 1e-6))


def eye_aspect_ratio(lm: np.ndarray) -> float:
    """Eye aspect ratio of both eyes averaged: about 0.3 open, under 0.15 closed."""
    lm = _check(lm)
    ears = []
    for p1, p2, p3, p4, p5, p6 in _EYES:
        vertical = np.linalg.norm(lm[p2] - lm[p6]) + np.linalg.norm(lm[p3] - lm[p5])
        ears.append(vertical / max(2.0 * np.linalg.norm(lm[p1] - lm[p4]), 1e-6))
    return float(np.mean(ears))


def expression_distance(lm: np.ndarray, reference: np.ndarray) -> float:
    """NME after similarity alignment of ``lm`` onto ``reference`` (normalised by the reference's inter-ocular)."""
    from facesynth.extract.align import transform_points, umeyama
    lm, reference = _check(lm), _check(reference)
    aligned = transform_points(lm, umeyama(lm, reference, estimate_scale=True))
    return float(np.linalg.norm(aligned - reference, axis=1).mean() / max(interocular(reference), 1e-6))


def pose_difference(pose: Sequence[float], reference: Sequence[float]) -> np.ndarray:
    """|Δyaw|, |Δpitch|, |Δroll| in degrees (roll wrapped to ±180)."""
    d = np.abs(np.asarray(pose, np.float64) - np.asarray(reference, np.float64))
    return np.minimum(d, 360.0 - d)


def keypoint_distance(kp: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(mean Euclidean distance, mean absolute coordinate difference) between two [K, 2] point sets."""
    kp, reference = np.asarray(kp, np.float64), np.asarray(reference, np.float64)
    if kp.shape != reference.shape:
        raise ValueError(f"key point sets differ in shape: {kp.shape} vs {reference.shape}")
    diff = kp - reference
    return float(np.linalg.norm(diff, axis=-1).mean()), float(np.abs(diff).mean())


def _paired(a: Sequence[np.ndarray | None], b: Sequence[np.ndarray | None]) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(a) != len(b):
        raise ValueError(f"the landmark sequences differ in length: {len(a)} vs {len(b)}")
    return [(x, y) for x, y in zip(a, b) if x is not None and y is not None]


def pose_error(poses: Sequence[Sequence[float] | None], reference: Sequence[Sequence[float] | None]) -> dict:
    """Mean |Δyaw|, |Δpitch|, |Δroll| and their mean (degrees) over frames where both have a pose."""
    pairs = [(p, r) for p, r in _paired(poses, reference) if np.all(np.isfinite(p)) and np.all(np.isfinite(r))]
    if not pairs:
        return {"yaw": float("nan"), "pitch": float("nan"), "roll": float("nan"), "mean": float("nan"), "frames": 0}
    d = np.array([pose_difference(p, r) for p, r in pairs])
    yaw, pitch, roll = d.mean(0)
    return {"yaw": float(yaw), "pitch": float(pitch), "roll": float(roll), "mean": float(d.mean()),
            "frames": len(pairs)}


def expression_error(landmarks: Sequence[np.ndarray | None], reference: Sequence[np.ndarray | None]) -> dict:
    """Mean NME after similarity alignment, and mean |Δ mouth opening| and |Δ EAR|, over frames with both faces."""
    pairs = _paired(landmarks, reference)
    if not pairs:
        return {"nme": float("nan"), "mouth": float("nan"), "eyes": float("nan"), "frames": 0}
    nme = [expression_distance(x, r) for x, r in pairs]
    mouth = [abs(mouth_opening(x) - mouth_opening(r)) for x, r in pairs]
    eyes = [abs(eye_aspect_ratio(x) - eye_aspect_ratio(r)) for x, r in pairs]
    return {"nme": float(np.mean(nme)), "mouth": float(np.mean(mouth)), "eyes": float(np.mean(eyes)),
            "frames": len(pairs)}


def akd(landmarks: Sequence[np.ndarray | None], reference: Sequence[np.ndarray | None]) -> dict:
    """AKD (mean Euclidean landmark distance, pixels) and the pose-evaluation ``cmp.py`` variant (``akd_mad``).

    Frames where either sequence has no face are left out and counted in ``missing`` (pose-evaluation's
    ``cmp.py`` leaves them out too).
    """
    pairs = _paired(landmarks, reference)
    if not pairs:
        return {"akd": float("nan"), "akd_mad": float("nan"), "frames": 0, "missing": len(landmarks)}
    d = np.array([keypoint_distance(x, r) for x, r in pairs])
    return {"akd": float(d[:, 0].mean()), "akd_mad": float(d[:, 1].mean()), "frames": len(pairs),
            "missing": len(landmarks) - len(pairs)}

"""Stability over time: landmark jitter and flicker inside the face.

The study names jitter and lighting changes between frames as the first signs of a fake. Definitions:

- **jitter** (fraction of the face size): the high-frequency part of the landmarks' motion. For three
  consecutive frames with a face, the second difference ``L[t] - (L[t-1] + L[t+1]) / 2`` of each of the 68
  points is what a smooth motion does not explain; its mean length, divided by the face size (the inter-ocular
  distance at frame t), averaged over the frames. A steady or smoothly moving face gives about 0; detector noise
  on a real video gives about 0.005–0.02.
- **flicker** (grey levels, 0–255): the mean absolute frame-to-frame change of the pixels inside the face,
  ``d[t] = mean |I[t] - I[t-1]|`` over the face's landmark hull, beyond what the original video does at the same
  frames: ``mean_t max(0, d_result[t] - d_original[t])``. Without an original it is ``mean_t d[t]``. A still
  video gives 0; noise, texture boiling and lighting jumps raise it.
- **brightness flicker** (grey levels): the same for the change of the face's mean luminance, the lighting
  change the study describes: ``mean_t max(0, |Δ mean_face_luma| - |Δ original's|)``.

Both are computed in one streaming pass (``StabilityMeter``); ``jitter`` and ``flicker`` are plain functions
over whole sequences for other callers.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from facesynth.evaluate.landmarks import interocular

__all__ = ["jitter", "flicker", "face_region", "StabilityMeter"]


def jitter(landmarks: Sequence[np.ndarray | None]) -> float:
    """Mean second-difference landmark motion over the inter-ocular distance; NaN with < 3 consecutive faces."""
    values = [_second_difference(a, b, c) for a, b, c in zip(landmarks, landmarks[1:], landmarks[2:])
              if a is not None and b is not None and c is not None]
    return float(np.mean(values)) if values else float("nan")


def flicker(frames: Sequence[np.ndarray], regions: Sequence[np.ndarray | None],
            original: Sequence[np.ndarray] | None = None) -> float:
    """Flicker in grey levels of ``frames`` (uint8 H×W×3) inside ``regions`` (bool H×W masks, None = no face),
    beyond that of ``original`` at the same frames and pixels when given."""
    meter = StabilityMeter()
    for t, frame in enumerate(frames):
        meter.add(frame, None, regions[t], None if original is None else original[t])
    return meter.result()["flicker"]


def face_region(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bool H×W mask of the convex hull of the 68 landmarks (the face from brows to chin)."""
    mask = np.zeros(shape[:2], np.uint8)
    hull = cv2.convexHull(np.round(np.asarray(landmarks)).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


class StabilityMeter:
    """Streaming jitter and flicker: ``add`` one frame at a time, ``result`` at the end.

    ``add(frame, landmarks, region, original)``: ``frame`` uint8 H×W×3; ``landmarks`` [68,2] or None (no face);
    ``region`` the face mask where flicker is measured (None: no face, the frame pair is skipped);
    ``original`` the original video's frame at the same time (same size), or None.
    """

    def __init__(self):
        self._lm: list[np.ndarray | None] = [None, None]
        self._prev: np.ndarray | None = None
        self._prev_orig: np.ndarray | None = None
        self._jitter: list[float] = []
        self._flicker: list[float] = []
        self._brightness: list[float] = []

    def add(self, frame: np.ndarray, landmarks: np.ndarray | None, region: np.ndarray | None,
            original: np.ndarray | None = None) -> None:
        a, b = self._lm
        if a is not None and b is not None and landmarks is not None:
            self._jitter.append(_second_difference(a, b, landmarks))
        self._lm = [b, None if landmarks is None else np.asarray(landmarks, np.float64)]

        grey = _luma(frame)
        grey_orig = None if original is None else _luma(original)
        if self._prev is not None and region is not None and region.any() and self._prev.shape == grey.shape:
            change = np.abs(grey - self._prev)[region].mean()
            brightness = abs(grey[region].mean() - self._prev[region].mean())
            if grey_orig is not None and self._prev_orig is not None:
                change = max(0.0, change - np.abs(grey_orig - self._prev_orig)[region].mean())
                brightness = max(0.0, brightness - abs(grey_orig[region].mean() - self._prev_orig[region].mean()))
            self._flicker.append(float(change))
            self._brightness.append(float(brightness))
        self._prev, self._prev_orig = grey, grey_orig

    def result(self) -> dict:
        """{"jitter", "flicker", "brightness_flicker", "jitter_frames", "flicker_frames"}; NaN where nothing counted."""
        mean = (lambda v: float(np.mean(v)) if v else float("nan"))
        return {"jitter": mean(self._jitter), "flicker": mean(self._flicker),
                "brightness_flicker": mean(self._brightness), "jitter_frames": len(self._jitter),
                "flicker_frames": len(self._flicker)}


def _second_difference(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    a, b, c = (np.asarray(x, np.float64) for x in (a, b, c))
    return float(np.linalg.norm(b - (a + c) / 2.0, axis=1).mean() / max(interocular(b), 1e-6))


def _luma(frame: np.ndarray) -> np.ndarray:
    """BT.601 luma as float64 grey levels 0-255."""
    f = np.asarray(frame, np.float64)
    return f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114

"""Face masks in aligned-crop space, from the 68 landmarks.

``components``: the face from brows to chin (union of convex hulls of its parts, as DeepFaceLab does, so
a turned head does not fill the far cheek's background). ``extended``: the same plus the forehead, made by
lifting the brows along the face's vertical axis. A segmentation network plugs in with ``register_mask``:
any function ``(image uint8 H×W×3, landmarks [68,2]) → uint8 H×W mask (0 or 255)``.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from facesynth.errors import ConfigError

__all__ = ["MASKS", "register_mask", "make_mask", "components_mask", "extended_mask"]

MaskFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
MASKS: dict[str, MaskFn] = {}

# parts whose hulls make up the face: each side of the jaw with its brow, the nose, the eye-to-mouth band
_PARTS = (
    list(range(0, 9)) + list(range(17, 22)) + [27],
    list(range(8, 17)) + list(range(22, 27)) + [27],
    list(range(17, 27)) + [8],
    list(range(27, 36)),
    list(range(36, 48)) + list(range(48, 60)),
)
FOREHEAD_LIFT = 0.45   # brows are raised by this fraction of the brow-to-chin distance (hairline, roughly)


def register_mask(name: str) -> Callable[[MaskFn], MaskFn]:
    """Decorator adding a mask maker under ``name`` (for example a segmentation network's ``"segment"``)."""
    def add(fn: MaskFn) -> MaskFn:
        MASKS[name] = fn
        return fn
    return add


def make_mask(name: str, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    if name not in MASKS:
        raise ConfigError(f"unknown mask {name!r}; choose from {', '.join(MASKS)}")
    return MASKS[name](image, landmarks)


def _fill_hulls(shape: tuple[int, int], polygons: list[np.ndarray]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    for poly in polygons:
        hull = cv2.convexHull(np.round(poly).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_8)
    return mask


@register_mask("components")
def components_mask(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """uint8 ``H×W`` mask (0/255) of the face from the brows to the chin."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return _fill_hulls(image.shape[:2], [lm[p] for p in _PARTS])


@register_mask("extended")
def extended_mask(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """uint8 ``H×W`` mask (0/255): ``components`` plus the forehead above the brows."""
    lm = np.asarray(landmarks, dtype=np.float64)
    brows = lm[17:27]
    chin = lm[8]
    brow_centre = brows.mean(0)
    up = brow_centre - chin
    lifted = brows + FOREHEAD_LIFT * up
    forehead = np.concatenate([brows, lifted, lm[[0, 16]]])
    return _fill_hulls(image.shape[:2], [lm[p] for p in _PARTS] + [forehead])

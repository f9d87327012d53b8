"""Per-face scores that pruning ranks by: sharpness, head pose, motion, size.

The study found that frontal, sharp, slow (small-motion) faces train best. ``blur`` is the variance of
the Laplacian inside the face (higher is sharper); ``yaw``/``pitch``/``roll`` come from solvePnP of the 68
points against a generic 3-D face; ``motion`` is how far the landmarks moved since the previous sampled
frame, relative to the face size.

Angle conventions (degrees, 0 = looking straight at the camera): ``yaw`` > 0 when the nose points to the
image's right; ``pitch`` > 0 when the face looks up; ``roll`` > 0 when the head tilts clockwise in the image.
"""
from __future__ import annotations

import cv2
import numpy as np

from facesynth.extract.template import TEMPLATE_68

__all__ = ["blur_score", "head_pose", "GENERIC_FACE_3D", "face_size", "motion_score"]


def _generic_face_3d() -> np.ndarray:
    """A generic 3-D face: the canonical 2-D template wrapped on an elliptic cylinder, with the nose raised.

    Units are template units (inner face ≈ 1 wide, ≈ 14 cm on an adult). z points away from the camera,
    so a frontal face has the identity rotation. Depths: jaw corners about 0.56 behind the midline, nose tip
    0.25 in front of it, eyes slightly recessed; close enough for ranking poses, not for metrology.
    """
    xy = TEMPLATE_68 - np.array([0.5, 0.5])
    u = np.clip(xy[:, 0] / 0.62, -1.0, 1.0)
    z = -0.75 * (np.sqrt(1.0 - u ** 2) - 1.0)
    nose = {27: 0.05, 28: 0.10, 29: 0.17, 30: 0.25, 31: 0.08, 32: 0.13, 33: 0.16, 34: 0.13, 35: 0.08}
    for i, dz in nose.items():
        z[i] -= dz
    z[36:48] += 0.04
    z[48:68] -= 0.03
    return np.column_stack([xy, z]).astype(np.float64)


GENERIC_FACE_3D = _generic_face_3d()


def head_pose(landmarks: np.ndarray, frame_size: tuple[int, int]) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from ``[68,2]`` source-frame landmarks; ``frame_size`` is (H, W).

    A pinhole camera with focal length = the frame's larger side and the principal point at its centre;
    solvePnP starts from a frontal pose at the distance the face's size implies, which keeps it on the
    physical solution (face in front of the camera).
    """
    h, w = frame_size
    f = float(max(h, w))
    cam = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], dtype=np.float64)
    img = np.asarray(landmarks, dtype=np.float64)
    span = float(np.ptp(img[17:, 0])) or 1.0
    centre = img[27:36].mean(0)
    depth = f / span        # template inner face is 1 unit wide
    t0 = np.array([(centre[0] - w / 2) * depth / f, (centre[1] - h / 2) * depth / f, depth])
    ok, rvec, tvec = cv2.solvePnP(GENERIC_FACE_3D, img, cam, None, rvec=np.zeros(3), tvec=t0,
                                  useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return float("nan"), float("nan"), float("nan")
    rot, _ = cv2.Rodrigues(rvec)
    # R = Rz(roll) · Ry(yaw') · Rx(pitch'); signs chosen for the conventions in the module docstring
    yaw = np.degrees(np.arcsin(np.clip(-rot[2, 0], -1.0, 1.0)))
    pitch = np.degrees(np.arctan2(rot[2, 1], rot[2, 2]))
    roll = np.degrees(np.arctan2(rot[1, 0], rot[0, 0]))
    return float(-yaw), float(-pitch), float(roll)


def blur_score(crop: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Variance of the Laplacian of the grey crop, inside ``mask`` when given (higher = sharper)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    lap = cv2.Laplacian(grey.astype(np.float64), cv2.CV_64F)
    if mask is not None and mask.any():
        lap = lap[mask > 0]
    return float(lap.var())


def face_size(landmarks: np.ndarray) -> float:
    """Side of the landmarks' bounding box in source pixels (the larger of width and height)."""
    lm = np.asarray(landmarks)
    return float(np.ptp(lm, axis=0).max())


def motion_score(landmarks: np.ndarray, neighbour: np.ndarray | None) -> float:
    """Mean landmark displacement to a neighbouring sampled frame, as a fraction of the face size (0 if none)."""
    if neighbour is None:
        return 0.0
    d = np.linalg.norm(np.asarray(landmarks, np.float64) - np.asarray(neighbour, np.float64), axis=1).mean()
    return float(d / max(face_size(landmarks), 1e-6))

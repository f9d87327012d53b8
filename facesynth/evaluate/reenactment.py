"""``evaluate_reenactment``: FOMM's evaluation protocol on an animation, plus identity and expression checks.

The FOMM paper (Siarohin et al. 2019, Sec. 4.2) evaluates by **self-reenactment**: the source is a frame of a
test video and the driving video is that same video, so the driving frames are the ground truth. Its metrics:

- ``l1``: mean |result − driving| over frames, channels and pixels, images in [0, 1] (self-reenactment only;
  the driving frames are resized to the result's size, area interpolation, when they differ);
- ``akd``: average key-point distance between landmarks of result and driving frames (pixels of the result's
  frame size; FOMM: 256×256 and face-alignment landmarks; here the ``detector`` given, dlib by default), with
  the pose-evaluation ``cmp.py`` variant ``akd_mad`` (see ``facesynth.evaluate.landmarks``);
- ``aed``: average distance between the identity embeddings of result and driving frames. FOMM used OpenFace;
  here it is dlib's ResNet descriptor (``aed_embedding`` says so), so the values are not the paper's scale.
  It measures identity only in self-reenactment; across identities it is the distance to the driving person.

Added for cross-identity animation (a portrait driven by another person's video):

- ``id_to_source_image``: distance of the result's faces to the source image's face (identity kept; < 0.6 = the
  same person by dlib's rule) and ``id_kept_rate`` (fraction of frames under 0.6);
- ``expression_error`` / ``mouth_error``: how well the result follows the driving video's expression (landmark
  NME after similarity alignment, mouth-opening difference), ``pose_error_deg`` for the head pose;
- ``jitter``, ``flicker``: stability of the result (``facesynth.evaluate.temporal``; flicker beyond the driving
  video's own change in the same region);
- ``face_rate``: fraction of result frames with a face.

``self_reenactment=None`` decides by identity: the source's face and the driving video's first face closer than
0.6 (the same person) count as self-reenactment, and ``protocol`` says which was used.
"""
from __future__ import annotations

import cv2
import numpy as np

from facesynth.errors import NoFaceError
from facesynth.evaluate.analysis import analyse, lockstep
from facesynth.evaluate.frames import FrameSource, iter_rgb, source_label
from facesynth.evaluate.identity import SAME_PERSON_THRESHOLD, FaceEmbedder, descriptor_distance
from facesynth.evaluate.landmarks import akd, expression_distance, mouth_opening, pose_difference
from facesynth.evaluate.report import definitions, mean, provenance
from facesynth.evaluate.temporal import StabilityMeter, face_region

__all__ = ["evaluate_reenactment"]


def evaluate_reenactment(source: FrameSource, driving: FrameSource, result: FrameSource,
                         self_reenactment: bool | None = None, detector: str = "dlib", align: str = "error",
                         embedder: FaceEmbedder | None = None, progress: bool | None = None) -> dict:
    """Evaluate an animation of ``source`` by ``driving`` (see the module docstring for the definitions).

    Args:
        source: the source image (or a video / frames: its first frame is used).
        driving: the driving video, frame for frame the same length and rate as ``result``.
        result: the animation.
        self_reenactment: True when driving is the ground truth (FOMM's reconstruction protocol: ``l1`` is
            computed); False for another identity; None decides by dlib's same-person rule.
        detector, align, embedder: as in ``evaluate_swap``.

    Returns:
        dict with ``akd``, ``aed``, ``l1`` (None unless self-reenactment), ``id_to_source_image``,
        ``expression_error``, ``pose_error_deg``, ``jitter``, ``flicker``, ``face_rate``, ``protocol``,
        ``per_frame``, ``definitions``, ``weights``.
    """
    from tqdm.auto import tqdm

    embedder = embedder or FaceEmbedder(detector)
    source_image = next(iter(iter_rgb(source)))
    source_desc = embedder.embed(source_image)
    if source_desc is None:
        raise NoFaceError(f"{source_label(source)}: no face in the source image; give the portrait that was animated")
    frames, note = lockstep({"driving": driving, "result": result}, align=align)
    meter, per_frame, l1_sum, protocol, size = StabilityMeter(), [], 0.0, None, ()
    disable = None if progress is None else not progress
    for t, (drv, res) in enumerate(tqdm(frames, desc="evaluate reenactment", unit="frame", disable=disable)):
        size = res.shape[:2]
        drv = _resize(drv, size)
        d, r = analyse(drv, embedder), analyse(res, embedder)
        if protocol is None:
            protocol = _protocol(self_reenactment, source_desc, d)
        if protocol.startswith("self"):
            l1_sum += float(np.abs(res.astype(np.float64) - drv.astype(np.float64)).mean() / 255.0)
        meter.add(res, r.landmarks, face_region(r.landmarks, res.shape) if r.found else None, drv)
        per_frame.append(_frame_record(t, d, r, source_desc))
    n = len(per_frame)
    kd = akd([r.pop("_lm") for r in per_frame], [r.pop("_lm_driving") for r in per_frame])
    stability = meter.result()
    both = [r for r in per_frame if r["aed"] is not None]
    return {
        "l1": l1_sum / n if protocol and protocol.startswith("self") and n else None,
        "akd": kd["akd"], "akd_mad": kd["akd_mad"],
        "aed": mean(r["aed"] for r in per_frame), "aed_embedding": "dlib ResNet descriptor (FOMM used OpenFace)",
        "id_to_source_image": mean(r["id_to_source_image"] for r in per_frame),
        "id_kept_rate": mean(float(r["id_to_source_image"] < SAME_PERSON_THRESHOLD)
                             for r in per_frame if r["id_to_source_image"] is not None),
        "expression_error": mean(r["expression_error"] for r in per_frame),
        "mouth_error": mean(r["mouth_error"] for r in per_frame),
        "pose_error_deg": mean(r["pose_error_deg"] for r in per_frame),
        "jitter": stability["jitter"], "flicker": stability["flicker"],
        "brightness_flicker": stability["brightness_flicker"],
        "face_rate": sum(r["face"] for r in per_frame) / n if n else float("nan"),
        "frames": n, "frames_with_face": sum(r["face"] for r in per_frame), "frames_compared": len(both),
        "protocol": protocol or "no frames", "alignment": note["alignment"], "fps": note["fps"],
        "frame_size": list(size),
        "inputs": {"source": source_label(source), "driving": source_label(driving), "result": source_label(result)},
        "per_frame": per_frame,
        "definitions": definitions("l1", "akd", "akd_mad", "aed", "id_to_source_image", "expression_error",
                                   "mouth_error", "pose_error_deg", "jitter", "flicker", "brightness_flicker",
                                   "face_rate"),
        **provenance(embedder),
    }


def _protocol(requested: bool | None, source_desc: np.ndarray, first_driving) -> str:
    if requested is not None:
        return "self-reenactment (as requested)" if requested else "cross-identity (as requested)"
    if first_driving.found:
        dist = descriptor_distance(source_desc, first_driving.descriptor)
        same = dist < SAME_PERSON_THRESHOLD
        return (f"{'self-reenactment' if same else 'cross-identity'} (source vs first driving face: "
                f"descriptor distance {dist:.3f}, {'<' if same else '≥'} {SAME_PERSON_THRESHOLD})")
    return "cross-identity (no face in the first driving frame to compare with the source)"


def _frame_record(t: int, d, r, source_desc: np.ndarray) -> dict:
    rec = {"frame": t, "face": r.found, "driving_face": d.found, "aed": None, "id_to_source_image": None,
           "expression_error": None, "mouth_error": None, "pose_error_deg": None,
           "_lm": r.landmarks, "_lm_driving": d.landmarks}
    if r.found:
        rec["id_to_source_image"] = descriptor_distance(r.descriptor, source_desc)
    if r.found and d.found:
        rec["aed"] = descriptor_distance(r.descriptor, d.descriptor)
        rec["expression_error"] = expression_distance(r.landmarks, d.landmarks)
        rec["mouth_error"] = abs(mouth_opening(r.landmarks) - mouth_opening(d.landmarks))
        rec["pose_error_deg"] = float(pose_difference(r.pose, d.pose).mean())
    return rec


def _resize(frame: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if frame.shape[:2] == tuple(shape):
        return frame
    return cv2.resize(frame, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


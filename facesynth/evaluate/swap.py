"""``evaluate_swap``: how well a face swap replaced the identity while keeping everything else.

Per frame of the swapped video, against the original video at the same frame and the target person:

- ``id_to_target``: dlib descriptor distance of the swapped face to the target person (the mean descriptor of
  the target's face set, photos or video; < 0.6 = dlib calls it the same person). Lower is better.
- ``id_to_source``: distance of the swapped face to the original face of the same frame. Higher is better.
- ``success_rate``: fraction of the frames with a face in both videos where the swapped face is closer to the
  target than to the original face.
- ``target_match_rate``: fraction of those frames where ``id_to_target`` < 0.6.
- ``pose_error_deg``: mean |Δyaw|, |Δpitch|, |Δroll| against the original face (degrees; the swap should keep
  the head pose), with each angle's mean in ``pose_error``.
- ``expression_error``: landmark NME after similarity alignment against the original face (see
  ``facesynth.evaluate.landmarks``), with mouth-opening and eye-aspect-ratio differences.
- ``jitter`` / ``jitter_original``, ``flicker``, ``brightness_flicker``: stability (``facesynth.evaluate.temporal``);
  flicker is measured inside the original face's landmark hull, beyond the original's own change.
- ``face_rate``: fraction of the swapped frames in which a face is found at all.

Means are over the frames where they are defined; ``per_frame`` keeps every frame's values (``None`` where a
face is missing). Frames are streamed; memory does not grow with the video's length.
"""
from __future__ import annotations

import numpy as np

from facesynth.evaluate.analysis import WorkerAnalysis, analyse, lockstep, worker_can_read
from facesynth.evaluate.frames import FrameSource, source_label
from facesynth.evaluate.identity import SAME_PERSON_THRESHOLD, FaceEmbedder, descriptor_distance
from facesynth.evaluate.landmarks import expression_distance, eye_aspect_ratio, mouth_opening, pose_difference
from facesynth.evaluate.report import definitions, mean, provenance
from facesynth.evaluate.temporal import StabilityMeter, face_region, jitter

__all__ = ["evaluate_swap"]


def evaluate_swap(original: FrameSource, swapped: FrameSource, target: FrameSource, detector: str = "dlib",
                  align: str = "error", embedder: FaceEmbedder | None = None, max_target_faces: int = 64,
                  jobs: int | None = None, progress: bool | None = None) -> dict:
    """Evaluate a face swap (see the module docstring for every value's definition).

    Args:
        original: the video (or frames) before the swap.
        swapped: the converted video, frame for frame the same length and rate as ``original``.
        target: the person swapped in: a face set folder, photos, an image or a video.
        detector: landmark backend for every frame (``"dlib"``: offline and reproducible; ``"fan"``, ``"auto"``).
        align: ``"error"`` refuses videos of different lengths or rates; ``"time"`` compares them at the
            lower rate up to the shorter one, and says so in ``alignment``.
        embedder: a ready ``FaceEmbedder`` (reused across calls to save its loading).
        jobs: processes for the face analysis; None: 2 where the machine has two cores (the original video is
            then analysed in a worker process, ahead of the swapped one), 1: all in this process.

    Returns:
        dict with at least ``id_to_target``, ``id_to_source``, ``success_rate``, ``pose_error_deg``,
        ``expression_error``, ``jitter``, ``face_rate``, plus ``per_frame``, ``definitions``, ``weights``.
    """
    from tqdm.auto import tqdm

    embedder = embedder or FaceEmbedder(detector)
    target_desc = embedder.embed_set(target, max_faces=max_target_faces).mean(0)
    frames, note = lockstep({"original": original, "swapped": swapped}, align=align)
    meter, original_track, per_frame = StabilityMeter(), [], []
    disable = None if progress is None else not progress
    worker = WorkerAnalysis(original, embedder.tracker.name, note["sample_fps"]["original"]) \
        if worker_can_read(original, embedder, jobs) else None
    try:
        for t, (orig, swap) in enumerate(tqdm(frames, desc="evaluate swap", unit="frame", disable=disable)):
            s = analyse(swap, embedder)
            o = worker.next() if worker else analyse(orig, embedder)
            original_track.append(o.landmarks)
            region = face_region(o.landmarks if o.found else s.landmarks, swap.shape) if (o.found or s.found) else None
            meter.add(swap, s.landmarks, region, orig if orig.shape == swap.shape else None)
            per_frame.append(_frame_record(t, o, s, target_desc))
    finally:
        if worker:
            worker.close()
    return _summary(per_frame, meter.result(), jitter(original_track), note, embedder, target,
                    {"original": source_label(original), "swapped": source_label(swapped),
                     "target": source_label(target)})


def _frame_record(t: int, o, s, target_desc: np.ndarray) -> dict:
    rec = {"frame": t, "face": s.found, "original_face": o.found, "id_to_target": None, "id_to_source": None,
           "pose_error_deg": None, "expression_error": None, "mouth_error": None, "eye_error": None}
    if s.found:
        rec["id_to_target"] = descriptor_distance(s.descriptor, target_desc)
    if s.found and o.found:
        rec["id_to_source"] = descriptor_distance(s.descriptor, o.descriptor)
        rec["pose_error_deg"] = float(pose_difference(s.pose, o.pose).mean())
        rec["pose"] = [float(x) for x in pose_difference(s.pose, o.pose)]
        rec["expression_error"] = expression_distance(s.landmarks, o.landmarks)
        rec["mouth_error"] = abs(mouth_opening(s.landmarks) - mouth_opening(o.landmarks))
        rec["eye_error"] = abs(eye_aspect_ratio(s.landmarks) - eye_aspect_ratio(o.landmarks))
    return rec


def _summary(per_frame: list[dict], stability: dict, jitter_original: float, note: dict, embedder: FaceEmbedder,
             target, inputs: dict) -> dict:
    n = len(per_frame)
    both = [r for r in per_frame if r["id_to_source"] is not None]
    return {
        "id_to_target": mean(r["id_to_target"] for r in per_frame),
        "id_to_source": mean(r["id_to_source"] for r in per_frame),
        "success_rate": mean(float(r["id_to_target"] < r["id_to_source"]) for r in both),
        "target_match_rate": mean(float(r["id_to_target"] < SAME_PERSON_THRESHOLD) for r in both),
        "pose_error_deg": mean(r["pose_error_deg"] for r in per_frame),
        "pose_error": {axis: mean(r["pose"][i] for r in both) for i, axis in enumerate(("yaw", "pitch", "roll"))},
        "expression_error": mean(r["expression_error"] for r in per_frame),
        "mouth_error": mean(r["mouth_error"] for r in per_frame),
        "eye_error": mean(r["eye_error"] for r in per_frame),
        "jitter": stability["jitter"],
        "jitter_original": jitter_original,
        "flicker": stability["flicker"],
        "brightness_flicker": stability["brightness_flicker"],
        "face_rate": sum(r["face"] for r in per_frame) / n if n else float("nan"),
        "frames": n,
        "frames_with_face": sum(r["face"] for r in per_frame),
        "frames_compared": len(both),
        "alignment": note["alignment"],
        "fps": note["fps"],
        "inputs": inputs,
        "per_frame": per_frame,
        "definitions": definitions("id_to_target", "id_to_source", "success_rate", "target_match_rate",
                                   "pose_error_deg", "expression_error", "mouth_error", "eye_error", "jitter",
                                   "flicker", "brightness_flicker", "face_rate"),
        **provenance(embedder),
    }

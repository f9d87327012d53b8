"""One pass of face analysis per frame, shared by the swap and reenactment evaluations.

For each frame: the largest face's 68 landmarks (``LandmarkTracker``), its head pose (yaw, pitch, roll in
degrees, ``facesynth.extract.quality.head_pose``) and its identity descriptor (``FaceEmbedder``). Two or more
videos are read in lockstep, one frame of each at a time, so memory does not grow with their length.
"""
from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import sys
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from facesynth.errors import ConfigError
from facesynth.evaluate.frames import FrameSource, iter_rgb, source_fps, source_label
from facesynth.evaluate.identity import FaceEmbedder

__all__ = ["FrameFaces", "analyse", "lockstep", "WorkerAnalysis", "worker_can_read"]


@dataclass
class FrameFaces:
    """What was found in one frame (all None when it has no face)."""
    landmarks: np.ndarray | None = None     # [68, 2] frame pixels
    pose: tuple[float, float, float] | None = None   # yaw, pitch, roll (degrees)
    descriptor: np.ndarray | None = None    # (128,) dlib descriptor
    shape: tuple[int, int] = (0, 0)          # frame (H, W)

    @property
    def found(self) -> bool:
        return self.landmarks is not None


def analyse(frame: np.ndarray, embedder: FaceEmbedder, describe: bool = True) -> FrameFaces:
    """Landmarks, pose and (when ``describe``) the identity descriptor of the largest face in ``frame``."""
    from facesynth.extract.quality import head_pose

    face = embedder.tracker(frame)
    if face is None:
        return FrameFaces(shape=frame.shape[:2])
    return FrameFaces(landmarks=face.landmarks, pose=head_pose(face.landmarks, frame.shape[:2]),
                      descriptor=embedder.embed_face(frame, face) if describe else None, shape=frame.shape[:2])


def lockstep(sources: dict[str, FrameSource], align: str = "error") -> tuple[Iterator[tuple[np.ndarray, ...]], dict]:
    """Frames of several sources read together, one tuple per time step, and a note on the time alignment.

    Frame rates must agree (videos' rates; arrays and images have none). ``align="error"`` raises ConfigError
    when the rates or lengths differ; ``align="time"`` samples every video at the lowest rate and stops at the
    shortest, and the note says so. The returned dict is filled while iterating: ``frames`` (steps compared),
    ``alignment`` (what was done) and ``fps``.
    """
    if align not in ("error", "time"):
        raise ConfigError(f"align must be 'error' or 'time', got {align!r}")
    rates = {k: source_fps(s) for k, s in sources.items()}
    known = {k: r for k, r in rates.items() if r}
    fps = min(known.values()) if known else None
    note: dict = {"frames": 0, "fps": fps, "alignment": "frame by frame", "sample_fps": {}}
    if known and max(known.values()) - min(known.values()) > 0.01 * min(known.values()):
        detail = ", ".join(f"{k} {r:.3f} fps" for k, r in known.items())
        if align == "error":
            raise ConfigError(f"the videos have different frame rates ({detail}); convert them to one rate, or "
                              f"pass align='time' (CLI --align time) to sample all at {fps:.3f} fps")
        note["alignment"] = f"time: sampled at {fps:.3f} fps ({detail}), stopped at the shortest"
    if align == "error":
        _check_counts(sources)
    note["sample_fps"] = {k: fps if (align == "time" and rates[k]) else None for k in sources}
    streams = {k: iter_rgb(s, note["sample_fps"][k]) for k, s in sources.items()}
    return _zip_checked(streams, sources, align, note), note


def _zip_checked(streams: dict, sources: dict, align: str, note: dict) -> Iterator[tuple[np.ndarray, ...]]:
    done = object()
    for step in itertools.zip_longest(*streams.values(), fillvalue=done):
        if any(f is done for f in step):
            ended = [k for k, f in zip(streams, step) if f is done]
            if align == "error":
                longer = [k for k in streams if k not in ended]
                raise ConfigError(
                    f"the videos have different lengths: {', '.join(ended)} ended after {note['frames']} frames "
                    f"while {', '.join(longer)} went on ({', '.join(source_label(sources[k]) for k in streams)}); "
                    f"trim them to one length or pass align='time' (CLI --align time) to stop at the shortest")
            if "stopped" not in note["alignment"]:
                note["alignment"] = f"time: stopped at the shortest ({note['frames']} frames; {', '.join(ended)} ended first)"
            return
        note["frames"] += 1
        yield step


def _check_counts(sources: dict[str, FrameSource]) -> None:
    """Refuse early, before any face is analysed, videos whose containers say they differ in length."""
    from facesynth.media import is_video, probe

    counts = {}
    for k, s in sources.items():
        if isinstance(s, (str, os.PathLike)) and is_video(s):
            counts[k] = probe(s).frame_count
        elif hasattr(s, "shape") and len(s.shape) == 4:
            counts[k] = int(s.shape[0])
    if len(counts) > 1 and all(counts.values()) and max(counts.values()) - min(counts.values()) > 2:
        detail = ", ".join(f"{k}: about {n} frames" for k, n in counts.items())
        raise ConfigError(f"the videos have different lengths ({detail}); trim them to one length or pass "
                          f"align='time' (CLI --align time) to stop at the shortest")


class WorkerAnalysis:
    """``analyse`` of every frame of one source, run ahead in a worker process.

    The dlib descriptor holds Python's global lock, so threads cannot share the work; a second process can. The
    worker reads the source itself (streamed), and hands back one small ``FrameFaces`` record per frame through
    a bounded queue (it runs at most ``lead`` frames ahead), so memory stays flat. ``next()`` returns the next
    frame's record; ``close()`` stops the worker. Errors in the worker are raised here.
    """

    def __init__(self, source: FrameSource, detector: str, fps: float | None = None, lead: int = 32):
        # fork: a spawned child would re-import the caller's main script (a script without a __main__ guard
        # would run again); the child uses only dlib and ffmpeg, no torch thread pools
        ctx = multiprocessing.get_context("fork")
        self._queue = ctx.Queue(maxsize=lead)
        self._process = ctx.Process(target=_analyse_into, args=(source, detector, fps, self._queue), daemon=True)
        self._process.start()

    def next(self) -> FrameFaces:
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                if not self._process.is_alive():
                    raise RuntimeError(f"the face analysis worker stopped (exit code {self._process.exitcode})")
                continue
            if isinstance(item, BaseException):
                raise item
            if item is None:
                raise RuntimeError("the face analysis worker ran out of frames before the caller")
            return item

    def close(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=5)
        self._queue.close()

    def __enter__(self) -> "WorkerAnalysis":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def worker_can_read(source: FrameSource, embedder: FaceEmbedder, jobs: int | None) -> bool:
    """Whether a ``WorkerAnalysis`` can take this source: more than one job, Linux (the worker is forked), a file
    or an array (a worker cannot share a generator), and a detector it can build by name."""
    from facesynth.extract.backends import BACKENDS

    jobs = min(2, os.cpu_count() or 1) if jobs is None else jobs
    readable = isinstance(source, (str, os.PathLike, np.ndarray))
    return jobs > 1 and sys.platform == "linux" and readable and embedder.tracker.name in BACKENDS


def _analyse_into(source: FrameSource, detector: str, fps: float | None, out) -> None:
    try:
        embedder = FaceEmbedder(detector)
        for frame in iter_rgb(source, fps):
            out.put(analyse(frame, embedder))
        out.put(None)
    except BaseException as e:     # sent to the caller, who raises it
        out.put(e)

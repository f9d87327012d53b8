"""What every metric shares: frames from any source, and one face's landmarks per frame.

A *frame source* is a video file, an image file, a folder of images, a uint8 array ``[T,H,W,3]`` (or one
``[H,W,3]`` image), a list of such images, or a float tensor ``[T,3,H,W]`` in [0, 1]. Files are streamed:
memory does not grow with a video's length.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np

from facesynth.errors import ConfigError, MediaError

__all__ = ["FrameSource", "iter_rgb", "source_fps", "source_label", "LandmarkTracker", "TrackedFace"]

FrameSource = Union[str, os.PathLike, np.ndarray, Sequence[np.ndarray], "torch.Tensor"]  # noqa: F821


def _as_uint8(frame) -> np.ndarray:
    """One frame as uint8 H×W×3 RGB (float tensors [3,H,W] in [0,1] and grey images accepted)."""
    if hasattr(frame, "detach"):          # a torch tensor
        from facesynth.media import to_image
        return to_image(frame)
    a = np.asarray(frame)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise MediaError(f"a frame must be H×W×3 RGB, got an array of shape {a.shape}")
    a = a[..., :3]
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.size and float(np.nanmax(a)) <= 1.0 + 1e-6:
            a = a * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def iter_rgb(source: FrameSource, fps: float | None = None) -> Iterator[np.ndarray]:
    """The frames of ``source`` as uint8 H×W×3 RGB, streamed from files (``fps`` samples a video)."""
    if isinstance(source, (str, os.PathLike)):
        from facesynth.extract.pipeline import iter_source_frames, sources_of
        for _, _, frame in iter_source_frames(sources_of(source), fps):
            yield frame
        return
    if hasattr(source, "detach"):          # tensor [T,3,H,W] or [3,H,W]
        frames = source if source.dim() == 4 else source[None]
        for f in frames:
            yield _as_uint8(f)
        return
    if isinstance(source, np.ndarray):
        frames = source if source.ndim == 4 else source[None]
        for f in frames:
            yield _as_uint8(f)
        return
    if isinstance(source, Iterable):
        for f in source:
            yield _as_uint8(f)
        return
    raise MediaError(f"cannot read frames from a {type(source).__name__}; give a video, an image, a folder "
                     f"of images or an array of uint8 RGB frames")


def source_fps(source: FrameSource) -> float | None:
    """The frame rate of a video file; None for images, folders and arrays (no time base)."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        from facesynth.media import is_image, probe
        if p.is_dir() or is_image(p):
            return None
        info = probe(p)
        return info.fps if info.duration > 0 else None
    return None


def source_label(source: FrameSource) -> str:
    """A short name of a source for reports: the file's path, or the array's shape."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    shape = getattr(source, "shape", None)
    if shape is not None:
        return f"{type(source).__name__}{tuple(shape)}"
    return f"{type(source).__name__} of frames"


@dataclass
class TrackedFace:
    box: np.ndarray          # [4] x0, y0, x1, y1 in frame pixels
    landmarks: np.ndarray    # [68, 2] float64, frame pixels, iBUG 300-W order
    frame_size: tuple[int, int]  # (H, W)


class LandmarkTracker:
    """The largest face's 68 landmarks in each frame, with a facesynth.extract backend.

    ``detector="dlib"`` (default) runs offline with the shipped dlib models and gives the same numbers on
    every machine; ``"fan"`` (face-alignment) is what FOMM's pose evaluation used; ``"auto"`` picks fan when
    its weights are present. The backend used is in ``self.name`` and goes into every report.
    """

    def __init__(self, detector: str = "dlib", device: str = "cpu", **options):
        from facesynth.extract.backends import FaceBackend, create_backend
        if isinstance(detector, FaceBackend):
            self.backend = detector
        else:
            if not isinstance(detector, str):
                raise ConfigError(f"detector must be a name or a FaceBackend, got {type(detector).__name__}")
            self.backend = create_backend(detector, device=device, **options)
        self.name = self.backend.name

    def __call__(self, frame: np.ndarray) -> TrackedFace | None:
        frame = _as_uint8(frame)
        faces = self.backend.detect([frame])[0]
        if not faces:
            return None
        face = max(faces, key=lambda f: f.area)
        return TrackedFace(box=np.asarray(face.box, np.float64), landmarks=np.asarray(face.landmarks, np.float64),
                           frame_size=frame.shape[:2])

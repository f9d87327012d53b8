"""Face detection + 68-point landmark backends behind one small interface.

A backend turns RGB frames into ``DetectedFace`` records (box, confidence, 68 landmarks in frame pixels,
iBUG 300-W order). Adding one is one file with a ``FaceBackend`` subclass plus one line in ``BACKENDS``.
"""
from __future__ import annotations

import abc
import importlib
import warnings
from dataclasses import dataclass

import numpy as np

from facesynth.errors import CheckpointError, ConfigError

__all__ = ["DetectedFace", "FaceBackend", "BACKENDS", "create_backend", "available_backends"]


@dataclass
class DetectedFace:
    box: np.ndarray         # [4] float32: x0, y0, x1, y1 in frame pixels
    score: float            # detector confidence (higher is surer; each backend's own scale)
    landmarks: np.ndarray   # [68, 2] float32: x, y in frame pixels, iBUG 300-W order

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return float(max(0.0, x1 - x0) * max(0.0, y1 - y0))


class FaceBackend(abc.ABC):
    """Detects faces and their 68 landmarks. ``detect`` takes a batch of frames (equal sizes not required)."""

    name: str = ""
    batch_size: int = 1     # frames per call that the backend processes efficiently

    @classmethod
    def is_available(cls) -> bool:
        """True when the backend's packages and weights are present (``auto`` asks this)."""
        return True

    @abc.abstractmethod
    def detect(self, frames: list[np.ndarray]) -> list[list[DetectedFace]]:
        """``frames``: uint8 H×W×3 RGB images → for each, the faces found (possibly none)."""


# name → "module:Class"; imported only when asked for, so a missing optional package costs nothing
BACKENDS: dict[str, str] = {
    "fan": "facesynth.extract.backends.fan_backend:FanBackend",
    "dlib": "facesynth.extract.backends.dlib_backend:DlibBackend",
}
AUTO_ORDER = ("fan", "dlib")
# the facesynth.weights files each backend loads: "auto" passes over a backend whose file is on disk but empty or
# unreadable with a warning, rather than failing on it (or, for an empty file, ignoring it without a word)
BACKEND_WEIGHTS: dict[str, tuple[str, ...]] = {"fan": ("s3fd", "2dfan4")}


def _backend_class(name: str) -> type[FaceBackend]:
    if name not in BACKENDS:
        raise ConfigError(f"unknown detector {name!r}; choose one of: auto, {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def available_backends() -> list[str]:
    """Backends that can run here, in the order ``auto`` tries them."""
    names = []
    for name in _auto_order():
        try:
            if _backend_class(name).is_available():
                names.append(name)
        except ImportError:
            continue
    return names


def create_backend(detector: str | FaceBackend = "auto", device: str = "auto", **options) -> FaceBackend:
    """Build a backend: ``"auto"`` (fan when its weights are present and readable, else dlib), ``"fan"``,
    ``"dlib"``, or an instance.

    ``options`` go to the backend (e.g. ``model="cnn"`` for dlib's MMOD detector). ``"auto"`` warns (UserWarning)
    when it passes over fan because a weights file is empty or unreadable; asking for ``"fan"`` itself then raises
    WeightsNotFoundError (empty file) or CheckpointError (unreadable file).
    """
    if isinstance(detector, FaceBackend):
        return detector
    if detector == "auto":
        return _create_auto(device, **options)
    return _backend_class(detector)(device=device, **options)


def _create_auto(device: str, **options) -> FaceBackend:
    passed_over: list[str] = []
    for name in _auto_order():
        try:
            cls = _backend_class(name)
            available = cls.is_available()
        except ImportError:
            continue
        problem = _empty_weights(name)
        if problem is None and available:
            try:
                backend = cls(device=device, **options)
            except CheckpointError as e:
                problem = " ".join(str(e).split())
            else:
                if passed_over:
                    warnings.warn(f"detector 'auto': not using {'; '.join(passed_over)}. Using {name} instead; run "
                                  f"`facesynth weights --verify` to see which files are bad, then delete and "
                                  f"download them again", stacklevel=3)
                return backend
        if problem is not None:
            passed_over.append(f"{name} ({problem})")
    broken = f" ({'; '.join(passed_over)})" if passed_over else ""
    raise ConfigError(f"no face detector can run{broken}: install dlib-bin and face-recognition-models "
                      f"(pip install -e .) or put the face-alignment weights in place (`facesynth weights`)")


def _auto_order() -> tuple[str, ...]:
    return AUTO_ORDER + tuple(n for n in BACKENDS if n not in AUTO_ORDER)


def _empty_weights(backend: str) -> str | None:
    """A sentence naming a weights file of ``backend`` that is on disk but empty, else None."""
    from facesynth import weights

    for name in BACKEND_WEIGHTS.get(backend, ()):
        path = weights.locate(name)
        if path is not None and path.stat().st_size == 0:
            return f"{path} is empty (0 bytes), a failed download"
    return None

"""The errors facesynth raises on bad input.

Every message says what was wrong and what to do about it. The CLI prints it on one line and exits 2;
anything that is not a FacesynthError is a bug and keeps its traceback.
"""
from __future__ import annotations


class FacesynthError(Exception):
    """Base class of every error that is the input's fault, not the library's."""


class MediaError(FacesynthError):
    """An image or video is missing, empty, unreadable, or cannot be written."""


class NoFaceError(FacesynthError):
    """No face was found anywhere in the input."""


class CheckpointError(FacesynthError):
    """A checkpoint is unreadable, corrupt, or does not match the model (missing/unexpected/mis-shaped keys)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint asks to run code or import globals that a weights file never needs; nothing was executed."""


class WeightsNotFoundError(FacesynthError):
    """An official weights file is not on disk and could not be downloaded."""


class ConfigError(FacesynthError):
    """An option or configuration value is invalid."""


__all__ = ["FacesynthError", "MediaError", "NoFaceError", "CheckpointError", "UnsafeCheckpointError",
           "WeightsNotFoundError", "ConfigError"]

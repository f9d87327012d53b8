"""Atomic file writes and the project's folders.

A file written here appears complete or not at all: bytes go to a temporary file in the same folder,
are flushed to disk (fsync), then renamed over the target, so a crash or a Colab disconnect never leaves
a half-written checkpoint or face set behind. The file gets the mode ``open()`` would give it (0666 less the
umask), not the 0600 of the temporary file.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, IO

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "current_umask", "project_dir", "data_dir"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file beside ``path``, fsync it, then rename it onto ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())     # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(p.parent)
    return p


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status") as f:
            found = re.search(r"^Umask:\s*([0-7]+)$", f.read(), re.MULTILINE)
        if found:
            return int(found.group(1), 8)
    except OSError:
        pass
    with _UMASK_LOCK:      # elsewhere the only way to read it is to set it; set it straight back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows); the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    return atomic_write_bytes(path, json.dumps(obj, indent=indent, allow_nan=True).encode())


def project_dir() -> Path:
    """The checkout this package runs from (it has pyproject.toml beside ``facesynth/``), else the working folder.

    Sample media go to ``<project>/data/samples`` and weights to ``<project>/weights`` so that a clone, a
    notebook in ``notebooks/`` and the CLI all find the same files.
    """
    env = os.environ.get("FACESYNTH_HOME")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file() and (here / "facesynth").is_dir():
        return here
    return Path.cwd()


def data_dir() -> Path:
    return project_dir() / "data"

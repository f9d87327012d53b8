"""Argument helpers and small outputs shared by the subcommands."""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
from pathlib import Path

__all__ = ["positive_float", "gallery", "loss_summary", "cleanup_new_folder", "check_suffix"]


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def gallery(fs, path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from facesynth.notebook import face_gallery
    fig = face_gallery(fs, path=path, title=title)
    plt.close(fig)


def loss_summary(workdir: Path, last: int = 50) -> str:
    from facesynth.training import read_log

    records = [r for r in read_log(workdir) if "loss_a" in r][-last:]
    if not records:
        return "no losses logged yet"
    a = sum(r["loss_a"] for r in records) / len(records)
    b = sum(r["loss_b"] for r in records) / len(records)
    return f"loss A {a:.4f}, B {b:.4f} (mean of the last {len(records)} records)"


@contextlib.contextmanager
def cleanup_new_folder(folder: str | os.PathLike):
    """Remove ``folder`` again when the block fails and the folder did not exist before it (a failed start
    of training leaves no empty workdir behind); an existing folder is never touched."""
    folder = Path(folder)
    existed = folder.exists()
    try:
        yield folder
    except BaseException:
        if not existed and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        raise


def check_suffix(path: str | os.PathLike, allowed, flag: str, what: str) -> None:
    """A ConfigError naming ``flag`` when ``path``'s extension is not one of ``allowed`` ('' = a folder)."""
    from facesynth.errors import ConfigError

    suffix = Path(path).suffix.lower()
    if suffix not in allowed:
        names = " or ".join(s if s else "a folder (no extension)" for s in sorted(allowed))
        raise ConfigError(f"{flag} {path}: {what} must be {names}, not {suffix or 'a folder'!r}")

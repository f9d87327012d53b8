"""Argument helpers and small outputs shared by the subcommands."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
from pathlib import Path

__all__ = ["positive_float", "gallery", "loss_summary", "cleanup_new_folder", "check_suffix", "add_provenance_flag",
           "provenance_arg", "provenance_note", "add_compile_flag"]


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


def add_provenance_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-provenance", action="store_true",
                   help="write a plain result: no C2PA manifest, watermark or sidecar (also FACESYNTH_PROVENANCE=0)")


def add_compile_flag(p: argparse.ArgumentParser, what: str, how_long: str) -> None:
    """``--compile``: ``what`` through torch.compile; ``how_long`` the first batch's compilation takes."""
    p.add_argument("--compile", action="store_true",
                   help=f"run {what} through torch.compile (on a GPU with CUDA graphs): the first batch compiles "
                        f"({how_long}), the rest may run faster; meant for a GPU")


def provenance_arg(args) -> bool | None:
    """The library's ``provenance`` argument: False for ``--no-provenance``, else None (on unless the environment
    says FACESYNTH_PROVENANCE=0)."""
    return False if args.no_provenance else None


def provenance_note(*paths: str | os.PathLike) -> str:
    """One short line on what the written results carry, read from their sidecars."""
    from facesynth.provenance import sidecar_path

    sides = [sidecar_path(p) for p in paths]
    if not all(s.is_file() for s in sides):
        return "provenance: off (no manifest, watermark or sidecar)"
    records = [json.loads(s.read_text()) for s in sides]
    manifest = "signed C2PA manifest" if all(r["manifest"] == "embedded" for r in records) else "no C2PA manifest"
    marked = sum(bool(r["watermark"]["embedded"]) for r in records)
    watermark = "watermark" if marked == len(records) else "no watermark" if not marked else \
        f"watermark on {marked} of {len(records)}"
    where = sides[0] if len(sides) == 1 else f"{len(sides)} sidecars (<file>.provenance.json)"
    return f"provenance: {manifest}, {watermark}, hash chain → {where}"


def train_to(trainer, target: int, plot: str | None) -> None:
    """Train ``trainer`` until iteration ``target``, keeping the loss plot ``plot`` (rewritten every 30 s and at the
    end); a trainer already there only redraws the plot. Under torchrun only the main rank prints and plots."""
    from facesynth.notebook import LivePlot, plot_training

    main = trainer.dist.is_main
    if trainer.iteration >= target:
        if main:
            print(f"already at iteration {trainer.iteration} (target {target}); nothing to train")
            if plot and trainer.log_path.is_file():
                plot_training(trainer.workdir, plot)
        return
    if main:
        print(f"training to iteration {target}")
    trainer.train(target, callbacks=[LivePlot(plot, display=False, every=1, seconds=30)] if plot and main else [])

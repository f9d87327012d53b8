"""Loss and learning-rate plots: live while a trainer runs in Jupyter, or from a finished ``log.jsonl``.

The figure is the study's Fig. 7: ``loss_a`` and ``loss_b`` on a log scale (faint per-step values under their
moving averages), the learning rate actually used below, and a vertical marker at every ``data_changed``
event (faces pruned or brought back; after the study's pruning at 200k the loss spiked, then fell lower than
before). Non-finite-loss restores (``nan_restore``) are marked too.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so Jupyter does not show a second
copy at the end of the cell; the live plot shows PNG snapshots through one updatable display handle.
"""
from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from facesynth.training import Callback, moving_average, read_log

__all__ = ["LivePlot", "plot_training", "draw_training", "moving_average"]

LOSS_COLORS = {"loss_a": "tab:blue", "loss_b": "tab:orange"}


def plot_training(workdir_or_log: str | os.PathLike, path: str | os.PathLike | None = None, smooth: int | None = None,
                  title: str | None = None):
    """The loss/LR figure of a training run from its ``log.jsonl`` (or the workdir holding it).

    Args:
        workdir_or_log: a trainer workdir or a ``log.jsonl`` file.
        path: also save the figure there (PNG), creating folders.
        smooth: moving-average window in log records; None picks about 1/40 of the run.
        title: figure title (default: the workdir's name).
    Returns:
        A matplotlib Figure (a notebook shows it when it is a cell's last value).
    """
    from matplotlib.figure import Figure

    src = Path(workdir_or_log)
    records = read_log(src)
    if not records:
        from facesynth.errors import ConfigError
        raise ConfigError(f"{src}: no training log records found (expected a workdir with log.jsonl); train first")
    fig = Figure(figsize=(8, 5))
    draw_training(fig, records, smooth, title or (src.name if src.is_dir() else src.parent.name))
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


class LivePlot(Callback):
    """A ``Callback`` that keeps the loss/LR figure current while ``trainer.train`` runs.

    In a Jupyter kernel the figure is shown once per ``train`` call and updated in place; elsewhere (a script,
    the CLI) nothing is shown and, when ``path`` is given, the PNG there is rewritten instead. Redraws are
    throttled: only once there are at least ``every`` new log records *and* ``seconds`` have passed since the
    last one (a redraw costs about 0.1-0.3 s on a CPU, so fast GPU steps are not slowed down), and at once when
    the data changed. The last state is always drawn (and saved to ``path``) when training ends.

    On each ``train`` call the history is read back from the workdir's ``log.jsonl``, so a resumed run and a
    run continued after pruning show the whole curve, earlier markers included.

    Args:
        path: PNG to save (always at the end of training; during it too when headless).
        every: redraw after at least this many new log records…
        seconds: …and at least this many seconds since the last redraw.
        smooth: moving-average window in records (None = automatic).
        display: True/False forces showing in Jupyter on or off; None shows when running in a kernel.

    Example:
        >>> trainer.train(300, callbacks=[LivePlot("out/loss.png")])      # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike | None = None, every: int = 10, seconds: float = 3.0,
                 smooth: int | None = None, display: bool | None = None, title: str | None = None):
        from matplotlib.figure import Figure

        self.path = Path(path) if path is not None else None
        self.every = max(1, int(every))
        self.seconds = float(seconds)
        self.smooth = smooth
        self.title = title
        self.display = _in_kernel() if display is None else display
        self.records: list[dict] = []
        self.figure = Figure(figsize=(8, 5))
        self.redraws = 0
        self._handle = None
        self._pending = 0
        self._last_draw = 0.0

    @property
    def events(self) -> list[dict]:
        """The records that carry an event (``data_changed``, ``nan_restore``), in order."""
        return [r for r in self.records if "event" in r]

    # --- Callback ------------------------------------------------------------------------------------------
    def on_train_begin(self, trainer) -> None:
        self.records = read_log(trainer.log_path)
        self._handle = None            # each train call shows its figure in the cell that called it
        if self.title is None:
            self.title = Path(trainer.workdir).name
        self.redraw()

    def on_log(self, trainer, record: dict) -> None:
        self.records.append(dict(record))
        self._pending += 1
        if record.get("event") or (self._pending >= self.every and time.monotonic() - self._last_draw >= self.seconds):
            self.redraw()

    def on_train_end(self, trainer) -> None:
        self.redraw()
        if self.path is not None and self.display:     # headless redraws already saved it
            self.save()

    # --- drawing -------------------------------------------------------------------------------------------
    def redraw(self) -> None:
        """Draw the current records; update the notebook display or, headless, the PNG at ``path``."""
        self._pending, self._last_draw = 0, time.monotonic()
        if not self.display and self.path is None:
            return
        draw_training(self.figure, self.records, self.smooth, self.title)
        self.redraws += 1
        if self.display:
            self._show()
        else:
            self.save()

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the figure as PNG (to ``path`` or the one given at construction)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("LivePlot.save needs a path")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.figure.savefig(target, dpi=110)
        return target

    def _show(self) -> None:
        from IPython.display import Image, display

        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=90)
        image = Image(data=buf.getvalue(), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)


def draw_training(fig, records: Sequence[dict], smooth: int | None = None, title: str | None = None) -> None:
    """Clear ``fig`` and draw losses (log scale, top) and learning rate (bottom) of log ``records``.

    Records are ``log.jsonl`` objects: ``iteration``, ``loss_*`` (any number of them; ``loss_a``/``loss_b``
    first), ``lr``, optionally ``event``. Raw values are drawn faint, their moving average bold.
    """
    fig.clear()
    ax_loss, ax_lr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    steps = [r for r in records if "event" not in r or "lr" in r]
    it = np.array([r["iteration"] for r in steps], dtype=np.int64)
    window = smooth or max(1, min(1000, len(steps) // 40))
    keys = sorted({k for r in steps for k in r if k.startswith("loss")}, key=lambda k: (k not in LOSS_COLORS, k))
    for key in keys:
        pairs = [(r["iteration"], r[key]) for r in steps if isinstance(r.get(key), (int, float)) and r[key] > 0]
        if not pairs:
            continue
        x, y = np.array(pairs, dtype=np.float64).T
        color = LOSS_COLORS.get(key)
        line, = ax_loss.plot(x, moving_average(y, window), color=color, lw=1.6,
                             label=f"{key} ({y[-min(len(y), window):].mean():.4f})")
        ax_loss.plot(x, y, color=line.get_color(), lw=0.6, alpha=0.25)
    if keys and ax_loss.lines:
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    ax_loss.grid(True, which="both", alpha=0.25)
    lr = [(r["iteration"], r["lr"]) for r in steps if "lr" in r]
    if lr:
        ax_lr.plot(*np.array(lr, dtype=np.float64).T, color="tab:green", lw=1.2)
        ax_lr.set_ylim(0, max(v for _, v in lr) * 1.15 or 1.0)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("iteration")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax_lr.grid(True, alpha=0.25)
    for r in records:
        event = r.get("event")
        if event == "data_changed":
            for ax in (ax_loss, ax_lr):
                ax.axvline(r["iteration"], color="crimson", ls="--", lw=1.1)
            ax_loss.annotate(_describe(r), (r["iteration"], 0.0), xycoords=("data", "axes fraction"),
                             xytext=(-3, 4), textcoords="offset points", ha="right", va="bottom", rotation=90,
                             fontsize=7, color="crimson")
        elif event == "nan_restore":
            for ax in (ax_loss, ax_lr):
                ax.axvline(r["iteration"], color="grey", ls=":", lw=1.0)
    if len(it):
        ax_lr.set_xlim(left=max(0, int(it.min()) - 1), right=int(it.max()) + 1)
    handles = ax_loss.get_legend_handles_labels()[0]
    if handles:
        ax_loss.legend(loc="upper right", fontsize=8, title=f"moving average of {window}", title_fontsize=7)
    at = f"iteration {int(it.max())}" if len(it) else "no records yet"
    ax_loss.set_title(f"{title + ': ' if title else ''}{at}", fontsize=10)
    fig.tight_layout()


def _describe(record: dict) -> str:
    sides = [w for w in ("a", "b") if f"faces_{w}" in record and f"faces_{w}_before" in record]
    changed = [w for w in sides if record[f"faces_{w}"] != record[f"faces_{w}_before"]] or sides
    parts = [f"{w.upper()} {record[f'faces_{w}_before']}→{record[f'faces_{w}']} faces" for w in changed]
    return "data changed" + (": " + ", ".join(parts) if parts else "")


def _in_kernel() -> bool:
    """True inside a Jupyter/IPython kernel (where ``display`` reaches a frontend), False in scripts."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None

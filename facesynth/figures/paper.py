"""The study's figures and tables, drawn from what notebooks 01-03 wrote.

Each notebook ends by recording its inputs and outputs in ``<OUT>/results.json`` (``save_results``); the
functions here read those records, the trainers' ``log.jsonl`` files and the evaluation JSON, and write every
figure as PNG and PDF and every table as Markdown and CSV. ``paper_figures`` does all of it and, where a
notebook's results are missing, runs that notebook first under papermill (QUICK unless told otherwise).

Figure numbers follow the study: Fig. 6 the swap, Fig. 7 the loss, Fig. 8 the learning rate, Fig. 10 the
animated portraits, Fig. 12 generated faces; Table 1 the swap's average losses, Table 2 FOMM's loss.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from facesynth.errors import ConfigError
from facesynth.fileio import atomic_write_bytes, atomic_write_json
from facesynth.training import moving_average

__all__ = ["STUDY_TABLE1", "STUDY_TABLE2", "save_results", "read_results", "save_figure", "write_table",
           "loss_windows", "fig_swap", "fig_loss", "fig_lr", "fig_fomm_loss", "fig_portraits", "fig_generated",
           "table_swap_loss", "table_fomm", "paper_figures", "find_notebooks", "run_notebook"]

# The study's Table 1: average loss of face A and B at 100k, 200k, 300k and 400k iterations (pruning at 200k).
STUDY_TABLE1 = {"iterations": (100_000, 200_000, 300_000, 400_000),
                "loss_a": (0.0312953, 0.0301418, 0.0298924, 0.0288525),
                "loss_b": (0.0164015, 0.0160740, 0.0153192, 0.0146704)}
# The study's Table 2: the First Order Motion Model's loss.
STUDY_TABLE2 = {"fomm_loss": 0.0431123}

RESULTS_FILE = "results.json"


# --- records the notebooks leave --------------------------------------------------------------------------------

def save_results(out: str | os.PathLike, **entries: Any) -> Path:
    """Merge ``entries`` into ``<out>/results.json`` (paths stored as strings); returns the file.

    Example:
        >>> save_results("work/nb01", a2b="work/nb01/swap_a2b.mp4", iterations=3000)   # doctest: +SKIP
    """
    path = Path(out) / RESULTS_FILE
    record = read_results(out)
    record.update({k: _plain(v) for k, v in entries.items()})
    return atomic_write_json(path, record, indent=2)


def read_results(out: str | os.PathLike) -> dict:
    """``<out>/results.json`` as a dict ({} when there is none); a broken file raises ConfigError."""
    path = Path(out) / RESULTS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a results file ({e}); delete it and run the notebook again") from None


def _plain(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# --- writing ------------------------------------------------------------------------------------------------------

def save_figure(fig, stem: str | os.PathLike, dpi: int = 110) -> list[Path]:
    """Write ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` (atomically) and close it; returns both paths."""
    import matplotlib.pyplot as plt

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=dpi, bbox_inches="tight")
        paths.append(atomic_write_bytes(stem.with_suffix(f".{ext}"), buffer.getvalue()))
    plt.close(fig)
    return paths


def write_table(stem: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence[Any]], title: str,
                notes: Sequence[str] = ()) -> list[Path]:
    """A table as ``<stem>.md`` (title, table, notes) and ``<stem>.csv`` (header and rows); returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    cells = [[_cell(v) for v in row] for row in rows]
    md = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in cells]
    for note in notes:
        md += ["", note]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([[("" if v is None else v) for v in row] for row in rows])
    return [atomic_write_bytes(stem.with_suffix(".md"), ("\n".join(md) + "\n").encode()),
            atomic_write_bytes(stem.with_suffix(".csv"), buffer.getvalue().encode())]


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


# --- face swap: Fig. 6, 7, 8 and Table 1 -------------------------------------------------------------------------

def _records(workdir: str | os.PathLike) -> list[dict]:
    from facesynth.training import read_log

    log = Path(workdir) / "log.jsonl"
    if not log.is_file():
        raise ConfigError(f"{workdir}: no log.jsonl; train first (notebook 01 or `facesynth train-swap`)")
    return read_log(log)


def _events(records: Iterable[dict], event: str = "data_changed") -> list[int]:
    """Iterations of the log records that carry ``event`` (the trainers write ``{"event": "data_changed", …}``)."""
    return [int(r["iteration"]) for r in records if r.get("event") == event]


def fig_loss(workdir: str | os.PathLike, stem: str | os.PathLike, title: str | None = None) -> list[Path]:
    """Fig. 7: loss of face A and face B per iteration (faint) with a moving average (bold), log scale; the
    iterations where the training data changed (pruning) are marked with a dashed line."""
    import matplotlib.pyplot as plt

    records = [r for r in _records(workdir) if "loss_a" in r]
    if not records:
        raise ConfigError(f"{workdir}/log.jsonl has no loss_a records: is it a face-swap run?")
    it = np.array([r["iteration"] for r in records])
    window = max(5, len(records) // 60)
    fig, ax = plt.subplots(figsize=(8, 4))
    for key, colour, label in (("loss_a", "tab:blue", "face A"), ("loss_b", "tab:orange", "face B")):
        values = np.array([r[key] for r in records], dtype=float)
        ax.plot(it, values, color=colour, alpha=0.25, lw=0.6)
        ax.plot(it, moving_average(values, window), color=colour, lw=1.8, label=f"{label} (moving average of {window})")
    for i, at in enumerate(_events(_records(workdir))):
        ax.axvline(at, color="crimson", ls="--", lw=1.2, label="faces pruned" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title or "Face swap: loss of face A and B", loc="left", fontsize=10)
    return save_figure(fig, stem)


def fig_lr(workdir: str | os.PathLike, stem: str | os.PathLike, title: str | None = None) -> list[Path]:
    """Fig. 8: the learning rate the trainer used at each logged iteration."""
    import matplotlib.pyplot as plt

    records = [r for r in _records(workdir) if "lr" in r]
    if not records:
        raise ConfigError(f"{workdir}/log.jsonl has no lr records")
    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.plot([r["iteration"] for r in records], [r["lr"] for r in records], color="tab:green")
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    ax.set_title(title or "Face swap: learning rate", loc="left", fontsize=10)
    return save_figure(fig, stem)


def loss_windows(records: Sequence[dict], parts: int = 4, keys: Sequence[str] = ("loss_a", "loss_b"),
                 last: int | None = None) -> list[dict]:
    """Average of each loss over ``parts`` equal spans of a run: [{"until": it, "from": it0, key: mean, ...}].

    The spans end at ``last * k / parts`` (``last``: the run's final iteration) and each averages the logged
    values after the previous end up to and including its own; the study's 100k/200k/300k/400k are the four
    spans of its 400k-iteration run.
    """
    rows = [r for r in records if all(k in r for k in keys)]
    if not rows:
        raise ConfigError(f"no log records with {', '.join(keys)}")
    last = last or int(max(r["iteration"] for r in rows))
    out = []
    for k in range(1, parts + 1):
        lo, hi = last * (k - 1) / parts, last * k / parts
        span = [r for r in rows if lo < r["iteration"] <= hi]
        out.append({"from": int(lo) + 1, "until": int(hi),
                    **{key: float(np.mean([r[key] for r in span])) if span else None for key in keys}})
    return out


def table_swap_loss(workdir: str | os.PathLike, stem: str | os.PathLike) -> list[Path]:
    """Table 1: average loss of face A and face B over each quarter of the run beside the study's values."""
    records = _records(workdir)
    windows = loss_windows(records)
    config = _swap_config(workdir)
    last = windows[-1]["until"]
    scaled = last != STUDY_TABLE1["iterations"][-1]
    rows = []
    for w, study_it, study_a, study_b in zip(windows, *STUDY_TABLE1.values()):
        rows.append([w["until"], f"{w['from']}-{w['until']}", w["loss_a"], f"{study_a:.7f}", w["loss_b"], f"{study_b:.7f}",
                     f"{study_it // 1000}k"])
    pruned = _events(records)
    notes = [f"Each value is the mean of the logged per-iteration training loss over the span (logged every "
             f"{config.get('log_every', 1)} iteration(s)); the study's columns are its averages at 100k, 200k, 300k "
             f"and 400k iterations.",
             "" if not scaled else f"This run has {last} iterations, not the study's 400,000: its four spans are the "
             f"same fractions (quarters) of the shorter run.",
             f"Loss: {_loss_definition(config)}. The study's model used an L1 loss on 64x64 faces; values of a "
             f"different loss or preset are not on the study's scale.",
             f"Faces were pruned at iteration {', '.join(map(str, pruned))}." if pruned else
             "No faces were pruned in this run."]
    return write_table(stem, ["iteration", "span", "loss A (ours)", "loss A (study)", "loss B (ours)",
                              "loss B (study)", "study at"], rows,
                       f"Table 1: average swap loss of face A and B (preset {config.get('preset_name', '?')})",
                       [n for n in notes if n])


def _swap_config(workdir: str | os.PathLike) -> dict:
    path = Path(workdir) / "config.json"
    try:
        return json.loads(path.read_text()).get("config", {})
    except (OSError, json.JSONDecodeError):
        return {}


def _loss_definition(config: Mapping[str, Any]) -> str:
    terms = [(config.get("l1_weight", 0), "L1"), (config.get("mse_weight", 0), "MSE"),
             (config.get("dssim_weight", 0), "DSSIM")]
    parts = [f"{w:g} x {name}" if w != 1 else name for w, name in terms if w]
    mask = config.get("mask_type") or "the whole crop"
    return (f"{' + '.join(parts) or 'reconstruction loss'} between each decoder's output and the face, in [0, 1] "
            f"pixels, restricted to the {mask} mask" + (f", plus {config['mask_loss_weight']:g} x the mask loss"
                                                         if config.get("mask_loss_weight") else ""))


def _frames_at(video: str | os.PathLike, indices: Sequence[int]) -> list[np.ndarray]:
    from facesynth.media import iter_frames

    wanted, frames = set(indices), {}
    for i, frame in iter_frames(video):
        if i in wanted:
            frames[i] = frame
        if len(frames) == len(wanted):
            break
    return [frames[i] for i in indices if i in frames]


def _count_frames(video: str | os.PathLike) -> int:
    from facesynth.media import probe

    return max(1, probe(video).frame_count - 1)     # the container's estimate, one frame of margin


def _grid(rows: Sequence[tuple[str, Sequence[np.ndarray | None]]], captions: Sequence[str], title: str,
          cell: float = 1.9):
    import matplotlib.pyplot as plt

    cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(cell * cols, cell * len(rows) + 0.6), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            image = images[c] if c < len(images) else None
            if image is not None:
                ax.imshow(image)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
            if r == 0 and c < len(captions):
                ax.set_title(captions[c], fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def fig_swap(nb01: str | os.PathLike, stem: str | os.PathLike, n: int = 5) -> list[Path]:
    """Fig. 6: frames of A and of the A→B swap, the photo of B and its B→A swap.

    B→A is converted here (``convert_image``) when notebook 01 did not write it.
    """
    from facesynth.media import read_image
    from facesynth.swap import convert_image

    nb01 = Path(nb01)
    res = _need(nb01, ("source_a", "source_b", "a2b", "model"), "01_face_swap")
    b2a = Path(res.get("b2a") or nb01 / "swap_b2a.png")
    source_b = Path(res["source_b"])
    if source_b.is_dir():
        from facesynth.media import list_images
        source_b = list_images(source_b)[0]
    if not b2a.is_file():
        convert_image(source_b, b2a, res["model"], direction="b2a", detector=res.get("detector", "auto"))
        save_results(nb01, b2a=b2a)
    total = min(_count_frames(res["source_a"]), _count_frames(res["a2b"]))
    idx = [int(i) for i in np.linspace(0, total - 1, n).round()]
    a, a2b = _frames_at(res["source_a"], idx), _frames_at(res["a2b"], idx)
    blank = [None] * (n - 2)
    rows = [("A", a), ("A→B", a2b), ("B | B→A", [read_image(source_b), read_image(b2a), *blank])]
    captions = [f"frame {i}" for i in idx]
    label = res.get("label", "")
    fig = _grid(rows, captions, f"Face swap: A, A→B (top) and B, B→A (bottom)\n{label}".strip())
    return save_figure(fig, stem)


def _need(folder: Path, keys: Sequence[str], notebook: str) -> dict:
    res = read_results(folder)
    missing = [k for k in keys if not res.get(k)]
    if missing:
        raise ConfigError(f"{folder}/{RESULTS_FILE} lacks {', '.join(missing)}: run notebooks/{notebook}.ipynb "
                          f"with OUT={str(folder)!r} first (or `facesynth figures`, which runs what is missing)")
    return res


# --- reenactment: FOMM loss, Table 2, Fig. 10 --------------------------------------------------------------------

def fig_fomm_loss(nb02: str | os.PathLike, stem: str | os.PathLike) -> list[Path]:
    """The FOMM training losses (the study's FOMM loss graph) of the model notebook 02 trained or fine-tuned."""
    import matplotlib.pyplot as plt

    res = _need(Path(nb02), ("fomm_workdir",), "02_face_reenactment")   # absent with the released weights
    records = [r for r in _records(res["fomm_workdir"]) if "loss_generator_total" in r]
    if not records:
        raise ConfigError(f"{res['fomm_workdir']}/log.jsonl has no FOMM losses")
    it = np.array([r["iteration"] for r in records])
    keys = sorted(k for k in records[-1] if k.startswith("loss_"))
    fig, ax = plt.subplots(figsize=(8, 4))
    window = max(5, len(records) // 60)
    for key in keys:
        values = np.array([r.get(key, np.nan) for r in records], dtype=float)
        line, = ax.plot(it, moving_average(values, window), lw=1.6, label=key.removeprefix("loss_"))
        ax.plot(it, values, color=line.get_color(), alpha=0.2, lw=0.6)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(f"FOMM training losses ({res.get('label_self', 'notebook 02')})", loc="left", fontsize=10)
    return save_figure(fig, stem)


def table_fomm(nb02: str | os.PathLike, stem: str | os.PathLike) -> list[Path]:
    """Table 2: FOMM's reconstruction loss beside the study's 0.0431123, with the definition."""
    res = _need(Path(nb02), ("reconstruction_l1",), "02_face_reenactment")
    rows = [["reconstruction L1 (ours)", res["reconstruction_l1"], res.get("reconstruction_frames"),
             res.get("label_self", "")],
            ["FOMM loss (study)", STUDY_TABLE2["fomm_loss"], None, "released vox-256 checkpoint (the study)"]]
    evaluation = res.get("self_evaluation")
    if evaluation and Path(evaluation).is_file():
        scores = json.loads(Path(evaluation).read_text())
        for column, values in scores.items():
            if isinstance(values, Mapping) and values.get("l1") is not None:
                rows.append([f"self-reenactment L1 of the video: {column}", values["l1"], values.get("frames"),
                             res.get("label_self", "") if column == "model" else "each frame = the source frame"])
    notes = ["Reconstruction L1: every frame of the driving video's face crop is rebuilt from its first frame "
             "with the frame's own key points (absolute motion, FOMM's reconstruction protocol), and the mean "
             "absolute difference to the real frame is taken over all pixels and channels of float frames in "
             "[0, 1], as the official reconstruction script computes it.",
             "The study reports 0.0431123 for the released model on VoxCeleb's test videos. A model trained on the "
             "very video it rebuilds (a QUICK stand-in) scores lower on it without being better: the numbers show "
             "that the pipeline works, not how FOMM generalises.",
             "The video rows are measured on the encoded MP4 result by evaluate_reenactment (frames with a face)."]
    return write_table(stem, ["quantity", "value", "frames", "model"], rows,
                       "Table 2: First Order Motion Model, reconstruction loss", notes)


def fig_portraits(nb02: str | os.PathLike, stem: str | os.PathLike, n: int = 5) -> list[Path]:
    """Fig. 10: the portrait, driving frames, and the animated (lip-synced when it exists) result."""
    from facesynth.media import read_image

    res = _need(Path(nb02), ("source", "driving", "result"), "02_face_reenactment")
    result = res.get("talking") or res["result"]
    total = min(_count_frames(res["driving"]), _count_frames(result))
    idx = [int(i) for i in np.linspace(0, total - 1, n).round()]
    rows = [("source", [read_image(res["source"])] + [None] * (n - 1)),
            ("driving", _frames_at(res["driving"], idx)),
            ("lip-synced result" if res.get("talking") else "result", _frames_at(result, idx))]
    title = f"Reenactment: source | driving | result\n{res.get('label', '')}".strip()
    return save_figure(_grid(rows, [f"frame {i}" for i in idx], title), stem)


# --- generation: Fig. 12 ---------------------------------------------------------------------------------------------

def fig_generated(nb03: str | os.PathLike, stem: str | os.PathLike, n: int = 12, cols: int = 6) -> list[Path]:
    """Fig. 12: generated faces (the first ``n`` seeds notebook 03 wrote)."""
    from facesynth.media import list_images, read_image

    res = _need(Path(nb03), ("generated",), "03_face_generation")
    files = list_images(res["generated"])[:n]
    if not files:
        raise ConfigError(f"{res['generated']}: no generated images; run notebook 03 again")
    images = [read_image(f) for f in files]
    rows = [(" ", images[i:i + cols]) for i in range(0, len(images), cols)]
    title = f"Generated faces: {files[0].stem} to {files[-1].stem}\n{res.get('label', '')}".strip()
    return save_figure(_grid(rows, [], title, cell=1.6), stem)


# --- running what is missing -------------------------------------------------------------------------------------

NOTEBOOKS = {"nb01": "01_face_swap", "nb02": "02_face_reenactment", "nb03": "03_face_generation"}


def find_notebooks(folder: str | os.PathLike | None = None) -> Path:
    """The repository's ``notebooks/`` folder (or ``folder``); ConfigError when it is not there."""
    candidates = [Path(folder)] if folder else [Path(__file__).resolve().parents[2] / "notebooks",
                                                 Path.cwd() / "notebooks"]
    for c in candidates:
        if (c / "01_face_swap.ipynb").is_file():
            return c
    raise ConfigError(f"notebooks not found in {', '.join(map(str, candidates))}: run from a clone of the "
                      f"repository (git clone …; pip install -e .) or pass the notebooks folder")


def run_notebook(name: str, out: str | os.PathLike, parameters: Mapping[str, Any], notebooks: Path,
                 executed: str | os.PathLike | None = None) -> Path:
    """Execute ``notebooks/<name>.ipynb`` with papermill (``parameters`` injected); returns the executed copy."""
    try:
        import papermill as pm
    except ImportError:
        raise ConfigError("papermill is needed to run notebooks: pip install 'facesynth[notebooks]'") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    executed = Path(executed or out / f"{name}.executed.ipynb")
    executed.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(notebooks / f"{name}.ipynb"), str(executed), parameters=dict(parameters),
                        cwd=str(out), progress_bar=False)
    return executed


def paper_figures(work: str | os.PathLike = "work", out: str | os.PathLike = "work/figures", quick: bool = True,
                  run_missing: bool = True, notebooks: str | os.PathLike | None = None,
                  pruning: Mapping[str, Any] | None = None, detector: str = "auto") -> dict:
    """Every figure and table of the study from ``<work>/nb01``, ``nb02`` and ``nb03``, written to ``out``.

    Args:
        work: the folder holding the notebooks' OUT folders (``nb01``, ``nb02``, ``nb03``, as their defaults).
        out: where the PNG/PDF figures and Markdown/CSV tables go (and ``figures.json``, the list).
        quick: the notebooks' QUICK setting when one has to be run, and the pruning experiment's size.
        run_missing: run a notebook (papermill) whose ``results.json`` is missing; False: raise instead.
        notebooks: the notebooks folder (default: the repository's).
        pruning: keyword arguments for ``pruning_experiment`` (None: its QUICK or full defaults); ``False``-y
            ``{"skip": True}`` leaves the experiment out.
        detector: face detector for notebooks run here and the pruning experiment.
    Returns:
        {"files": {name: [paths]}, "settings": {...}, "ran": [notebooks run here]}; also written to
        ``<out>/figures.json``.
    """
    work, out = Path(work), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ran = []
    for key, name in NOTEBOOKS.items():
        folder = work / key
        if not read_results(folder):
            if not run_missing:
                raise ConfigError(f"{folder}: no {RESULTS_FILE}; run notebooks/{name}.ipynb with OUT={str(folder)!r}")
            run_notebook(name, folder, {"QUICK": quick, "OUT": str(folder.resolve()), "DETECTOR": detector},
                         find_notebooks(notebooks))
            ran.append(name)
    files: dict[str, list[str]] = {}

    def keep(name: str, paths: Sequence[Path]) -> None:
        files[name] = [str(p) for p in paths]

    swap = read_results(work / "nb01")
    keep("fig06_swap", fig_swap(work / "nb01", out / "fig06_swap"))
    keep("fig07_loss", fig_loss(swap["model"], out / "fig07_loss",
                                f"Face swap: loss of face A and B ({swap.get('label', '')})"))
    keep("fig08_lr", fig_lr(swap["model"], out / "fig08_lr", f"Face swap: learning rate ({swap.get('label', '')})"))
    keep("table1_swap_loss", table_swap_loss(swap["model"], out / "table1_swap_loss"))
    if read_results(work / "nb02").get("fomm_workdir"):                # trained here, not the released weights
        keep("fig09_fomm_loss", fig_fomm_loss(work / "nb02", out / "fig09_fomm_loss"))
    keep("table2_fomm", table_fomm(work / "nb02", out / "table2_fomm"))
    keep("fig10_portraits", fig_portraits(work / "nb02", out / "fig10_portraits"))
    keep("fig12_generated", fig_generated(work / "nb03", out / "fig12_generated"))
    settings: dict[str, Any] = {"quick": quick, "work": str(work), "detector": detector,
                                "swap": {k: swap.get(k) for k in ("label", "preset", "iterations", "prune_at")}}
    options = dict(pruning or {})
    if not options.pop("skip", False):
        from facesynth.figures.pruning import plot_pruning, pruning_experiment, write_pruning_table

        result = pruning_experiment(**_pruning_inputs(work / "nb01", work / "pruning", swap, detector),
                                    **(_PRUNING_QUICK if quick else _PRUNING_FULL), **options)
        keep("table3_pruning", write_pruning_table(result, out, stem="table3_pruning"))
        keep("fig_pruning", plot_pruning(result, out / "fig_pruning"))
        settings["pruning"] = result.settings if hasattr(result, "settings") else {}
        settings["pruning_verdict"] = getattr(result, "verdict", "")
    summary = {"files": files, "settings": settings, "ran": ran}
    atomic_write_json(out / "figures.json", _plain(summary), indent=2)
    return summary


# QUICK: pruning_experiment's defaults (shared 1000 + 250 per arm, two seeds; about 7 minutes on 2 CPU cores).
# Full, for a GPU: the study's model, branching at 100k iterations, three seeds, the whole video evaluated.
_PRUNING_QUICK: dict[str, Any] = {}
_PRUNING_FULL: dict[str, Any] = {"preset": "paper", "shared_iterations": 100_000, "arm_iterations": 50_000,
                                 "seeds": (0, 1, 2), "evaluate_frames": None}


def _pruning_inputs(nb01: Path, workdir: Path, swap: Mapping[str, Any], detector: str) -> dict:
    """The pruning experiment's face sets: notebook 01's A and B, copied with every face active again."""
    import shutil

    from facesynth.extract import FaceSet

    faces = {}
    for name in ("A", "B"):
        copy = workdir / "faces" / name
        if not copy.is_dir():
            shutil.copytree(nb01 / name, copy)
            fs = FaceSet.open(copy)
            excluded = [f.id for f in fs if f.excluded]
            if excluded:
                fs.include(excluded)
        faces[name] = copy
    return {"faces_a": faces["A"], "faces_b": faces["B"], "workdir": workdir, "video": swap.get("source_a"),
            "detector": detector}

"""table3_pruning and fig_pruning: the study's pruning finding, tested as an experiment.

The study trained a faceswap/DeepFaceLab autoencoder and found that removing the frames that train badly
(frontal, sharp, slow frames train best) at 200k iterations spiked and then lowered the loss. Here, from one
shared checkpoint, training continues in three arms:

- ``all``: every training face;
- ``quality``: without the ``fraction`` of faces that score worst on pose (``|yaw|``, ``|pitch|``), blur (low
  sharpness) and motion (landmark displacement since the neighbouring sampled frame, over the face size);
- ``loss``: without as many faces, those with the highest running training loss of the shared run (the rule
  ``prune(worst_loss=…)`` applies, as the demo does).

Every arm runs once per seed. A training loss falls when hard faces leave the average whether or not the model
got better, so the comparison that decides is on faces no arm trains on: one face in ``holdout_every`` of A is
held out from the start, and A's decoder reconstructs them, at the end of each run (``heldout_l1``) and every
1/20 of an arm's iterations while training (``heldout.jsonl``; their mean over the last quarter of the arm,
``heldout_l1_late``, is what the verdict compares: one checkpoint is noisier than the optimiser's recent path).
When a video is given, each run also converts it A → B and the swap is evaluated (identity, pose, expression,
stability).

Workdir layout::

    experiment.json          the settings (all but the seeds must match to reuse the folder)
    A/ B/                    the face sets trained on (A without its held-out faces)
    heldout/                 A with only the held-out faces active
    shared/                  the shared run (a SwapTrainer workdir, plus heldout.jsonl)
    <arm>_s<seed>/           one branch: the shared checkpoint and logs, its own A (pruned) and B, result.json,
                             swap_a2b.mp4 and evaluation_swap.json
    clip.mp4                 the evaluated prefix of the video (``evaluate_frames``)
    pruning.json             the PruningResult

Everything resumes: a finished run keeps its ``result.json``, an interrupted one its trainer's checkpoint, and
a ``pruning.json`` with the same settings is returned as it is.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from facesynth.errors import ConfigError
from facesynth.extract.faceset import META_FILE, FaceSet
from facesynth.fileio import atomic_write_bytes, atomic_write_json
from facesynth.gpu import seed_everything
from facesynth.swap.config import SwapConfig
from facesynth.swap.convert import convert_video
from facesynth.swap.data import FaceData
from facesynth.swap.losses import masked_reconstruction_loss
from facesynth.swap.prune import prune, rank_faces
from facesynth.swap.train import SwapTrainer, load_swap_model
from facesynth.training import Callback, moving_average, read_log

__all__ = ["pruning_experiment", "PruningResult", "write_pruning_table", "plot_pruning", "ARMS", "QUALITY_WEIGHTS",
           "SWAP_METRICS", "DEFINITIONS"]

ARMS = ("all", "quality", "loss")
ARM_LABELS = {"all": "all frames", "quality": "without worst pose/blur/motion", "loss": "without highest loss"}
# pose counts once, as blur and motion do: its two angles share one weight
QUALITY_WEIGHTS = {"yaw": 0.5, "pitch": 0.5, "blur": 1.0, "motion": 1.0}
SWAP_METRICS = ("success_rate", "id_to_target", "pose_error_deg", "expression_error", "jitter", "flicker", "face_rate")
RUN_METRICS = ("heldout_l1_late", "heldout_l1", "heldout_loss", "loss_a", "loss_b") + SWAP_METRICS
VERDICT_METRIC = "heldout_l1_late"
RESULT_FILE = "pruning.json"
EXPERIMENT_FILE = "experiment.json"
RUN_RESULT = "result.json"
BRANCH_FILE = "branch.json"
HELDOUT_LOG = "heldout.jsonl"
SHARED_FILES = ("config.json", "checkpoint.pt", "backup.pt", "log.jsonl", HELDOUT_LOG)
PROBES_PER_ARM = 20          # held-out measurements during an arm (and as often during the shared run)


def _definitions() -> dict[str, str]:
    from facesynth.evaluate.report import DEFINITIONS as SWAP_DEFINITIONS

    return {
        "heldout_l1": "mean |A decoder(x) − x| over the held-out faces of A (never trained on by any arm), with "
                      "prediction and target multiplied by the face mask as the trainer does, averaged over "
                      "channels and pixels of the crop at the network's resolution, images in [0, 1], no "
                      "augmentation, of the run's final weights; lower is better",
        "heldout_l1_late": f"heldout_l1 of the weights being trained, measured every 1/{PROBES_PER_ARM} of the "
                           f"arm's iterations and averaged over the last quarter of the arm: less sensitive to "
                           f"where the optimiser happened to stop; the verdict compares this",
        "heldout_loss": "the trainer's loss (its DSSIM/L1/MSE weights and the mask loss) on the held-out faces, "
                        "no augmentation; on the scale of loss_a",
        "loss_a": "training loss of A (augmented batches) averaged over the last tenth of the arm's iterations; "
                  "the study's measure, which falls when hard faces are removed even if nothing improved",
        "loss_b": "training loss of B, averaged likewise",
        "mean ± std": "over seeds; std is the sample standard deviation (n − 1), the seed spread",
        **{k: SWAP_DEFINITIONS[k] for k in SWAP_METRICS},
    }


DEFINITIONS = _definitions()


@dataclass
class PruningResult:
    """What ``pruning_experiment`` measured; ``to_dict``/``from_dict`` round-trip it through JSON.

    ``runs[arm][seed]`` holds one run's metrics (``RUN_METRICS`` plus timings), ``summary[arm][metric]`` their
    ``mean``, ``std`` and ``n`` over seeds, ``baseline`` the shared checkpoint's held-out loss and final
    training losses. ``excluded[arm]`` lists the A face ids the arm left out; ``heldout_ids`` the faces no run
    trained on. ``quality_loss_spearman`` is the rank correlation, over the training faces, between the quality
    badness and the shared run's per-face loss (does the study's heuristic find the faces that train badly?).
    """
    settings: dict[str, Any]
    heldout_ids: list[int]
    training_faces: int
    excluded: dict[str, list[int]]
    quality_loss_spearman: float
    baseline: dict[str, float]
    runs: dict[str, dict[str, dict[str, float]]]
    summary: dict[str, dict[str, dict[str, float]]]
    logs: dict[str, Any]
    timings: dict[str, float]
    verdict: str
    definitions: dict[str, str]
    workdir: str

    def to_dict(self) -> dict[str, Any]:
        from facesynth.evaluate.report import jsonable

        return jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PruningResult":
        known = {f.name for f in dataclasses.fields(cls)}
        missing = known - set(d)
        if missing:
            raise ConfigError(f"not a pruning result (missing {', '.join(sorted(missing))})")
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PruningResult":
        """Read a ``pruning.json`` (or the workdir holding it)."""
        p = Path(path)
        p = p / RESULT_FILE if p.is_dir() else p
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{p}: cannot read a pruning result ({e}); run pruning_experiment first") from None


def pruning_experiment(faces_a: str | os.PathLike, faces_b: str | os.PathLike, workdir: str | os.PathLike, *,
                       video: str | os.PathLike | None = None,   # A's video to convert A → B and evaluate
                       preset: str | SwapConfig = "quick",        # swap preset name or a SwapConfig
                       shared_iterations: int = 1000,             # the shared run, from scratch
                       arm_iterations: int = 250,                 # each arm continues this many more
                       fraction: float = 0.1,                     # of the training faces the pruned arms drop
                       seeds: Sequence[int] = (0, 1),             # one run per arm and seed
                       holdout_every: int = 5,                    # one A face in this many is held out
                       evaluate_frames: int | None = 30,          # evaluate this prefix of the video (None: all)
                       detector: str = "dlib",                    # landmarks for conversion and evaluation
                       device: str = "auto",
                       evaluate: bool = True,                     # convert and evaluate the swap (needs video)
                       progress: bool | None = None) -> PruningResult:
    """Run the three-arm pruning experiment in ``workdir`` (see the module docstring) and save ``pruning.json``.

    The defaults are the notebook's QUICK run: on the demo's face sets (the talking head, all 120 frames, and the
    astronaut photo, 128 px) it takes about 7 minutes on 2 CPU cores (0.145 s per iteration, 10 s to evaluate a
    run on 30 frames); 1500 + 750 iterations take about 16.

    Args:
        faces_a, faces_b: face sets (``extract_faces``) of the person in the video and of the one swapped in.
            They are copied; the originals are never changed. Faces already excluded in A stay out everywhere.
        video: A's video; with ``evaluate`` every run converts it (or its first ``evaluate_frames`` frames).
    Returns:
        The PruningResult (also in ``workdir/pruning.json``).
    Raises:
        ConfigError: a fraction outside (0, 1), no seeds, too few faces to hold some out and prune some, or a
            workdir holding an experiment with other settings.

    Example:
        >>> r = pruning_experiment("work/A", "work/B", "work/pruning", video="a.mp4")   # doctest: +SKIP
        >>> print(r.verdict)                                                               # doctest: +SKIP
    """
    start = time.time()
    config = SwapConfig.preset(preset) if isinstance(preset, str) else preset
    settings = _settings(faces_a, faces_b, video, config, shared_iterations, arm_iterations, fraction, seeds,
                         holdout_every, evaluate_frames, detector, evaluate)
    workdir = Path(workdir)
    if (workdir / RESULT_FILE).is_file():
        done = PruningResult.load(workdir)
        if done.settings == settings:
            return done
    _check_faces(faces_a, holdout_every, fraction)
    _claim_workdir(workdir, settings)
    heldout_ids = _prepare_faces(Path(faces_a), Path(faces_b), workdir, holdout_every)

    plan = _Plan(workdir, config, shared_iterations, arm_iterations, device, progress)
    shared_dir = workdir / "shared"
    plan.train(shared_dir, workdir, shared_iterations)
    excluded, spearman = _select(workdir / "A", fraction)
    baseline = {**_late_heldout(shared_dir, 0, shared_iterations), **_heldout(shared_dir, workdir / "heldout", device),
                **_final_losses(shared_dir, 0, shared_iterations)}

    evaluator = _SwapEvaluator(video, evaluate_frames, workdir, detector, device) if settings["evaluate"] else None
    runs = {arm: {str(seed): _run(plan, arm, seed, excluded[arm], evaluator) for seed in settings["seeds"]}
            for arm in ARMS}
    summary = {arm: {m: _mean_std([runs[arm][s].get(m) for s in runs[arm]]) for m in RUN_METRICS} for arm in ARMS}
    result = PruningResult(
        settings=settings, heldout_ids=heldout_ids, training_faces=len(FaceSet.open(workdir / "A").active()),
        excluded=excluded, quality_loss_spearman=spearman, baseline=baseline, runs=runs, summary=summary,
        logs={"shared": str(shared_dir / "log.jsonl"),
              **{arm: {str(s): str(_run_dir(workdir, arm, s) / "log.jsonl") for s in settings["seeds"]}
                 for arm in ARMS}},
        timings={"shared_seconds": _train_seconds(shared_dir, 0, shared_iterations),
                 "arms_seconds": round(sum(r["train_seconds"] for a in runs.values() for r in a.values()), 1),
                 "evaluation_seconds": round(sum(r.get("eval_seconds", 0.0) for a in runs.values()
                                                 for r in a.values()), 1),
                 "wall_seconds_this_call": round(time.time() - start, 1)},
        verdict=_verdict(summary, baseline, settings["seeds"]), definitions=DEFINITIONS, workdir=str(workdir))
    atomic_write_json(workdir / RESULT_FILE, result.to_dict(), indent=2)
    return PruningResult.load(workdir)       # exactly what a later call returns (NaN as None)


def write_pruning_table(result: PruningResult, out_dir: str | os.PathLike, stem: str = "table3_pruning"
                        ) -> list[Path]:
    """Write ``<stem>.md`` (table, definitions, settings, verdict) and ``<stem>.csv`` (one row per arm and seed,
    then mean and std rows per arm, then the shared checkpoint); returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path = out / f"{stem}.md", out / f"{stem}.csv"
    md.write_text(_markdown(result))
    columns = ["arm", "seed", "faces_excluded", *RUN_METRICS, "train_seconds", "eval_seconds"]
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for arm in ARMS:
            n_ex = len(result.excluded[arm])
            for seed, run in result.runs[arm].items():
                w.writerow([arm, seed, n_ex, *(_csv(run.get(c)) for c in columns[3:])])
            for stat in ("mean", "std"):
                w.writerow([arm, stat, n_ex, *(_csv(result.summary[arm][m][stat]) for m in RUN_METRICS), "", ""])
        w.writerow(["shared", f"iteration {result.settings['shared_iterations']}", "",
                    *(_csv(result.baseline.get(m)) for m in RUN_METRICS), "", ""])
    return [md, csv_path]


def plot_pruning(result: PruningResult, path_stem: str | os.PathLike) -> list[Path]:
    """fig_pruning: (left) the arms' training loss A, moving average, log scale, the shared run drawn once;
    (right) held-out L1 of A around the branch, as probed during training, with the window the verdict averages.

    Each arm's line is its mean over seeds, the seeds' range shaded. Writes ``<path_stem>.png`` and ``.pdf``;
    returns both paths.
    """
    from matplotlib.figure import Figure

    s = result.settings
    branch, length = s["shared_iterations"], s["arm_iterations"]
    window = max(1, min(1000, (branch + length) // 40))
    fig = Figure(figsize=(11, 5.2))
    ax_loss, ax_held = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    shared = [r for r in read_log(result.logs["shared"]) if "loss_a" in r and r["iteration"] <= branch]
    it, loss = _series(shared, "loss_a")
    ax_loss.plot(it, moving_average(loss, window), color="black", lw=1.4, label=f"shared run (0–{branch})")
    it, held = _series([r for r in read_log(Path(result.logs["shared"]).with_name(HELDOUT_LOG))
                        if branch - length <= r["iteration"] <= branch], "heldout_l1")
    ax_held.plot(it, held, color="black", lw=1.4, marker=".", ms=3)
    for arm, color in zip(ARMS, ("tab:blue", "tab:orange", "tab:green")):
        logs = [Path(p) for p in result.logs[arm].values()]
        m = result.summary[arm][VERDICT_METRIC]
        dropped = f", −{len(result.excluded[arm])} faces" if result.excluded[arm] else ""
        label = f"{ARM_LABELS[arm]}{dropped}: held-out L1 {_pm(m['mean'], m['std'], 4)}"
        curves = [_branch_curve(read_log(p), "loss_a", branch, window) for p in logs]
        _draw_seeds(ax_loss, curves, color, label)
        _draw_seeds(ax_held, [_branch_curve(read_log(p.with_name(HELDOUT_LOG)), "heldout_l1", branch, 1)
                              for p in logs], color, None, marker=".")
    for ax in (ax_loss, ax_held):
        ax.axvline(branch, color="crimson", ls="--", lw=1.1)
        ax.set_xlabel("iteration")
        ax.grid(True, which="both", alpha=0.25)
    ax_loss.annotate(f"branch: {len(result.excluded['loss'])} of {result.training_faces} faces pruned",
                     (branch, 1.0), xycoords=("data", "axes fraction"), xytext=(-3, -4), textcoords="offset points",
                     ha="right", va="top", rotation=90, fontsize=7, color="crimson")
    ax_held.axvspan(branch + length - max(1, length // 4), branch + length, color="grey", alpha=0.15, lw=0,
                    label="averaged for the verdict")
    if ax_loss.lines:
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel(f"training loss A (moving average of {window})")
    ax_held.set_ylabel("held-out L1 of A (never trained on)")
    handles = [h for ax in (ax_loss, ax_held) for h in ax.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    seeds = ", ".join(str(x) for x in s["seeds"])
    fig.suptitle(f"Pruning at iteration {branch}: {s['config']['preset_name']} preset, {branch} shared + {length} "
                 f"iterations per arm, seeds {seeds}", fontsize=10)
    fig.tight_layout(rect=(0, 0.13, 1, 1))        # the legend goes below both panels
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")]
    fig.savefig(paths[0], dpi=130)
    fig.savefig(paths[1])
    return paths


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(r["iteration"], r[key]) for r in records if key in r]
    return tuple(np.array(pairs, np.float64).T) if pairs else (np.zeros(0), np.zeros(0))


def _branch_curve(records: list[dict], key: str, branch: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Iterations from the branch on and the moving average of ``key``, averaged over the whole log so the line
    continues the shared curve instead of restarting its window at the branch."""
    it, values = _series(records, key)
    before = it[it <= branch]
    keep = it >= (before.max() if len(before) else branch)       # from the last point the shared run has
    return it[keep], moving_average(values, window)[keep]


def _draw_seeds(ax, curves: list[tuple[np.ndarray, np.ndarray]], color: str, label: str | None, **style) -> None:
    """The mean of the seeds' curves, their range shaded."""
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return
    n = min(len(c[0]) for c in curves)
    it, ys = curves[0][0][:n], np.stack([c[1][:n] for c in curves])
    ax.plot(it, ys.mean(0), color=color, lw=1.6, label=label, ms=3, **style)
    if len(curves) > 1:
        ax.fill_between(it, ys.min(0), ys.max(0), color=color, alpha=0.2, lw=0)


# --- set-up ----------------------------------------------------------------------------------------------
def _settings(faces_a, faces_b, video, config: SwapConfig, shared_iterations: int, arm_iterations: int,
              fraction: float, seeds: Sequence[int], holdout_every: int, evaluate_frames: int | None, detector: str,
              evaluate: bool) -> dict[str, Any]:
    if not 0 < fraction < 1:
        raise ConfigError(f"fraction is the share of training faces the pruned arms drop, in (0, 1); got {fraction}")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be one or more distinct integers (two or more give a spread), got {seeds}")
    for name, value in (("shared_iterations", shared_iterations), ("arm_iterations", arm_iterations)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive number of iterations, got {value!r}")
    if not isinstance(holdout_every, int) or holdout_every < 2:
        raise ConfigError(f"holdout_every must be an integer ≥ 2 (one face in that many is held out), "
                          f"got {holdout_every!r}")
    if evaluate_frames is not None and (not isinstance(evaluate_frames, int) or evaluate_frames < 3):
        raise ConfigError(f"evaluate_frames must be None (the whole video) or ≥ 3 frames (stability needs three), "
                          f"got {evaluate_frames!r}")
    settings = {
        "faces_a": str(Path(faces_a).resolve()), "faces_b": str(Path(faces_b).resolve()),
        "video": str(Path(video).resolve()) if video is not None else None, "config": config.to_dict(),
        "shared_iterations": shared_iterations, "arm_iterations": arm_iterations, "fraction": float(fraction),
        "seeds": seeds, "holdout_every": holdout_every, "quality_weights": QUALITY_WEIGHTS,
        "evaluate": bool(evaluate and video is not None),
        "evaluate_frames": evaluate_frames if evaluate and video is not None else None,
        "detector": detector,
    }
    return json.loads(json.dumps(settings))          # as it reads back from JSON (tuples become lists)


def _check_faces(faces_a, holdout_every: int, fraction: float) -> None:
    """ConfigError unless A has faces to hold out, to prune and to keep."""
    active = len(FaceSet.open(faces_a).active())
    held = len(range(holdout_every // 2, active, holdout_every))
    train = active - held
    pruned = math.floor(fraction * train + 1e-9)
    if held < 1 or pruned < 1 or pruned >= train:
        raise ConfigError(f"{faces_a}: {active} active faces; holding out one in {holdout_every} keeps {held} and "
                          f"leaves {train} to train on, of which fraction {fraction} is {pruned} to prune: need at "
                          f"least one of each. Extract more faces (a higher fps), or raise fraction")


def _claim_workdir(workdir: Path, settings: dict[str, Any]) -> None:
    """Write ``experiment.json``, or check that the folder's experiment has the same settings (seeds may differ)."""
    path = workdir / EXPERIMENT_FILE
    fixed = {k: v for k, v in settings.items() if k != "seeds"}
    if path.is_file():
        saved = json.loads(path.read_text())
        changed = sorted(k for k in fixed.keys() | saved.keys() if fixed.get(k) != saved.get(k))
        if changed:
            raise ConfigError(f"{workdir} holds a pruning experiment with other settings ({', '.join(changed)}); "
                              f"use a new workdir, or the same settings (only seeds may change)")
        return
    atomic_write_json(path, fixed, indent=2)


def _prepare_faces(faces_a: Path, faces_b: Path, workdir: Path, holdout_every: int) -> list[int]:
    """Copy A and B into the workdir, A without its held-out faces, and ``heldout/`` with only them; their ids."""
    heldout = workdir / "heldout"
    if not (heldout / META_FILE).is_file():          # written last: its presence means A and B are complete
        active = [f.id for f in FaceSet.open(faces_a).active()]
        ids = active[holdout_every // 2::holdout_every]     # the middle face of every block, spread over the video
        _copy_faceset(faces_b, workdir / "B")
        FaceSet.open(_copy_faceset(faces_a, workdir / "A")).exclude(ids)
        tmp = _copy_faceset(faces_a, workdir / ".heldout.tmp")
        FaceSet.open(tmp).exclude(set(active) - set(ids))
        os.replace(tmp, heldout)
    return [f.id for f in FaceSet.open(heldout).active()]


def _copy_faceset(src: Path, dst: Path) -> Path:
    """A copy of a face set (pixels hard-linked where possible, metadata copied); replaces ``dst``."""
    def link_or_copy(s: str, d: str) -> None:
        if Path(s).name == META_FILE:
            shutil.copy2(s, d)
            return
        try:
            os.link(s, d)        # crops and masks are never rewritten in place, so sharing them is safe
        except OSError:
            shutil.copy2(s, d)

    tmp = dst.with_name(f".{dst.name}.copy")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, copy_function=link_or_copy)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst


def _select(faces_a: Path, fraction: float) -> tuple[dict[str, list[int]], float]:
    """The faces each arm excludes, from the shared run's A face set, and the quality–loss rank correlation."""
    from scipy.stats import spearmanr

    fs = FaceSet.open(faces_a)
    active = fs.active()
    count = math.floor(fraction * len(active) + 1e-9)            # prune's own rounding
    quality = rank_faces(fs, by=tuple(QUALITY_WEIGHTS), weights=QUALITY_WEIGHTS)
    by_loss = prune(fs, worst_loss=fraction, dry_run=True)
    if len(by_loss) < count:
        raise ConfigError(f"{faces_a}: only {sum('loss' in f.scores for f in active)} of {len(active)} training "
                          f"faces have a loss after the shared run; train it longer (shared_iterations) so every "
                          f"face is drawn")
    losses = {f.id: f.scores["loss"] for f in active if "loss" in f.scores}
    badness = dict(quality)
    rho = float(spearmanr([badness[i] for i in losses], list(losses.values()))[0]) if len(losses) > 2 else math.nan
    return {"all": [], "quality": sorted(fid for fid, _ in quality[:count]), "loss": by_loss}, rho


# --- one run ---------------------------------------------------------------------------------------------
def _run_dir(workdir: Path, arm: str, seed: int) -> Path:
    return workdir / f"{arm}_s{seed}"


@dataclass
class _Plan:
    """What every training run of one experiment shares."""
    workdir: Path
    config: SwapConfig
    shared_iterations: int
    arm_iterations: int
    device: str
    progress: bool | None

    def train(self, run_dir: Path, faces: Path, iterations: int, seed: int | None = None) -> None:
        """Train (or resume) ``run_dir`` on ``faces/A`` and ``faces/B`` until ``iterations``, probing the held-out
        faces.

        ``seed``: a branch; while it still stands at the shared iteration it is reseeded. The checkpoint restored
        the shared run's RNG states, which would make every seed draw the same batches; a branch interrupted
        after its first checkpoint resumes that checkpoint's states instead, as it should.
        """
        trainer = SwapTrainer(self.config, faces / "A", faces / "B", run_dir, device=self.device,
                              progress=self.progress)
        if seed is not None and trainer.iteration == self.shared_iterations:
            # a stream of its own: seed 0 must not replay the shared run's draws from iteration 0
            stream = int(np.random.SeedSequence([seed, self.shared_iterations]).generate_state(1)[0])
            seed_everything(stream)
            trainer.generator.manual_seed(stream)
        probe = _HeldoutProbe(self.workdir / "heldout", max(1, self.arm_iterations // PROBES_PER_ARM))
        trainer.train(iterations, callbacks=[probe])


def _run(plan: _Plan, arm: str, seed: int, excluded: list[int], evaluator: "_SwapEvaluator | None"
         ) -> dict[str, float]:
    """Branch one arm off the shared checkpoint (once), train it on, measure it; cached in ``result.json``."""
    run_dir, shared, length = _run_dir(plan.workdir, arm, seed), plan.workdir / "shared", plan.arm_iterations
    if (run_dir / RUN_RESULT).is_file():
        return json.loads((run_dir / RUN_RESULT).read_text())
    if not (run_dir / BRANCH_FILE).is_file():
        tmp = run_dir.with_name(f".{run_dir.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in SHARED_FILES:
            if (shared / name).is_file():
                shutil.copy2(shared / name, tmp / name)
        _copy_faceset(plan.workdir / "B", tmp / "B")
        a = FaceSet.open(_copy_faceset(plan.workdir / "A", tmp / "A"))
        if excluded:
            a.exclude(excluded)
        atomic_write_json(tmp / BRANCH_FILE, {"arm": arm, "seed": seed, "excluded": excluded,
                                              "iteration": plan.shared_iterations})
        shutil.rmtree(run_dir, ignore_errors=True)
        os.replace(tmp, run_dir)
    plan.train(run_dir, run_dir, plan.shared_iterations + length, seed)
    metrics = {"train_seconds": _train_seconds(run_dir, plan.shared_iterations, length),
               **_late_heldout(run_dir, plan.shared_iterations, length),
               **_heldout(run_dir, plan.workdir / "heldout", plan.device),
               **_final_losses(run_dir, plan.shared_iterations, length)}
    if evaluator is not None:
        t = time.time()
        metrics |= evaluator(run_dir)
        metrics["eval_seconds"] = round(time.time() - t, 1)
    atomic_write_json(run_dir / RUN_RESULT, metrics, indent=2)
    return metrics


def _heldout(model_dir: Path, heldout: Path, device: str) -> dict[str, float]:
    """``heldout_l1`` and ``heldout_loss`` (see DEFINITIONS) of the final weights in ``model_dir``."""
    model = load_swap_model(model_dir, device=device)
    return _heldout_losses(model, FaceData(heldout, model.config.resolution, model.config.mask_type))


def _heldout_losses(model, data) -> dict[str, float]:
    """Held-out L1 and loss of a SwapModel on the faces of a FaceData, without augmentation."""
    cfg, dev, was_training = model.config, next(model.parameters()).device, model.training
    l1, loss = [], []
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(data), 16):
                items = [data.load(i) for i in range(start, min(len(data), start + 16))]
                x, m, p = (torch.from_numpy(np.stack([it[k] for it in items])).float().div(255).to(dev)
                           for k in range(3))
                x, m, p = x.permute(0, 3, 1, 2), m[:, None], p[:, None]
                rgb, pmask = model(x, "a")
                mask = m if cfg.mask_type else None          # as SwapTrainer.train_step masks
                l1.append(masked_reconstruction_loss(rgb.float(), x, mask, 1.0, 0.0, 0.0))
                full = masked_reconstruction_loss(rgb.float(), x, mask, cfg.l1_weight, cfg.mse_weight,
                                                  cfg.dssim_weight, p if cfg.eyes_mouth_priority else None,
                                                  cfg.eyes_mouth_weight)
                if pmask is not None and cfg.mask_loss_weight:
                    full = full + cfg.mask_loss_weight * ((pmask.float() - m) ** 2).flatten(1).mean(1)
                loss.append(full)
    finally:
        model.train(was_training)
    return {"heldout_l1": float(torch.cat(l1).mean()), "heldout_loss": float(torch.cat(loss).mean())}


def _late_heldout(workdir: Path, start: int, length: int) -> dict[str, float]:
    """``heldout_l1_late``: the mean of the probes in the last quarter of the iterations ``(start, start + length]``."""
    first = start + length - max(1, length // 4)
    probes = [r["heldout_l1"] for r in read_log(workdir / HELDOUT_LOG) if first < r["iteration"] <= start + length]
    return {"heldout_l1_late": float(np.mean(probes)) if probes else math.nan}


class _HeldoutProbe(Callback):
    """A training callback: every ``every`` iterations, the held-out losses of the weights being trained, appended
    to ``heldout.jsonl`` in the trainer's workdir. Probes past the checkpoint a run resumes from are dropped, as
    ``log.jsonl`` drops its records; a probe only reads the model, so training runs exactly as without it."""

    def __init__(self, heldout: Path, every: int):
        self.heldout, self.every = heldout, every

    def on_train_begin(self, trainer) -> None:
        self.path = trainer.workdir / HELDOUT_LOG
        kept = [r for r in read_log(self.path) if r["iteration"] <= trainer.iteration]
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        self.data = FaceData(self.heldout, trainer.config.resolution, trainer.config.mask_type)

    def on_step(self, trainer, record: dict) -> None:
        if trainer.iteration % self.every == 0:
            probe = {"iteration": trainer.iteration, **_heldout_losses(trainer.model, self.data)}
            with open(self.path, "a") as f:
                f.write(json.dumps(probe) + "\n")


def _train_seconds(workdir: Path, start: int, length: int) -> float:
    """Training time of the iterations ``(start, start + length]`` from the log's time stamps (resumes included,
    the pause of an interruption not)."""
    t = [r["time"] for r in read_log(workdir) if "time" in r and start < r["iteration"] <= start + length]
    gaps = np.diff(t)
    # an interruption shows as one long gap: no gap counts for more than ten typical steps
    return round(float(np.minimum(gaps, 10 * np.median(gaps)).sum() * len(t) / len(gaps)), 1) if len(t) > 1 else 0.0


def _final_losses(workdir: Path, start: int, length: int) -> dict[str, float]:
    """Mean training losses over the last tenth of the iterations ``(start, start + length]``."""
    last = start + length
    first = last - max(1, length // 10)
    records = [r for r in read_log(workdir) if "loss_a" in r and first < r["iteration"] <= last]
    return {k: float(np.mean([r[k] for r in records])) if records else math.nan for k in ("loss_a", "loss_b")}


class _SwapEvaluator:
    """Converts a run's A video to B and evaluates the swap; the clip, detector and embedder are made once."""

    def __init__(self, video, frames: int | None, workdir: Path, detector: str, device: str):
        self.video, self.frames, self.workdir = Path(video), frames, workdir
        self.detector, self.device = detector, device
        self._tools = None

    def __call__(self, run_dir: Path) -> dict[str, float]:
        from facesynth.evaluate import evaluate_swap, write_report

        clip, backend, embedder = self.tools()
        out = convert_video(clip, run_dir / "swap_a2b.mp4", run_dir, "a2b", detector=backend, device=self.device,
                            progress=False)
        scores = evaluate_swap(clip, out, self.workdir / "B", detector=self.detector, embedder=embedder,
                               progress=False)
        write_report(scores, run_dir / "evaluation_swap.json")
        return {k: scores[k] for k in SWAP_METRICS}

    def tools(self):
        if self._tools is None:
            from facesynth.evaluate.identity import FaceEmbedder
            from facesynth.extract.backends import create_backend

            clip = self.video if self.frames is None else _prefix_clip(self.video, self.frames,
                                                                       self.workdir / "clip.mp4")
            self._tools = clip, create_backend(self.detector, device=self.device), FaceEmbedder(self.detector)
        return self._tools


def _prefix_clip(video: Path, frames: int, path: Path) -> Path:
    """The first ``frames`` frames of ``video`` at its frame rate (silent), written once."""
    from facesynth.media import VideoWriter, iter_frames, probe

    if not path.is_file():                       # VideoWriter makes it appear only when complete
        with VideoWriter(path, probe(video).fps) as w:
            for i, frame in iter_frames(video):
                if i >= frames:
                    break
                w.write(frame)
    return path


# --- numbers to words ------------------------------------------------------------------------------------
def _mean_std(values: Sequence[float | None]) -> dict[str, float]:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], np.float64)
    return {"mean": float(v.mean()) if len(v) else math.nan,
            "std": float(v.std(ddof=1)) if len(v) > 1 else math.nan, "n": int(len(v))}


def _verdict(summary: dict, baseline: dict, seeds: list[int]) -> str:
    """Whether pruning lowered the held-out L1 against ``all`` by more than the seed spread, per rule.

    The spread is the larger of the two arms' seed standard deviations; a difference under twice that is
    called weak, since a standard deviation from a few seeds is itself uncertain.
    """
    key = VERDICT_METRIC
    base = summary["all"][key]
    parts, lowered, raised = [], {}, []
    for arm in ("quality", "loss"):
        s = summary[arm][key]
        diff = s["mean"] - base["mean"]
        stds = [_nan_none(x["std"]) for x in (s, base)]
        spread = max((x for x in stds if math.isfinite(x)), default=math.nan)
        rel = 100 * diff / base["mean"] if base["mean"] else math.nan
        if not math.isfinite(spread):
            how = "no spread with one seed"
        else:
            ratio = abs(diff) / spread if spread > 0 else math.inf
            how = f"{ratio:.1f}× the seed spread {spread:.4f}"
            if ratio > 1 and diff < 0:
                lowered[ARM_LABELS[arm]] = ratio
            elif ratio > 1:
                raised.append(ARM_LABELS[arm])
        parts.append(f"{ARM_LABELS[arm]} {_pm(s['mean'], s['std'], 4)} ({rel:+.1f} %, {how})")
    head = (f"Held-out L1 ({key}: averaged over the last quarter of each arm), seeds {', '.join(map(str, seeds))}: "
            f"all frames {_pm(base['mean'], base['std'], 4)}; " + "; ".join(parts) + ".")
    also = f" ({' and '.join(raised)} raised it beyond the spread)" if raised else ""
    if len(seeds) < 2:
        call = ("With one seed there is no spread to compare against, so whether the study's finding reproduces "
                "cannot be said; run two or more seeds.")
    elif lowered:
        weak = min(lowered.values()) < 2
        call = (f"The study's finding reproduces at this scale for the rule{'s' if len(lowered) > 1 else ''} "
                f"{' and '.join(lowered)}: pruning lowered the loss on faces no arm trained on by more than the "
                f"seed spread{also}"
                + (f", but by less than twice the spread of {len(seeds)} seeds: weak evidence, which more seeds "
                   f"would settle." if weak else "."))
    else:
        call = ("The study's finding does not reproduce at this scale: neither pruning rule lowered the loss on "
                f"faces no arm trained on by more than the seed spread{also}.")
    train = "; ".join(f"{ARM_LABELS[a]} {summary[a]['loss_a']['mean']:.4f}" for a in ARMS)
    note = (f"Training loss A at the end (the study's measure; it falls when hard faces leave the average even if "
            f"nothing improved): {train}; {baseline['loss_a']:.4f} at the branch.")
    return f"{head} {call} {note}"


def _nan_none(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _pm(mean: float | None, std: float | None, digits: int) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _csv(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else str(v)


TABLE_COLUMNS = (("heldout_l1_late", "held-out L1 (last quarter)", 4), ("heldout_l1", "held-out L1 (final)", 4),
                 ("heldout_loss", "held-out loss", 4),
                 ("loss_a", "training loss A", 4), ("success_rate", "success rate", 3),
                 ("id_to_target", "id → target", 3), ("pose_error_deg", "pose error (°)", 2),
                 ("expression_error", "expression error", 4), ("jitter", "jitter", 4), ("flicker", "flicker", 3),
                 ("face_rate", "face rate", 3))


def _markdown(result: PruningResult) -> str:
    s = result.settings
    columns = [c for c in TABLE_COLUMNS if c[0] not in SWAP_METRICS or s["evaluate"]]
    lines = ["# Table 3: pruning the frames that train badly (the study's finding as an experiment)", "",
             "| arm | faces excluded | " + " | ".join(h for _, h, _ in columns) + " | seeds |",
             "|---|---|" + "---|" * len(columns) + "---|"]
    for arm in ARMS:
        ex = result.excluded[arm]
        cells = [_pm(result.summary[arm][k]["mean"], result.summary[arm][k]["std"], d) for k, _, d in columns]
        lines.append(f"| {ARM_LABELS[arm]} | {len(ex)} of {result.training_faces}"
                     f"{' (' + ', '.join(map(str, ex)) + ')' if ex else ''} | " + " | ".join(cells)
                     + f" | {', '.join(result.runs[arm])} |")
    base = [_pm(result.baseline.get(k), None, d) if k in result.baseline else "" for k, _, d in columns]
    lines.append(f"| shared checkpoint (iteration {s['shared_iterations']}) | – | " + " | ".join(base) + " | – |")
    lines += ["", f"**Verdict.** {result.verdict}", "", "## Settings", "", _settings_text(result), "",
              "## Definitions", ""]
    lines += [f"- **{k}**: {v}" for k, v in result.definitions.items()
              if k not in SWAP_METRICS or s["evaluate"]]
    return "\n".join(lines) + "\n"


def _settings_text(result: PruningResult) -> str:
    s, cfg = result.settings, result.settings["config"]
    text = (f"Preset {cfg['preset_name']} ({cfg['architecture']}, {cfg['resolution']} px, batch {cfg['batch_size']}); "
            f"{s['shared_iterations']} shared iterations from scratch, then {s['arm_iterations']} per arm; seeds "
            f"{', '.join(map(str, s['seeds']))}. The pruned arms drop {s['fraction']:g} of the "
            f"{result.training_faces} training faces of A (rounded down). One A face in {s['holdout_every']} is "
            f"held out ({len(result.heldout_ids)} faces: {', '.join(map(str, result.heldout_ids))}). Quality rule: "
            f"rank_faces weights {s['quality_weights']}. Spearman correlation of quality badness and shared-run "
            f"loss over the training faces: {_pm(result.quality_loss_spearman, None, 2)}.")
    if s["evaluate"]:
        prefix = "" if s["evaluate_frames"] is None else f", first {s['evaluate_frames']} frames"
        text += (f" Swap metrics: {Path(s['video']).name}{prefix} converted A → B, landmarks by "
                 f"{s['detector']}.")
    return text



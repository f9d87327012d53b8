"""table3_pruning / fig_pruning: the three-arm pruning experiment on real sample media, at a tiny scale.

A: 24 faces of the talking head (6 fps of 4 s), B: the astronaut photo, 64 px. One A face in 5 is held out
(5 faces), leaving 19 to train on; the pruned arms drop 20 % of them (3 faces).
"""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import rankdata

from facesynth.errors import ConfigError
from facesynth.extract import FaceSet, extract_faces
from facesynth.figures import pruning
from facesynth.figures.pruning import (ARM_LABELS, ARMS, QUALITY_WEIGHTS, PruningResult, plot_pruning,
                                       pruning_experiment, write_pruning_table)
from facesynth.swap import SwapConfig
from facesynth.training import read_log

pytestmark = pytest.mark.slow

SHARED, ARM, SEEDS, FRACTION = 20, 8, (0, 1), 0.2


@pytest.fixture(scope="module")
def facesets(samples, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pruning_faces")
    a = extract_faces(samples.talking_head, root / "A", fps=6, size=64, detector="dlib", progress=False)
    b = extract_faces(samples.astronaut, root / "B", size=64, detector="dlib", progress=False)
    assert len(a) == 24 and len(b) == 1
    return a.root, b.root


def _run(facesets, samples, workdir: Path, **overrides) -> PruningResult:
    kwargs = dict(video=samples.talking_head, preset=SwapConfig.preset("quick", batch_size=2), shared_iterations=SHARED,
                  arm_iterations=ARM, fraction=FRACTION, seeds=SEEDS, evaluate_frames=6, device="cpu", progress=False)
    return pruning_experiment(*facesets, workdir, **{**kwargs, **overrides})


@pytest.fixture(scope="module")
def experiment(facesets, samples, tmp_path_factory) -> PruningResult:
    return _run(facesets, samples, tmp_path_factory.mktemp("pruning") / "exp")


def _excluded(root: Path) -> set[int]:
    return {f.id for f in FaceSet.open(root) if f.excluded}


def _run_dir(result: PruningResult, arm: str, seed: int) -> Path:
    return Path(result.workdir) / f"{arm}_s{seed}"


def test_held_out_faces_are_the_middle_of_every_five_and_never_trained_on(experiment, facesets):
    assert experiment.heldout_ids == [2, 7, 12, 17, 22]
    work = Path(experiment.workdir)
    assert _excluded(work / "A") == set(experiment.heldout_ids)
    assert {f.id for f in FaceSet.open(work / "heldout").active()} == set(experiment.heldout_ids)
    for arm in ARMS:
        for seed in SEEDS:
            assert set(experiment.heldout_ids) <= _excluded(_run_dir(experiment, arm, seed) / "A")
    assert experiment.training_faces == 19


def test_the_original_face_sets_are_left_untouched(experiment, facesets):
    for root in facesets:
        fs = FaceSet.open(root)
        assert not any(f.excluded for f in fs) and not any("loss" in f.scores for f in fs)


def test_pruned_arms_drop_the_same_number_of_the_right_faces(experiment):
    work = Path(experiment.workdir)
    train = FaceSet.open(work / "A").active()         # after the shared run: with its per-face losses
    assert experiment.excluded["all"] == []
    assert len(experiment.excluded["quality"]) == len(experiment.excluded["loss"]) == math.floor(FRACTION * 19) == 3
    with_loss = sorted((f for f in train if "loss" in f.scores), key=lambda f: -f.scores["loss"])
    assert experiment.excluded["loss"] == sorted(f.id for f in with_loss[:3])
    # the quality rule: mean of the faces' scaled badness ranks, pose counting once (|yaw| and |pitch| half each)
    badness = {"yaw": lambda s: abs(s["yaw"]), "pitch": lambda s: abs(s["pitch"]), "blur": lambda s: -s["blur"],
               "motion": lambda s: s["motion"]}
    total = np.zeros(len(train))
    for term, weight in QUALITY_WEIGHTS.items():
        values = [badness[term](f.scores) for f in train]
        total += weight * (rankdata(values) - 1) / (len(train) - 1)
    worst = [train[i].id for i in np.argsort(-total, kind="stable")[:3]]
    assert experiment.excluded["quality"] == sorted(worst)
    for arm in ARMS:
        for seed in SEEDS:
            assert _excluded(_run_dir(experiment, arm, seed) / "A") == set(experiment.heldout_ids) | set(
                experiment.excluded[arm])


def test_seeds_draw_different_batches_after_the_shared_part(experiment):
    logs = {s: [r for r in read_log(_run_dir(experiment, "all", s)) if "loss_a" in r] for s in SEEDS}
    shared = [r for r in read_log(Path(experiment.workdir) / "shared") if "loss_a" in r]
    for s in SEEDS:
        assert [r["loss_a"] for r in logs[s][:SHARED]] == [r["loss_a"] for r in shared]
        assert [r["iteration"] for r in logs[s]] == list(range(1, SHARED + ARM + 1))
    assert [r["loss_a"] for r in logs[0][SHARED:]] != [r["loss_a"] for r in logs[1][SHARED:]]
    assert experiment.runs["all"]["0"]["heldout_l1"] != experiment.runs["all"]["1"]["heldout_l1"]


def test_a_seed_run_again_gives_the_same_numbers(experiment, facesets, samples, tmp_path):
    again = tmp_path / "again"
    shutil.copytree(experiment.workdir, again)
    shutil.rmtree(again / "all_s0")
    (again / "pruning.json").unlink()
    redone = _run(facesets, samples, again)
    before = [r["loss_a"] for r in read_log(_run_dir(experiment, "all", 0))]
    assert [r["loss_a"] for r in read_log(again / "all_s0")] == before
    for key in ("heldout_l1_late", "heldout_l1", "heldout_loss", "loss_a", "success_rate", "id_to_target"):
        assert redone.runs["all"]["0"][key] == experiment.runs["all"]["0"][key], key
    assert redone.runs["loss"] == experiment.runs["loss"]        # the other runs were reused, not retrained


def test_metrics_are_finite_and_held_out_l1_lies_in_the_unit_interval(experiment):
    for arm in ARMS:
        for seed in SEEDS:
            run = experiment.runs[arm][str(seed)]
            assert 0 < run["heldout_l1"] < 1 and 0 < run["heldout_l1_late"] < 1 and math.isfinite(run["heldout_loss"])
            assert 0 <= run["face_rate"] <= 1 and run["id_to_target"] > 0
        s = experiment.summary[arm]["heldout_l1_late"]
        assert s["n"] == 2 and s["std"] >= 0
        assert s["mean"] == pytest.approx(np.mean([experiment.runs[arm][str(x)]["heldout_l1_late"] for x in SEEDS]))
    assert 0 < experiment.baseline["heldout_l1"] < 1


def test_held_out_faces_are_probed_while_training_without_changing_it(experiment):
    probes = read_log(_run_dir(experiment, "loss", 1) / "heldout.jsonl")
    assert [p["iteration"] for p in probes] == list(range(1, SHARED + ARM + 1))     # every 8 // 20 → 1 iteration
    final = probes[-1]
    assert final["heldout_l1"] == pytest.approx(experiment.runs["loss"]["1"]["heldout_l1"], rel=1e-6)
    late = [p["heldout_l1"] for p in probes if p["iteration"] > SHARED + ARM - ARM // 4]
    assert experiment.runs["loss"]["1"]["heldout_l1_late"] == pytest.approx(np.mean(late))
    shared = read_log(Path(experiment.workdir) / "shared" / "heldout.jsonl")
    assert probes[:SHARED] == shared and shared[-1]["heldout_l1"] == pytest.approx(experiment.baseline["heldout_l1"])
    assert "heldout_l1" in experiment.definitions and experiment.settings["seeds"] == list(SEEDS)


def test_the_verdict_states_the_numbers(experiment):
    base = experiment.summary["all"]["heldout_l1_late"]
    assert f"all frames {base['mean']:.4f} ± {base['std']:.4f}" in experiment.verdict
    assert "reproduce" in experiment.verdict


@pytest.mark.parametrize("quality, loss, expected", [
    ((0.040, 0.001), (0.050, 0.001), "reproduces at this scale for the rule without worst pose/blur/motion: "
                                     "pruning lowered the loss on faces no arm trained on by more than the seed "
                                     "spread."),
    ((0.0485, 0.001), (0.050, 0.001), "by more than the seed spread, but by less than twice the spread of 2 seeds"),
    ((0.0495, 0.001), (0.0505, 0.001), "does not reproduce at this scale"),
    ((0.060, 0.001), (0.050, 0.001), "does not reproduce at this scale: neither pruning rule lowered the loss on "
                                     "faces no arm trained on by more than the seed spread (without worst "
                                     "pose/blur/motion raised it"),
])
def test_the_verdict_is_computed_from_the_held_out_losses(quality, loss, expected):
    def arm(mean, std):
        return {"heldout_l1_late": {"mean": mean, "std": std, "n": 2}, "loss_a": {"mean": 0.1, "std": 0.0, "n": 2}}
    summary = {"all": arm(0.050, 0.001), "quality": arm(*quality), "loss": arm(*loss)}
    assert expected in pruning._verdict(summary, {"loss_a": 0.2}, [0, 1])
    one_seed = {k: arm(v["heldout_l1_late"]["mean"], float("nan")) for k, v in summary.items()}
    assert "cannot be said" in pruning._verdict(one_seed, {"loss_a": 0.2}, [0])


def test_table_lists_every_arm_its_seeds_and_the_verdict(experiment, tmp_path):
    md, table = write_pruning_table(experiment, tmp_path)
    assert (md.name, table.name) == ("table3_pruning.md", "table3_pruning.csv")
    text = md.read_text()
    for arm in ARMS:
        assert f"| {ARM_LABELS[arm]} |" in text
    assert experiment.verdict in text and "held-out L1" in text and "heldout_l1" in text
    assert f"{SHARED} shared iterations" in text and "seeds 0, 1" in text
    rows = list(csv.DictReader(table.open()))
    assert [(r["arm"], r["seed"]) for r in rows[:4]] == [("all", "0"), ("all", "1"), ("all", "mean"), ("all", "std")]
    assert {r["arm"] for r in rows} == {*ARMS, "shared"} and len(rows) == 3 * 4 + 1
    quality_0 = next(r for r in rows if r["arm"] == "quality" and r["seed"] == "0")
    assert float(quality_0["heldout_l1_late"]) == experiment.runs["quality"]["0"]["heldout_l1_late"]
    assert quality_0["faces_excluded"] == "3"


def test_figure_is_written_as_png_and_pdf(experiment, tmp_path):
    png, pdf = plot_pruning(experiment, tmp_path / "fig_pruning")
    assert (png.name, pdf.name) == ("fig_pruning.png", "fig_pruning.pdf")
    with Image.open(png) as im:
        assert im.size[0] > 600 and im.size[1] > 400
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_a_finished_experiment_is_returned_without_training(experiment, facesets, samples, monkeypatch):
    from facesynth.swap.train import SwapTrainer

    def refuse(*args, **kwargs):
        raise AssertionError("trained again")
    monkeypatch.setattr(SwapTrainer, "__init__", refuse)
    again = _run(facesets, samples, experiment.workdir)
    assert again == experiment
    assert PruningResult.load(experiment.workdir) == experiment
    assert json.loads((Path(experiment.workdir) / "pruning.json").read_text())["verdict"] == experiment.verdict


@pytest.mark.parametrize("overrides, message", [
    ({"fraction": 0.0}, r"in \(0, 1\)"),
    ({"fraction": 1.0}, r"in \(0, 1\)"),
    ({"seeds": ()}, "one or more distinct"),
    ({"holdout_every": 1}, "holdout_every"),
    ({"fraction": 0.01}, "need at least one of each"),
    ({"holdout_every": 60}, "need at least one of each"),
    ({"evaluate_frames": 2}, "evaluate_frames"),
])
def test_bad_settings_are_refused_before_any_work(facesets, samples, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _run(facesets, samples, tmp_path / "bad", **overrides)
    assert not (tmp_path / "bad").exists()


def test_a_workdir_of_another_experiment_is_refused(experiment, facesets, samples):
    with pytest.raises(ConfigError, match="other settings.*arm_iterations"):
        _run(facesets, samples, experiment.workdir, arm_iterations=ARM + 1)

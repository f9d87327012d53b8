"""`facesynth train-swap`, `prune` and `convert` on small real face sets: output, resume, one-line errors."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facesynth.cli import main
from facesynth.extract import FaceSet, extract_faces
from facesynth.media import read_image
from facesynth.training import read_log


@pytest.fixture(scope="module")
def facesets(samples, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    a = extract_faces(samples.talking_head, root / "A", fps=5, size=64, detector="dlib", progress=False)
    b = extract_faces(samples.portraits, root / "B", size=64, detector="dlib", progress=False)
    return {"A": a.root, "B": b.root}


@pytest.fixture(scope="module")
def trained(facesets, tmp_path_factory) -> Path:
    """A quick-preset workdir trained for 4 iterations through the CLI."""
    workdir = tmp_path_factory.mktemp("cli_model") / "model"
    assert main(["train-swap", "--faces-a", str(facesets["A"]), "--faces-b", str(facesets["B"]), "--workdir",
                 str(workdir), "--iterations", "4", "--device", "cpu"]) == 0
    return workdir


@pytest.fixture
def faces_a(facesets, tmp_path) -> Path:
    shutil.copytree(facesets["A"], tmp_path / "A")
    fs = FaceSet.open(tmp_path / "A")
    fs.update_scores({f.id: {"loss": f.id / 100} for f in fs})      # face i has loss i/100
    return fs.root


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("facesynth: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.slow
def test_train_swap_trains_then_resumes_to_the_higher_count(facesets, tmp_path, capsys):
    workdir, png = tmp_path / "model", tmp_path / "plots" / "loss.png"
    args = ["train-swap", "--workdir", str(workdir), "--device", "cpu", "--plot", str(png)]
    assert main(args + ["--faces-a", str(facesets["A"]), "--faces-b", str(facesets["B"]), "--iterations", "5"]) == 0
    out = capsys.readouterr().out
    assert "new model; preset quick" in out and "active faces A 20/20, B 2/2" in out and "iteration 5:" in out
    assert read_log(workdir)[-1]["iteration"] == 5 and png.stat().st_size > 10_000
    assert main(args + ["--iterations", "8"]) == 0                # the workdir remembers its face sets
    out = capsys.readouterr().out
    assert "resuming at iteration 5" in out and "training to iteration 8" in out
    assert [r["iteration"] for r in read_log(workdir)] == list(range(1, 9))
    assert main(args + ["--iterations", "8"]) == 0
    assert "nothing to train" in capsys.readouterr().out


def test_train_swap_options_reach_the_learning_rate(facesets, tmp_path, capsys):
    workdir = tmp_path / "model"
    assert main(["train-swap", "--faces-a", str(facesets["A"]), "--faces-b", str(facesets["B"]), "--workdir",
                 str(workdir), "--iterations", "4", "--device", "cpu", "--batch-size", "2", "--lr", "1e-3",
                 "--schedule", "cosine", "--warmup", "2"]) == 0
    assert "batch 2, lr 0.001 cosine, warm-up 2" in capsys.readouterr().out
    lrs = [r["lr"] for r in read_log(workdir)]
    # linear warm-up over 2 steps, then a cosine that reaches 0 at the --iterations target (halfway at step 3)
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3, 5e-4])


def test_train_swap_without_face_sets_for_a_new_workdir_exits_2(tmp_path, capsys):
    assert main(["train-swap", "--workdir", str(tmp_path / "model"), "--iterations", "2", "--device", "cpu"]) == 2
    error = _one_line_error(capsys)
    assert "give --faces-a and --faces-b" in error and "faces_a" not in error


def test_train_swap_refuses_a_different_network_in_the_same_workdir(trained, capsys):
    assert main(["train-swap", "--workdir", str(trained), "--preset", "paper", "--iterations", "5"]) == 2
    assert "different" in _one_line_error(capsys)


def test_train_swap_unknown_preset_exits_2(facesets, tmp_path, capsys):
    assert main(["train-swap", "--faces-a", str(facesets["A"]), "--faces-b", str(facesets["B"]), "--workdir",
                 str(tmp_path / "m"), "--preset", "huge"]) == 2
    assert "unknown preset 'huge'" in _one_line_error(capsys)


def test_prune_excludes_and_prints_the_faces(faces_a, capsys):
    assert main(["prune", str(faces_a), "--worst-loss", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "excluded 2 of 20 active faces; 18 active" in out and "#18 frame" in out and "#19 frame" in out
    assert sorted(f.id for f in FaceSet.open(faces_a) if f.excluded) == [18, 19]


def test_prune_dry_run_lists_without_changing(faces_a, capsys):
    before = (faces_a / "faceset.json").read_bytes()
    assert main(["prune", str(faces_a), "--worst", "0.25", "--dry-run"]) == 0
    assert "would exclude 5 of 20 active faces; 20 active" in capsys.readouterr().out
    assert (faces_a / "faceset.json").read_bytes() == before


@pytest.mark.parametrize("args, message", [
    ([], "at least one rule"),
    (["--max-pitch", "-1"], "would exclude every one of the 20 active faces"),
    (["--worst-loss", "2"], "fraction"),
])
def test_prune_errors_exit_2_with_one_line(faces_a, capsys, args, message):
    assert main(["prune", str(faces_a), *args]) == 2
    assert message in _one_line_error(capsys)


def test_prune_of_a_missing_face_set_exits_2(tmp_path, capsys):
    assert main(["prune", str(tmp_path / "nope"), "--worst", "0.1"]) == 2
    assert "not a face set" in _one_line_error(capsys)


def test_convert_swaps_a_photo(trained, samples, tmp_path, capsys):
    out = tmp_path / "swapped.png"
    assert main(["convert", str(samples.astronaut), str(out), "--model", str(trained), "--direction", "b2a",
                 "--color-transfer", "lct", "--device", "cpu"]) == 0
    assert "→" in capsys.readouterr().out
    assert read_image(out).shape == read_image(samples.astronaut).shape


def test_convert_without_a_model_exits_2(samples, tmp_path, capsys):
    assert main(["convert", str(samples.astronaut), str(tmp_path / "o.png"), "--model", str(tmp_path / "none")]) == 2
    _one_line_error(capsys)

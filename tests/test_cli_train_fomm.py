"""``facesynth train-fomm``: trains, resumes from its workdir alone, fine-tunes on a still portrait, and fails
early with errors that name its flags, leaving no workdir behind."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import yaml

from facesynth.cli import main
from facesynth.reenact.train import STILL_FRAMES, FOMMTrainer
from facesynth.training import read_log

DATA = Path(__file__).parent / "data" / "fomm"


@pytest.fixture(autouse=True)
def _no_vgg_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # tests run without VGG19 weights: the L1 pyramid (a warning)
        yield


@pytest.fixture
def config(tmp_path) -> Path:
    """The small test network as an official YAML with train_params: 128 px, batch 2, and an official run of 3
    iterations for one video (num_epochs 3 x num_repeats 2 x 1 video / batch 2)."""
    data = yaml.safe_load((DATA / "small.yaml").read_text())
    data["dataset_params"] = {"frame_shape": [128, 128, 3]}
    data["train_params"] = {"batch_size": 2, "num_repeats": 2, "num_epochs": 3, "checkpoint_every": 1}
    path = tmp_path / "small-train.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_train_then_resume_with_the_workdir_alone(samples, tmp_path, config, capsys):
    wd = tmp_path / "fomm"
    assert main(["train-fomm", str(samples.talking_head), "--workdir", str(wd), "--config", str(config),
                 "--iterations", "2", "--lr", "1e-3", "--device", "cpu", "--plot", str(tmp_path / "loss.png")]) == 0
    out = capsys.readouterr().out
    assert "new model" in out and "training to iteration 2" in out and "1 training clip(s)" in out
    assert [r["iteration"] for r in read_log(wd) if "loss_generator_total" in r] == [1, 2]
    saved = json.loads((wd / "config.json").read_text())
    assert saved["videos"] == [str(samples.talking_head.resolve())] and saved["checkpoint"] is None
    assert saved["model"]["name"] == str(config)
    train = saved["train"]
    assert (train["lr_generator"], train["lr_kp_detector"], train["lr_discriminator"]) == (1e-3, 1e-3, 1e-3)
    assert (train["frame_size"], train["batch_size"], train["num_epochs"]) == (128, 2, 3)
    assert (tmp_path / "loss.png").stat().st_size > 1000

    assert main(["train-fomm", "--workdir", str(wd)]) == 0     # everything else from config.json
    out = capsys.readouterr().out
    assert "resuming at iteration 2" in out and "training to iteration 3" in out    # the official run's end
    assert [r["iteration"] for r in read_log(wd) if "loss_generator_total" in r] == [1, 2, 3]
    assert [r["lr"] for r in read_log(wd) if "lr" in r] == [1e-3] * 3      # the recorded --lr stays
    assert main(["train-fomm", "--workdir", str(wd)]) == 0
    assert "already at iteration 3 (target 3); nothing to train" in capsys.readouterr().out


@pytest.mark.slow
def test_a_still_portrait_fine_tunes_an_official_checkpoint(samples, tmp_path, config, capsys):
    portrait = samples.portraits / "astronaut.png"
    wd = tmp_path / "tuned"
    assert main(["train-fomm", "--still", str(portrait), "--workdir", str(wd), "--config", str(config),
                 "--checkpoint", str(DATA / "small-cpk.pt"), "--iterations", "1", "--device", "cpu"]) == 0
    assert f"fine-tuning {DATA / 'small-cpk.pt'}" in capsys.readouterr().out
    saved = json.loads((wd / "config.json").read_text())
    assert saved["videos"] == [str(portrait.resolve())]
    assert saved["checkpoint"] == str((DATA / "small-cpk.pt").resolve())
    trainer = FOMMTrainer(workdir=wd, device="cpu")
    assert trainer.iteration == 1 and trainer.data.frames(0).shape == (STILL_FRAMES, 3, 128, 128)


def test_errors_name_the_flags_and_leave_no_workdir(samples, tmp_path, config, capsys):
    wd = tmp_path / "new"
    assert main(["train-fomm", "--workdir", str(wd)]) == 2
    assert "give the training videos (positional or --videos)" in capsys.readouterr().err
    assert main(["train-fomm", "--still", str(samples.talking_head), "--workdir", str(wd)]) == 2
    assert "--still" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train-fomm", str(samples.talking_head), "--workdir", str(wd), "--batch-size", "1"])
    assert exit_info.value.code == 2 and "--batch-size: must be at least 2" in capsys.readouterr().err
    assert main(["train-fomm", str(samples.talking_head), "--workdir", str(wd), "--config", str(config),
                 "--checkpoint", "no-such-weights", "--device", "cpu"]) == 2
    assert "no-such-weights" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("model_params:\n  common_params: {num_kp: 10\n")
    assert main(["train-fomm", str(samples.talking_head), "--workdir", str(wd), "--config", str(broken)]) == 2
    assert f"{broken}, line 3, column 1: not valid YAML" in capsys.readouterr().err
    assert not wd.exists()                      # every failed start removed the workdir it had made

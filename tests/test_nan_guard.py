"""The NaN guard before the optimiser step (``Trainer.step_optimizers``): a non-finite loss or gradient skips the
step on every network, puts the buffers back, logs ``nan_skip`` and redoes the iteration, so the weights stay
finite from iteration 1 without a checkpoint. Checked on a toy trainer and on the swap and StyleGAN trainers
(FOMM: tests/test_reenact_train.py, and with two ranks tests/test_reenact_distributed.py)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from facesynth.errors import ConfigError
from facesynth.extract import extract_faces
from facesynth.generate.train import StyleGANTrainConfig, StyleGANTrainer
from facesynth.swap import SwapConfig, SwapTrainer
from facesynth.training import LRSchedule, Trainer, read_log


class TinyTrainer(Trainer):
    """A linear layer behind a BatchNorm, fitting y = 2x; ``poison`` lists the steps (1-based calls) fed NaN."""

    def __init__(self, workdir, poison=()):
        super().__init__(workdir, torch.device("cpu"))
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.BatchNorm1d(1), nn.Linear(1, 1))
        self.optimizers = {"net": torch.optim.SGD(self.net.parameters(), lr=0.1)}
        self.schedule = LRSchedule(0.1)
        self.poison, self.calls = set(poison), 0

    def train_step(self, iteration):
        self.calls += 1
        x = torch.randn(8, 1)
        if self.calls in self.poison:
            x[0] = math.nan
        loss = (self.net(x) - 2 * x).square().mean()
        self.optimizers["net"].zero_grad()
        loss.backward()
        self.step_optimizers("net", loss=loss)
        return {"loss": float(loss.detach())}

    def model_state(self):
        return {"net": self.net.state_dict()}

    def load_model_state(self, state):
        self.net.load_state_dict(state["net"])

    def buffered_modules(self):
        return [self.net]


def clone_state(*modules: nn.Module) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]


def watch_first_step(trainer: Trainer, *modules: nn.Module) -> list:
    """Wrap ``trainer.train_step`` to keep the modules' state right after its first call (before ``train``
    puts buffers back)."""
    real, seen = trainer.train_step, []

    def step(iteration):
        out = real(iteration)
        if not seen:
            seen.append(clone_state(*modules))
        return out

    trainer.train_step = step
    return seen


def changed(before: dict, after: dict, skip: tuple[str, ...] = ()) -> list[str]:
    return [k for k, v in after.items() if k not in skip and not torch.equal(v, before[k])]


def test_a_nan_at_iteration_1_skips_the_step_and_restores_the_batchnorm_statistics(tmp_path):
    trainer = TinyTrainer(tmp_path / "run", poison={1})
    before, = clone_state(trainer.net)
    seen = watch_first_step(trainer, trainer.net)
    trainer.train(3, progress=False)
    assert trainer.calls == 4 and trainer.iteration == 3          # the poisoned step was redone
    moved = changed(before, seen[0][0], skip=("0.running_mean", "0.running_var", "0.num_batches_tracked"))
    assert moved == []                                            # not one weight moved
    assert all(torch.isfinite(v.float()).all() for v in trainer.net.state_dict().values())
    assert trainer.net[0].num_batches_tracked.item() == 3                       # the skipped batch left no trace
    log = read_log(tmp_path / "run")
    assert log[0] == {"iteration": 0, "event": "nan_skip", "bad": ["loss", "net gradients"], "time": log[0]["time"]}
    assert [r["iteration"] for r in log[1:]] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in log[1:])
    assert trainer.nan_restores == 0 and trainer.schedule.scale == 1.0


def test_steps_that_stay_non_finite_give_up_with_a_config_error(tmp_path):
    trainer = TinyTrainer(tmp_path / "run", poison=range(1, 100))
    with pytest.raises(ConfigError, match=r"11 steps in a row had non-finite losses or gradients \(loss, net"):
        trainer.train(2, progress=False)
    assert len([r for r in read_log(tmp_path / "run") if r.get("event") == "nan_skip"]) == trainer.max_nan_skips
    assert all(torch.isfinite(p).all() for p in trainer.net.parameters())


@pytest.fixture(scope="module")
def faces(samples, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("guard_faces")
    extract_faces(samples.talking_head, root / "A", fps=10, size=64, detector="dlib", progress=False)
    return root / "A"


def test_swap_trainer_skips_a_nan_batch_at_iteration_1(faces, tmp_path):
    cfg = SwapConfig.preset("quick", preview_every=0, snapshot_every=0, checkpoint_every=100)
    trainer = SwapTrainer(cfg, faces_a=faces, faces_b=faces, workdir=tmp_path / "m", progress=False)
    initial, = clone_state(trainer.model)
    draw, calls = trainer.data["a"].batch, []

    def poisoned(n, generator):
        ids, img, mask, prio = draw(n, generator)
        calls.append(1)
        return ids, (torch.full_like(img, math.nan) if len(calls) == 1 else img), mask, prio

    trainer.data["a"].batch = poisoned
    first = watch_first_step(trainer, trainer.model)
    trainer.train(2)
    assert changed(initial, first[0][0]) == []
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())
    log = read_log(tmp_path / "m")
    assert [r.get("event") for r in log] == ["nan_skip", None, None] and "model gradients" in log[0]["bad"]
    assert [r["iteration"] for r in log[1:]] == [1, 2] and all(math.isfinite(r["loss_a"]) for r in log[1:])


def test_stylegan_trainer_skips_both_networks_on_nan_reals(faces, tmp_path):
    cfg = StyleGANTrainConfig.preset("quick")
    cfg.batch_size, cfg.snapshot_every, cfg.checkpoint_every = 4, 0, 100
    trainer = StyleGANTrainer(cfg, faces=faces, workdir=tmp_path / "wd", device="cpu", progress=False)
    nets = (trainer.G, trainer.D, trainer.G_ema)
    initial = clone_state(*nets)
    draw, calls = trainer._reals, []

    def poisoned():
        calls.append(1)
        return draw() * (math.nan if len(calls) == 1 else 1.0)

    trainer._reals = poisoned
    first = watch_first_step(trainer, *nets)
    trainer.train(2)
    # D's loss was NaN: D did not step, and neither did G nor G_ema in that iteration (dlatent_avg put back after)
    for before, after in zip(initial, first[0]):
        assert changed(before, after, skip=("dlatent_avg",)) == []
    assert torch.equal(trainer.G.dlatent_avg, trainer.G_ema.dlatent_avg)
    for net in nets:
        assert all(torch.isfinite(v).all() for v in net.state_dict().values() if v.is_floating_point())
    log = read_log(tmp_path / "wd")
    assert log[0]["event"] == "nan_skip" and {"loss", "D gradients"} <= set(log[0]["bad"])
    assert [r["iteration"] for r in log[1:]] == [1, 2] and all(math.isfinite(r["loss_g"]) for r in log[1:])

"""FOMMTrainer under torchrun: 2 CPU ranks (gloo) draw their own frame pairs yet end with identical weights and
BatchNorm statistics (gradients and buffers averaged across ranks), and only rank 0 writes.

One ``python -m torch.distributed.run --nproc_per_node 2 --standalone`` launch runs a worker script through three
phases in the same process group:

1. ``run``: the small test config with the GAN losses (so the discriminator trains too), 3 iterations;
2. ``resumed``: a copy of ``run`` reopened with nothing but its workdir (config.json) and trained to 4;
3. ``nan``: rank 1 alone draws a NaN batch at its first step; both ranks must skip that step together and
   keep finite, identical weights.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from facesynth.training import read_log
from distributed import launch, max_diff

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")

SMALL = Path(__file__).parent / "data" / "fomm" / "small.yaml"
WORLD = 2

WORKER = r'''
import shutil
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from facesynth.reenact.train import FOMMTrainer, LossWeights
from facesynth.training import Callback

warnings.simplefilter("ignore")              # no VGG19 weights here: the L1 pyramid (a MissingVGGWarning)
torch.set_num_threads(1)
small, video, runs, out = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
rank = int(__import__("os").environ["RANK"])
settings = dict(frame_size=128, batch_size=2, checkpoint_every=2, loss_weights=LossWeights(generator_gan=1.0))


def state(t):
    return {f"{name}.{k}": v.detach().clone() for name in ("generator", "kp_detector", "discriminator")
            for k, v in getattr(t, name).state_dict().items()}


def watch_batches(t):
    drawn, draw = [], t.data.batch

    def batch(*args, **kwargs):
        out = draw(*args, **kwargs)
        drawn.append(out[0].clone())
        return out
    t.data.batch = batch
    return drawn


class Losses(Callback):
    def __init__(self):
        self.values = []

    def on_step(self, trainer, record):
        self.values.append(record["loss_generator_total"])


result = {"rank": rank}
t = FOMMTrainer(small, [video], runs / "run", device="cpu", **settings)
assert t.dist.enabled and t.dist.backend == "gloo" and t.dist.rank == rank, t.dist
init, drawn, losses = state(t), watch_batches(t), Losses()
t.train(3, callbacks=[losses], progress=False)
result["run"] = {"init": init, "final": state(t), "drawn": torch.stack(drawn), "losses": losses.values,
                 "iteration": t.iteration}

if rank == 0:
    shutil.copytree(runs / "run", runs / "resumed")
dist.barrier()
t = FOMMTrainer(workdir=runs / "resumed", device="cpu")        # config.json alone: config, videos, settings
start, drawn = t.iteration, watch_batches(t)
t.train(4, progress=False)
result["resumed"] = {"start": start, "final": state(t), "drawn": torch.stack(drawn), "iteration": t.iteration,
                     "gan": t.config.loss_weights.generator_gan}

t = FOMMTrainer(small, [video], runs / "nan", device="cpu", **settings)
if rank == 1:
    draw, calls = t.data.batch, [0]

    def poisoned(*args, **kwargs):
        source, driving = draw(*args, **kwargs)
        calls[0] += 1
        return (torch.full_like(source, float("nan")) if calls[0] == 1 else source), driving
    t.data.batch = poisoned
t.train(2, progress=False)
result["nan"] = {"final": state(t), "iteration": t.iteration}

out.mkdir(parents=True, exist_ok=True)
torch.save(result, out / f"rank{rank}.pt")
'''



@pytest.mark.slow
def test_two_cpu_ranks_train_fomm_in_lockstep_resume_bare_and_skip_nan_together(samples, tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    runs, out = tmp_path / "runs", tmp_path / "out"
    runs.mkdir()
    t0 = time.perf_counter()
    proc = launch(tmp_path / "worker.py", [str(SMALL), str(samples.talking_head), str(runs), str(out)], tmp_path,
                  pythonpath=True)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, f"torchrun exited {proc.returncode} after {wall:.1f} s:\n{proc.stdout[-6000:]}"
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    assert (r0["rank"], r1["rank"]) == (0, 1)

    # identical start, identical end (parameters and BatchNorm statistics), and training did move them
    run0, run1 = r0["run"], r1["run"]
    assert run0["iteration"] == run1["iteration"] == 3
    assert max_diff(run0["init"], run1["init"]) == 0.0
    assert max_diff(run0["final"], run1["final"]) <= 1e-6
    assert max(float((run0["init"][k] - run0["final"][k]).abs().max()) for k in run0["init"]
               if k.startswith("discriminator.") and k.endswith("weight_orig")) > 0     # the discriminator trained
    assert any("running_mean" in k and not torch.equal(run0["init"][k], run0["final"][k]) for k in run0["init"])
    # data parallelism: each rank drew pairs of its own, so its losses are its own
    assert not torch.equal(run0["drawn"], run1["drawn"])
    assert run0["losses"] != run1["losses"]

    # one writer: rank 0's losses, once each; config.json records what a bare reopen needs
    log = [r for r in read_log(runs / "run") if "loss_generator_total" in r]
    assert [r["iteration"] for r in log] == [1, 2, 3]
    assert [r["loss_generator_total"] for r in log] == run0["losses"]
    saved = json.loads((runs / "run" / "config.json").read_text())
    assert saved["videos"] == [str(samples.talking_head.resolve())]
    assert saved["train"]["frame_size"] == 128 and saved["train"]["loss_weights"]["generator_gan"] == 1.0
    assert not [p for p in (runs / "run").iterdir() if p.name.endswith(".tmp")]

    # reopened with its workdir alone: both ranks continue from 3 in lockstep, each on batches of its own
    res0, res1 = r0["resumed"], r1["resumed"]
    assert res0["start"] == res1["start"] == 3 and res0["iteration"] == res1["iteration"] == 4
    assert res0["gan"] == res1["gan"] == 1.0
    assert max_diff(res0["final"], res1["final"]) <= 1e-6
    assert not torch.equal(res0["drawn"], res1["drawn"]), "after a resume every rank draws rank 0's pairs"
    assert [r["iteration"] for r in read_log(runs / "resumed") if "loss_generator_total" in r] == [1, 2, 3, 4]

    # one rank's NaN batch: both ranks skipped that step, no weight or statistic went non-finite
    nan0, nan1 = r0["nan"], r1["nan"]
    assert nan0["iteration"] == nan1["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in nan0["final"].values() if v.is_floating_point())
    assert max_diff(nan0["final"], nan1["final"]) <= 1e-6
    events = [r for r in read_log(runs / "nan") if r.get("event") == "nan_skip"]
    # rank 0 (the writer) had a finite loss: the NaN reached it through the averaged gradients
    assert len(events) == 1 and events[0]["iteration"] == 0 and "generator gradients" in events[0]["bad"]

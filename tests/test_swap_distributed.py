"""SwapTrainer under torchrun: 2 CPU ranks (gloo) end with identical weights, and only rank 0 writes.

One ``python -m torch.distributed.run --nproc_per_node 2 --standalone`` launch runs a worker script (written
into the test's folder) through five phases in the same process group:

1. ``run``: the quick preset for 6 iterations (checkpoint at 5 and at the end);
2. ``resumed``: a copy of ``run`` reopened by a new trainer and trained to 8 (each rank must still draw its
   own batches after the resume, although the checkpoint holds rank 0's data stream only);
3. ``gan``: the quick preset with the patch discriminator, whose weights must stay in sync too;
4. ``nan``: rank 1 alone reports a non-finite loss once; both ranks must restore the checkpoint together
   (a one-rank restore would leave the ranks' collectives out of step and hang the run);
5. ``nomask``: a predicted mask without a mask loss (parameters that get no gradient) still trains.

Each rank records every file operation that writes under the test folder (a ``sys.addaudithook`` hook) and
saves its weights, the batches it drew and its losses; the test compares the two ranks.
"""
from __future__ import annotations

import json
import time

import pytest
import torch

from facesynth.extract import extract_faces
from facesynth.safe_load import load_torch
from facesynth.training import read_log
from distributed import launch, max_diff

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")

WORLD = 2
ITERATIONS = 6

WORKER = r'''
import os
import shutil
import sys
from pathlib import Path

WATCH, RUNS, OUT = os.path.abspath(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
RANK = int(os.environ["RANK"])
written, watching = [], [True]
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event, args):
    """Every file operation of this process that writes under WATCH."""
    if not watching[0] or event not in ("open", "os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate"):
        return
    try:
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            writes = any(c in mode for c in "wax+") if mode else bool(flags & WRITE_FLAGS)
            paths = [path] if writes else []
        else:
            paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        for p in paths:
            p = os.path.abspath(os.fsdecode(os.fspath(p)))
            if p.startswith(WATCH + os.sep):
                written.append([event, os.path.relpath(p, WATCH)])
    except Exception:
        pass


sys.addaudithook(_audit)

import torch
import torch.distributed as dist

from facesynth.swap import SwapConfig, SwapTrainer
from facesynth.training import Callback

faces_a, faces_b, runs = sys.argv[1], sys.argv[2], RUNS


class Record(Callback):
    def __init__(self):
        self.steps = []

    def on_step(self, trainer, record):
        self.steps.append({k: v for k, v in record.items() if isinstance(v, (int, float))})


def watch_batches(trainer):
    drawn = []
    for who, data in trainer.data.items():
        def batch(n, generator, _orig=data.batch, _who=who):
            out = _orig(n, generator)
            drawn.append([_who, list(out[0])])
            return out
        data.batch = batch
    return drawn


def weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def quick(**kw):
    return SwapConfig.preset("quick", **{"checkpoint_every": 5, "preview_every": 0, "snapshot_every": 0, **kw})


result = {"rank": RANK, "world_size": int(os.environ["WORLD_SIZE"])}

# 1. the quick preset, 6 iterations
t = SwapTrainer(quick(), faces_a, faces_b, runs / "run", device="cpu", progress=False)
assert t.dist.enabled and t.dist.backend == "gloo" and t.dist.rank == RANK, t.dist
drawn, rec = watch_batches(t), Record()
init = weights(t.model)
t.train(ITERATIONS, callbacks=[rec])
result["run"] = {"init": init, "final": weights(t.model), "drawn": drawn, "steps": rec.steps,
                 "iteration": t.iteration}

# 2. a copy of the workdir reopened by a new trainer (resume from iteration 6) and trained to 8
if RANK == 0:
    shutil.copytree(runs / "run", runs / "resumed")
dist.barrier()
t = SwapTrainer(quick(), faces_a, faces_b, runs / "resumed", device="cpu", progress=False)
start, drawn = t.iteration, watch_batches(t)
t.train(ITERATIONS + 2)
result["resumed"] = {"start": start, "final": weights(t.model), "drawn": drawn, "iteration": t.iteration}

# 3. with the patch discriminator
t = SwapTrainer(quick(gan_weight=0.1), faces_a, faces_b, runs / "gan", device="cpu", progress=False)
disc_init = weights(t.disc)
t.train(3)
result["gan"] = {"final": weights(t.model), "disc_init": disc_init, "disc": weights(t.disc)}

# 4. rank 1 alone sees a non-finite loss once, at its 5th step (checkpoints at 3 and 6, none right after)
t = SwapTrainer(quick(checkpoint_every=3), faces_a, faces_b, runs / "nan", device="cpu", progress=False)
if RANK == 1:
    real_step, calls = t.train_step, [0]

    def poisoned_step(iteration):
        losses = real_step(iteration)
        calls[0] += 1
        if calls[0] == 5:
            losses["loss_a"] = float("nan")
        return losses

    t.train_step = poisoned_step
t.train(6)
result["nan"] = {"final": weights(t.model), "iteration": t.iteration, "lr_scale": t.schedule.scale,
                 "nan_restores": t.nan_restores}

# 5. a predicted mask without a mask loss: its head gets no gradient (DDP must expect unused parameters)
t = SwapTrainer(quick(mask_loss_weight=0.0), faces_a, faces_b, runs / "nomask", device="cpu", progress=False)
t.train(2)
result["nomask"] = {"final": weights(t.model), "iteration": t.iteration}

watching[0] = False
result["written"] = written
OUT.mkdir(parents=True, exist_ok=True)
torch.save(result, OUT / f"rank{RANK}.pt")
'''.replace("ITERATIONS", str(ITERATIONS))



@pytest.mark.slow
def test_two_cpu_ranks_train_in_lockstep_and_only_rank_0_writes(samples, tmp_path):
    faces_a = extract_faces(samples.talking_head, tmp_path / "faces" / "A", fps=5, size=64, detector="dlib",
                            progress=False)
    faces_b = extract_faces(samples.portraits, tmp_path / "faces" / "B", size=64, detector="dlib", progress=False)
    assert len(faces_a) >= 8 and len(faces_b) >= 2
    script = tmp_path / "ddp_worker.py"
    script.write_text(WORKER)
    runs, out = tmp_path / "runs", tmp_path / "out"
    runs.mkdir()

    t0 = time.perf_counter()
    proc = launch(script, [str(faces_a.root), str(faces_b.root), str(tmp_path), str(runs), str(out)], tmp_path)
    wall = time.perf_counter() - t0
    # (d) the run exited 0
    assert proc.returncode == 0, f"torchrun exited {proc.returncode} after {wall:.1f} s:\n{proc.stdout[-6000:]}"
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == WORLD for r in ranks)
    r0, r1 = ranks

    # (a) identical weights on both ranks, (b) changed from the (broadcast, identical) initial weights
    run0, run1 = r0["run"], r1["run"]
    assert run0["iteration"] == run1["iteration"] == ITERATIONS
    assert max_diff(run0["init"], run1["init"]) == 0.0
    assert max_diff(run0["final"], run1["final"]) <= 1e-6
    assert max_diff(run0["init"], run0["final"]) > 1e-4
    changed = [k for k in run0["init"] if not torch.equal(run0["init"][k], run0["final"][k])]
    assert len(changed) == len(run0["init"]), f"parameters DDP never updated: {set(run0['init']) - set(changed)}"
    # data parallelism: each rank drew its own batches (seed * 1000 + rank), so its losses are its own
    assert run0["drawn"] != run1["drawn"]
    assert [s["loss_a"] for s in run0["steps"]] != [s["loss_a"] for s in run1["steps"]]

    # (c) only rank 0 wrote: no file operation of rank 1 wrote anywhere in the test folder (workdirs, face
    # sets' scores) ...
    assert r1["written"] == [], f"rank 1 wrote: {r1['written'][:10]}"
    wrote0 = {p for _, p in r0["written"]}
    assert {"runs/run/checkpoint.pt", "runs/run/log.jsonl", "runs/run/config.json"} <= wrote0, sorted(wrote0)[:20]
    # ... and the files hold rank 0's run exactly once: 6 log records, no duplicate, rank 0's own losses
    work = runs / "run"
    names = {p.name for p in work.iterdir()}
    assert {"checkpoint.pt", "config.json", "log.jsonl"} <= names and not any(n.endswith(".tmp") for n in names)
    lines = (work / "log.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) == ITERATIONS
    log = read_log(work)
    assert [r["iteration"] for r in log] == list(range(1, ITERATIONS + 1))
    assert [r["loss_a"] for r in log] == [s["loss_a"] for s in run0["steps"]]
    assert [r["loss_b"] for r in log] == [s["loss_b"] for s in run0["steps"]]
    config = json.loads((work / "config.json").read_text())
    assert config["config"]["preset_name"] == "quick" and config["faces_a"] == str(faces_a.root.resolve())
    ckpt = load_torch(work / "checkpoint.pt", map_location="cpu")
    assert ckpt["iteration"] == ITERATIONS
    assert max_diff(ckpt["model"]["model"], run0["final"]) == 0.0

    # resume: both ranks continue from iteration 6 in lockstep, still on batches of their own
    res0, res1 = r0["resumed"], r1["resumed"]
    assert res0["start"] == res1["start"] == ITERATIONS and res0["iteration"] == res1["iteration"] == ITERATIONS + 2
    assert max_diff(res0["final"], res1["final"]) <= 1e-6
    assert res0["drawn"] != res1["drawn"], "after a resume every rank draws rank 0's batches"
    assert [r["iteration"] for r in read_log(runs / "resumed")] == list(range(1, ITERATIONS + 3))

    # the discriminator's weights are averaged across ranks as well
    gan0, gan1 = r0["gan"], r1["gan"]
    assert max_diff(gan0["final"], gan1["final"]) <= 1e-6
    assert max_diff(gan0["disc"], gan1["disc"]) <= 1e-6, "discriminator weights differ between ranks"
    assert max_diff(gan0["disc_init"], gan0["disc"]) > 0

    # one rank's non-finite loss makes every rank restore the checkpoint, with the lowered learning rate
    nan0, nan1 = r0["nan"], r1["nan"]
    assert nan0["iteration"] == nan1["iteration"] == 6
    assert nan0["nan_restores"] == nan1["nan_restores"] == 1 and nan0["lr_scale"] == nan1["lr_scale"] == 0.5
    assert max_diff(nan0["final"], nan1["final"]) <= 1e-6
    assert sum(r.get("event") == "nan_restore" for r in read_log(runs / "nan")) == 1

    # parameters without a gradient (the mask head when the mask loss is off) do not stall DDP
    assert r0["nomask"]["iteration"] == r1["nomask"]["iteration"] == 2
    assert max_diff(r0["nomask"]["final"], r1["nomask"]["final"]) <= 1e-6

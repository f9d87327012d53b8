"""StyleGANTrainer under torchrun: 2 CPU ranks (gloo) draw different batches yet end with identical G, D and
G_ema (gradients and dlatent_avg averaged across ranks), and only rank 0 writes the log."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facesynth.extract import extract_faces
from facesynth.safe_load import load_torch
from facesynth.training import read_log

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")

WORKER = r'''
import os
import sys

import torch

from facesynth.generate.train import StyleGANTrainConfig, StyleGANTrainer

torch.set_num_threads(1)
faces, workdir, out = sys.argv[1:4]
cfg = StyleGANTrainConfig.preset("quick")
cfg.batch_size, cfg.snapshot_every, cfg.checkpoint_every = 4, 2, 2
trainer = StyleGANTrainer(cfg, faces=faces, workdir=workdir, device="cpu", progress=False)
reals, draw = [], trainer._reals
trainer._reals = lambda: reals.append(draw()) or reals[-1]
trainer.train(3)
torch.save({"G": trainer.G.state_dict(), "D": trainer.D.state_dict(), "G_ema": trainer.G_ema.state_dict(),
            "reals": torch.stack(reals)}, os.path.join(out, f"rank{os.environ['RANK']}.pt"))
'''


@pytest.mark.slow
def test_two_ranks_stay_in_sync_and_only_rank_0_writes(samples, tmp_path):
    extract_faces(samples.talking_head, tmp_path / "faces", fps=10, size=64, detector="dlib", progress=False)
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                           str(tmp_path / "worker.py"), str(tmp_path / "faces"), str(tmp_path / "wd"), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (load_torch(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for net in ("G", "D", "G_ema"):
        for k, v in r0[net].items():
            assert torch.equal(v, r1[net][k]), f"{net}.{k} differs between ranks"
    assert not torch.equal(r0["reals"], r1["reals"])              # each rank trains on its own batches
    assert [r["iteration"] for r in read_log(tmp_path / "wd")] == [1, 2, 3]     # one writer
    assert sorted(p.name for p in (tmp_path / "wd" / "snapshots").iterdir()) == ["00000002.png"]
    assert (tmp_path / "wd" / "generator.pt").is_file()

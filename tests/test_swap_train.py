"""SwapTrainer on the real samples: it learns, logs, resumes exactly, survives kill -9 and NaNs."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from facesynth.errors import CheckpointError, ConfigError
from facesynth.extract import FaceSet, extract_faces
from facesynth.media import read_image
from facesynth.swap import SwapConfig, SwapModel, SwapTrainer, load_swap_model
from facesynth.swap.augment import apply_grid, random_affine, random_warp
from facesynth.swap.losses import dssim, masked_reconstruction_loss, ssim
from facesynth.training import LRSchedule, read_log


@pytest.fixture(scope="module")
def facesets(samples, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("faces")
    extract_faces(samples.talking_head, root / "A", fps=10, size=64, detector="dlib", progress=False)
    extract_faces(samples.portraits, root / "B", size=64, detector="dlib", progress=False)
    return root / "A", root / "B"


def quick(**overrides) -> SwapConfig:
    return SwapConfig.preset("quick", **{"preview_every": 0, "snapshot_every": 0, **overrides})


@pytest.mark.slow
def test_quick_preset_lowers_both_losses_by_a_quarter(facesets, tmp_path):
    a, b = facesets
    trainer = SwapTrainer(quick(checkpoint_every=1000), faces_a=a, faces_b=b, workdir=tmp_path / "m", progress=False)
    trainer.train(iterations=150)
    log = [r for r in read_log(tmp_path / "m") if "loss_a" in r]
    assert [r["iteration"] for r in log] == list(range(1, 151))
    for side in ("loss_a", "loss_b"):
        first = np.mean([r[side] for r in log[:10]])
        last = np.mean([r[side] for r in log[-10:]])
        assert last < 0.75 * first, (side, first, last)


def test_log_records_the_learning_rate_actually_used(facesets, tmp_path):
    a, b = facesets
    cfg = quick(lr=1e-3, warmup=4, lr_schedule="cosine", lr_total=10, min_lr=1e-4)
    SwapTrainer(cfg, faces_a=a, faces_b=b, workdir=tmp_path / "m", progress=False).train(10)
    lrs = [r["lr"] for r in read_log(tmp_path / "m")]
    schedule = LRSchedule(1e-3, "cosine", warmup=4, total=10, min_lr=1e-4)
    np.testing.assert_allclose(lrs, [schedule(i) for i in range(10)], rtol=1e-9)
    assert lrs[0] == pytest.approx(2.5e-4) and lrs[3] > lrs[1] and lrs[-1] < lrs[4]


def test_lr_schedules():
    step = LRSchedule(1.0, "step", step_size=10, gamma=0.5)
    assert [step(i) for i in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    cos = LRSchedule(1.0, "cosine", total=100, min_lr=0.1)
    assert cos(0) == pytest.approx(1.0) and cos(50) == pytest.approx(0.55) and cos(100) == pytest.approx(0.1)
    with pytest.raises(ConfigError):
        LRSchedule(1.0, "exponential")


@pytest.mark.slow
def test_train_is_a_target_and_resume_continues_exactly(facesets, tmp_path):
    a, b = facesets
    cfg = quick(checkpoint_every=5)
    straight = SwapTrainer(cfg, faces_a=a, faces_b=b, workdir=tmp_path / "straight", progress=False).train(10)
    first = SwapTrainer(cfg, faces_a=a, faces_b=b, workdir=tmp_path / "split", progress=False).train(5)
    assert first.iteration == 5
    del first
    reopened = SwapTrainer(workdir=tmp_path / "split", progress=False)     # config and faces from the workdir
    assert reopened.iteration == 5
    reopened.train(10)
    assert reopened.iteration == 10
    reopened.train(10)                                                     # already there: nothing happens
    assert reopened.iteration == 10 and len(read_log(tmp_path / "split")) == 10
    for (name, p), q in zip(straight.model.state_dict().items(), reopened.model.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    loss_straight = [r["loss_a"] for r in read_log(tmp_path / "straight")]
    loss_split = [r["loss_a"] for r in read_log(tmp_path / "split")]
    np.testing.assert_allclose(loss_straight, loss_split, rtol=1e-4)


KILL_WORKER = """
import sys
from facesynth.swap import SwapConfig, SwapTrainer
cfg = SwapConfig.preset("quick", checkpoint_every=3, preview_every=0, snapshot_every=0)
SwapTrainer(cfg, faces_a=sys.argv[1], faces_b=sys.argv[2], workdir=sys.argv[3], progress=False).train(100000)
"""


@pytest.mark.slow
def test_kill_9_at_any_moment_loses_nothing_saved(facesets, tmp_path):
    a, b = facesets
    script = tmp_path / "worker.py"
    script.write_text(KILL_WORKER)
    workdir = tmp_path / "m"
    saved = 0
    rng = np.random.default_rng(0)
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(a), str(b), str(workdir)], env=os.environ.copy(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline and len(read_log(workdir)) < saved + 8:   # let it train past a checkpoint
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0, 0.3)))                                 # then kill at a random moment
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        trainer = SwapTrainer(workdir=workdir, progress=False)
        assert trainer.iteration >= saved + 3, proc.stderr.read().decode()[-2000:]
        log = read_log(workdir)
        assert [r["iteration"] for r in log] == list(range(1, trainer.iteration + 1))   # log cut to the checkpoint
        assert not [p for p in workdir.iterdir() if p.name.endswith(".tmp")]
        saved = trainer.iteration
        del trainer


def test_non_finite_loss_restores_the_checkpoint_and_lowers_the_lr(facesets, tmp_path, monkeypatch):
    a, b = facesets
    trainer = SwapTrainer(quick(checkpoint_every=2), faces_a=a, faces_b=b, workdir=tmp_path / "m", progress=False)
    trainer.train(4)
    saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    real_step = trainer.train_step
    calls = {"n": 0}

    def exploding(iteration):
        calls["n"] += 1
        if calls["n"] == 2:
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.add_(1.0)                       # corrupt the weights, as a diverging step would
            return {"loss_a": math.nan, "loss_b": 0.1}
        return real_step(iteration)

    monkeypatch.setattr(trainer, "train_step", exploding)
    trainer.train(6)            # step 5 succeeds, the next one diverges: back to the checkpoint at 4, redo 5 and 6
    assert trainer.iteration == 6 and trainer.schedule.scale == pytest.approx(0.5)
    events = [r for r in read_log(tmp_path / "m") if r.get("event") == "nan_restore"]
    assert len(events) == 1 and events[0]["bad"] == ["loss_a"]
    log = [r for r in read_log(tmp_path / "m") if "loss_a" in r]
    assert [r["iteration"] for r in log] == [1, 2, 3, 4, 5, 6]          # the undone step 5 is not in the log twice
    assert log[-1]["lr"] == pytest.approx(0.5 * log[0]["lr"])
    moved = [(trainer.model.state_dict()[k] - v).abs().max().item() for k, v in saved.items()]
    assert max(moved) < 0.5                             # restored, not carrying the +1 corruption


@pytest.mark.slow
def test_per_face_losses_previews_backups_and_snapshots(facesets, tmp_path):
    a, b = facesets
    cfg = quick(checkpoint_every=10, preview_every=10, snapshot_every=20)
    trainer = SwapTrainer(cfg, faces_a=a, faces_b=b, workdir=tmp_path / "m", progress=False).train(20)
    for path in (a, b):
        losses = [f.scores.get("loss") for f in FaceSet.open(path)]
        assert sum(v is not None for v in losses) >= 0.8 * len(losses)
        assert all(0 < v < 2 for v in losses if v is not None)
    preview = read_image(tmp_path / "m" / "previews" / "00000020.png")
    assert preview.shape[1] == 6 * 64 and preview.shape[0] in (64, 128, 192, 256) and preview.std() > 5
    assert (tmp_path / "m" / "backup.pt").is_file()
    assert sorted(p.name for p in (tmp_path / "m" / "snapshots").iterdir()) == ["00000020.pt"]
    model = load_swap_model(tmp_path / "m", device="cpu")
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(model(x, "b")[0], trainer.model.eval()(x, "b")[0])
    snap = load_swap_model(tmp_path / "m", device="cpu", which=tmp_path / "m" / "snapshots" / "00000020.pt")
    torch.testing.assert_close(snap(x, "a")[0], model(x, "a")[0])


def test_pruning_marks_the_log_where_the_data_changed(facesets, tmp_path):
    a, b = facesets
    trainer = SwapTrainer(quick(), faces_a=a, faces_b=b, workdir=tmp_path / "m", progress=False).train(3)
    fs = FaceSet.open(a)
    dropped = fs.ids[:3]
    fs.exclude(dropped)
    try:
        trainer.reload_faces()
        trainer.train(5)
    finally:
        FaceSet.open(a).include(dropped)
    log = read_log(tmp_path / "m")
    marked = [r for r in log if r.get("event") == "data_changed"]
    assert len(marked) == 1 and marked[0]["iteration"] == 4
    assert marked[0]["faces_a"] == marked[0]["faces_a_before"] - 3
    assert not set(dropped) & set(trainer.data["a"].ids)


def test_saving_face_losses_never_undoes_pruning_done_on_disk(facesets, tmp_path):
    a, b = facesets
    trainer = SwapTrainer(quick(checkpoint_every=4), faces_a=a, faces_b=b, workdir=tmp_path / "m", progress=False)
    trainer.train(2)
    fs = FaceSet.open(a)
    dropped = fs.ids[-2:]
    fs.exclude(dropped)                       # pruned by another process / the widget, no reload_faces()
    try:
        trainer.train(4)                      # the checkpoint at 4 writes per-face losses
        reopened = FaceSet.open(a)
        assert [f.id for f in reopened if f.excluded] == dropped
        assert sum("loss" in f.scores for f in reopened) > 0
    finally:
        FaceSet.open(a).include(dropped)


def test_default_config_round_trips_through_json():
    cfg = SwapConfig()
    assert cfg.preset_name == "custom"
    assert SwapConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert SwapConfig.preset("paper").preset_name == "paper"


def test_workdir_guards(facesets, tmp_path):
    a, b = facesets
    with pytest.raises(ConfigError, match="no model"):
        SwapTrainer(workdir=tmp_path / "empty")
    SwapTrainer(quick(), faces_a=a, faces_b=b, workdir=tmp_path / "m", progress=False).train(2)
    with pytest.raises(ConfigError, match="architecture"):
        SwapTrainer(SwapConfig.preset("quick", architecture="liae"), workdir=tmp_path / "m")
    (tmp_path / "m" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        SwapTrainer(workdir=tmp_path / "m")
    with pytest.raises(CheckpointError):
        load_swap_model(tmp_path / "nowhere")


@pytest.mark.parametrize("preset,resolution,params", [("quick", 64, (0.5e6, 5e6)), ("paper", 64, (60e6, 120e6)),
                                                      ("dfl-df", 128, (30e6, 90e6)), ("dfl-liae", 128, (50e6, 150e6))])
@pytest.mark.slow
def test_presets_build_the_documented_networks(preset, resolution, params):
    cfg = SwapConfig.preset(preset)
    model = SwapModel(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert cfg.resolution == resolution and params[0] < n < params[1]
    x = torch.rand(1, 3, resolution, resolution)
    for direction in ("a2b", "b2a"):
        rgb, mask = model.swap(x, direction)
        assert rgb.shape == (1, 3, resolution, resolution) and mask.shape == (1, 1, resolution, resolution)
        assert 0 <= rgb.min() and rgb.max() <= 1
    if preset == "paper":      # faceswap "Original": 128-256-512-1024 encoder, 1024-d bottleneck, batch 12
        convs = [m.conv.out_channels for m in model.encoder.layers]
        assert convs == [128, 256, 512, 1024] and model.inter.dense1.out_features == 1024 and cfg.batch_size == 12


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.random((48, 48))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    ref = structural_similarity(a, b, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    ours = ssim(torch.tensor(a)[None, None].float(), torch.tensor(b)[None, None].float()).mean().item()
    assert ours == pytest.approx(ref, abs=1e-4)
    x = torch.rand(2, 3, 32, 32)
    assert dssim(x, x).abs().max() < 1e-6


def test_masked_loss_ignores_the_background():
    target = torch.rand(2, 3, 32, 32)
    pred = target.clone()
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    pred[..., :4, :] = 0                                        # wrong only outside the mask
    loss = masked_reconstruction_loss(pred, target, mask, l1=1, mse=1, dssim_weight=1)
    assert loss.shape == (2,) and loss.abs().max() < 1e-6
    pred[..., 10:12, 10:12] = 0                                 # wrong inside the mask
    assert (masked_reconstruction_loss(pred, target, mask, l1=1, mse=1, dssim_weight=1) > 1e-4).all()


def test_augmentation_identity_and_warp():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32)
    grid = random_affine(3, 32, 0, 0, 0, 0, g, torch.device("cpu"))
    torch.testing.assert_close(apply_grid(x, grid), x, atol=1e-4, rtol=0)
    flipped = random_affine(3, 32, 0, 0, 0, 1.0, g, torch.device("cpu"))
    torch.testing.assert_close(apply_grid(x, flipped), x.flip(-1), atol=1e-4, rtol=0)
    warped = apply_grid(x, random_warp(grid, 1.0, g))
    assert (warped - x).abs().mean() > 0.05
    border = random_warp(grid, 1.0, g)[:, [0, -1], :, :] - grid[:, [0, -1], :, :]
    assert border.abs().max() < 0.05                            # the frame's edge barely moves

"""StyleGANTrainer on a real face set (the sample talking head): losses, EMA, logs, checkpoints, resume."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from facesynth.errors import ConfigError, NoFaceError
from facesynth.extract import FaceSet, extract_faces
from facesynth.generate import load_stylegan
from facesynth.generate.model import Discriminator
from facesynth.generate.train import (GENERATOR_FILE, StyleGANTrainConfig, StyleGANTrainer, d_logistic_r1_loss,
                                      g_nonsaturating_loss, lod_at, process_reals)
from facesynth.training import read_log


@pytest.fixture(scope="module")
def faces(samples, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sg_faces")
    extract_faces(samples.talking_head, root / "A", fps=10, size=64, detector="dlib", progress=False)
    return root / "A"


def quick(**overrides) -> StyleGANTrainConfig:
    cfg = StyleGANTrainConfig.preset("quick")
    cfg.batch_size, cfg.snapshot_every, cfg.checkpoint_every = 4, 4, 4
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def test_losses_are_the_official_formulas():
    logits = torch.tensor([-2.0, 0.5, 3.0])
    assert math.isclose(float(g_nonsaturating_loss(logits)), float(F.softplus(-logits).mean()), rel_tol=1e-6)
    a = torch.randn(1, 3, 4, 4)                   # a linear D: its gradient on the reals is a, so R1 = |a|^2
    D = lambda x: (x * a).flatten(1).sum(1)       # noqa: E731
    real, fake = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    loss, r1 = d_logistic_r1_loss(D, real, fake, r1_gamma=10.0)
    expected_r1 = float(a.square().sum())
    plain = float(F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean())
    assert math.isclose(float(r1), expected_r1, rel_tol=1e-5)
    assert math.isclose(float(loss.detach()), plain + 5.0 * expected_r1, rel_tol=1e-5)


def test_training_logs_snapshots_and_exports_a_loadable_generator(faces, tmp_path):
    tr = StyleGANTrainer(quick(), faces=faces, workdir=tmp_path / "wd", device="cpu", progress=False)
    assert len(tr.images) == 40 and tr.images.shape[1:] == (3, 32, 32)
    avg0 = tr.G.dlatent_avg.clone()
    tr.train(8)
    log = read_log(tmp_path / "wd")
    assert [r["iteration"] for r in log] == list(range(1, 9))
    assert all(math.isfinite(r[k]) for r in log for k in ("loss_g", "loss_d", "r1")) and log[0]["lr"] == 0.002
    assert sorted(p.name for p in (tmp_path / "wd" / "snapshots").iterdir()) == ["00000004.png", "00000008.png"]
    assert float((tr.G.dlatent_avg - avg0).abs().max()) > 0          # the moving average of W moves
    G = load_stylegan(tmp_path / "wd" / GENERATOR_FILE)
    with torch.no_grad():
        assert torch.allclose(G(torch.ones(2, 64)), tr.G_ema(torch.ones(2, 64)), atol=1e-6)


def test_ema_follows_g_with_the_configured_half_life(faces, tmp_path):
    tr = StyleGANTrainer(quick(ema_kimg=0.004), faces=faces, workdir=tmp_path / "wd", device="cpu", progress=False)
    before = tr.G_ema.mapping.dense[0].weight.clone()
    tr.train(1)
    g, ema = tr.G.mapping.dense[0].weight, tr.G_ema.mapping.dense[0].weight
    beta = 0.5 ** (4 / 4.0)                        # batch 4, half-life 4 images
    assert torch.allclose(ema, g + (before - g) * beta, atol=1e-6)


def test_resume_continues_where_the_checkpoint_stands(faces, tmp_path):
    StyleGANTrainer(quick(), faces=faces, workdir=tmp_path / "wd", device="cpu", progress=False).train(4)
    again = StyleGANTrainer(None, workdir=tmp_path / "wd", device="cpu", progress=False)
    assert again.iteration == 4 and again.faces_path == str(faces.resolve())
    again.train(6)
    assert [r["iteration"] for r in read_log(tmp_path / "wd")] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ConfigError, match="another network configuration"):
        StyleGANTrainer(StyleGANTrainConfig.preset("64"), workdir=tmp_path / "wd", device="cpu")


def test_empty_face_set_is_refused(tmp_path, faces):
    shutil.copytree(faces, tmp_path / "empty")
    fs = FaceSet.open(tmp_path / "empty")
    fs.exclude([f.id for f in fs])
    with pytest.raises(NoFaceError, match="no active faces"):
        StyleGANTrainer(quick(), faces=tmp_path / "empty", workdir=tmp_path / "wd", device="cpu")


@pytest.mark.parametrize("prob, calls", [(1.0, 2), (0.0, 1)])
def test_mixing_regularisation_draws_a_second_latent(faces, tmp_path, prob, calls):
    tr = StyleGANTrainer(quick(), faces=faces, workdir=tmp_path / "wd", device="cpu", progress=False)
    tr.config.model.style_mixing_prob = prob
    seen = []
    mapping = tr.G.mapping.forward
    tr.G.mapping.forward = lambda z, *a, **k: seen.append(z) or mapping(z, *a, **k)
    img = tr._fakes(4)
    assert img.shape == (4, 3, 32, 32) and len(seen) == calls
    if calls == 2:
        assert not torch.equal(seen[0], seen[1])


def test_progressive_schedule_is_the_official_one():
    # 32 px from 8 px: lod 2 → 0, each resolution 1 kimg stable then 1 kimg fading in
    lods = [lod_at(k, 32, 8, 1.0, 1.0) for k in (0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.5, 4.0, 9.0)]
    assert lods == [2.0, 2.0, 2.0, 1.5, 1.0, 1.0, 0.5, 0.0, 0.0]


def test_reals_follow_the_level_of_detail():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(process_reals(x, 0.0), x)
    half = process_reals(x, 1.0)                     # 2x2 averages, shown as 2x2 blocks
    assert torch.equal(half[0, 0, :2, :2], torch.full((2, 2), 2.5)) and float(half[0, 0, 3, 3]) == 12.5
    assert torch.allclose(process_reals(x, 0.5), (x + half) / 2)


def test_discriminator_reads_the_lower_resolution_while_growing():
    from facesynth.generate import StyleGANConfig

    D = Discriminator(StyleGANConfig.preset("quick"))
    img = torch.randn(4, 3, 32, 32)
    for lod, full_res_used in ((0.0, True), (0.5, True), (1.0, False)):
        D.lod.fill_(lod)
        D.zero_grad()
        D(img).sum().backward()
        assert (D.fromrgb[0].weight.grad.abs().sum() > 0) == full_res_used
        assert (D.fromrgb[1].weight.grad is not None and D.fromrgb[1].weight.grad.abs().sum() > 0) == (lod > 0)


def test_progressive_training_lowers_the_lod(faces, tmp_path):
    cfg = quick(progressive=True, lod_initial_resolution=8, lod_training_kimg=0.004, lod_transition_kimg=0.008)
    tr = StyleGANTrainer(cfg, faces=faces, workdir=tmp_path / "wd", device="cpu", progress=False)
    tr.train(6)
    lods = [r["lod"] for r in read_log(tmp_path / "wd")]
    assert lods == [2.0, 2.0, 1.5, 1.0, 1.0, 0.5]          # batch 4: 4 images stable, 8 fading in, per level
    assert float(tr.G.synthesis.lod) == 0.5 and float(tr.G_ema.synthesis.lod) == 0.5


def test_diff_augment_keeps_shapes_and_only_moves_or_recolours():
    from facesynth.generate.train import diff_augment
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    assert torch.equal(diff_augment(x, ()), x)
    g = torch.Generator().manual_seed(0)
    moved = diff_augment(x, ("translation",), g)
    assert moved.shape == x.shape
    values = set(x.flatten().tolist()) | {0.0}         # a shift only moves pixels (zero padding comes in)
    assert set(moved.flatten().tolist()) <= values
    recoloured = diff_augment(x, ("color",), torch.Generator().manual_seed(1))
    assert recoloured.shape == x.shape and not torch.allclose(recoloured, x)
    again = diff_augment(x, ("color",), torch.Generator().manual_seed(1))
    assert torch.equal(recoloured, again)


@pytest.mark.slow
def test_lazy_r1_runs_the_penalty_every_r1_every_steps_scaled_by_it(faces, tmp_path, monkeypatch):
    import facesynth.generate.train as train_module
    gammas = []
    real = train_module.d_logistic_r1_loss

    def recording(D, reals, fakes, gamma):
        gammas.append(gamma)
        return real(D, reals, fakes, gamma)

    monkeypatch.setattr(train_module, "d_logistic_r1_loss", recording)
    cfg = quick(r1_every=2, r1_gamma=5.0)
    StyleGANTrainer(cfg, faces=faces, workdir=tmp_path / "w", progress=False).train(4)
    assert gammas == [10.0, 0.0, 10.0, 0.0]           # steps 0 and 2 (the official lazy schedule starts at 0)
    log = [r for r in read_log(tmp_path / "w") if "r1" in r]
    assert all(math.isfinite(r["r1"]) and math.isfinite(r["loss_d"]) for r in log)


def test_quick_faces_preset_is_the_quick_network_with_the_faster_recipe():
    cfg = StyleGANTrainConfig.preset("quick-faces")
    assert cfg.model.resolution == StyleGANTrainConfig.preset("quick").model.resolution
    assert (cfg.lr, cfg.r1_every, cfg.model.mapping_layers, cfg.model.style_mixing_prob) == (0.006, 16, 2, 0.0)
    assert StyleGANTrainConfig.from_dict(cfg.to_dict()) == cfg

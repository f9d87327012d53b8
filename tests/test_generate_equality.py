"""StyleGAN v1 gives the official TensorFlow network's numbers (to 1e-4) for official pickles.

tests/data/stylegan/ holds small random-weight (G, D, Gs) pickles written by the official code and that code's
outputs (README.md there says how they were made). Configurations: r32 (official defaults, tiny widths), r128
(the fused transposed-conv upsampling at 128 px), variant (labels, relu, no constant input, pixel norm, no
instance norm, no blur, fused upsampling forced at 8 and 16 px, mapping lrmul 0.1, no latent normalisation) and
nostyle (no styles, no noise, no equalised learning rate, the 4-tap blur [1,3,3,1]).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facesynth.generate import load_stylegan
from facesynth.generate.sampling import style_mixing

DATA = Path(__file__).parent / "data" / "stylegan"
CONFIGS = ["r32", "r128", "variant", "nostyle"]
TOL = 1e-4


def _load(name: str):
    torch.set_num_threads(1)
    G = load_stylegan(DATA / f"{name}.pkl")
    ref = {k: torch.from_numpy(v) for k, v in np.load(DATA / f"{name}.npz").items()}
    ref["c"] = ref["labels"] if ref["labels"].shape[1] else None
    return name, G, ref


@pytest.fixture(scope="module", params=CONFIGS)
def case(request):
    return _load(request.param)


@pytest.fixture(scope="module", params=[c for c in CONFIGS if c != "r128"])   # r128 stores fewer outputs (size)
def small_case(request):
    return _load(request.param)


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


@torch.no_grad()
def test_mapping_matches_official(case):
    _, G, ref = case
    w = G.mapping(ref["z"], ref["c"])
    assert w.shape == ref["w"].shape == (ref["z"].shape[0], G.num_layers, G.w_dim)
    assert _err(w, ref["w"]) < TOL


@torch.no_grad()
def test_images_without_truncation_match_official(case):
    _, G, ref = case
    img = G(ref["z"], ref["c"], truncation_psi=1.0, noise_mode="const")
    assert img.shape == (ref["z"].shape[0], 3, G.resolution, G.resolution)
    assert _err(img, ref["img_const"]) < TOL


@torch.no_grad()
def test_truncated_images_match_official(case):
    _, G, ref = case
    assert _err(G(ref["z"], ref["c"], truncation_psi=0.7, truncation_cutoff=8, noise_mode="const"), ref["img_trunc"]) < TOL
    # the official G_style defaults (psi 0.7, cutoff 8) apply when the call says nothing
    assert _err(G(ref["z"], ref["c"]), ref["img_trunc"]) < TOL
    if "img_trunc_c2" in ref:                  # not stored for r128 (fixture size)
        assert _err(G(ref["z"], ref["c"], truncation_psi=0.5, truncation_cutoff=2), ref["img_trunc_c2"]) < TOL


@torch.no_grad()
def test_synthesis_of_arbitrary_w_matches_official(small_case):
    _, G, ref = small_case
    assert _err(G.synthesis(ref["w_rand"], noise_mode="const"), ref["img_w_rand"]) < TOL


@torch.no_grad()
def test_style_mixing_matches_official_figure(small_case):
    _, G, ref = small_case
    # generate_figures.draw_style_mixing_figure: coarse rows 0-3 of the destination's W come from the source
    mixed = style_mixing(G, ref["w"], ref["w_dst"], rows=range(0, 4))
    assert _err(mixed, ref["img_mix"]) < TOL


@torch.no_grad()
def test_network_halfway_through_progressive_growing_matches_official():
    G = load_stylegan(DATA / "r32.pkl")
    ref = np.load(DATA / "r32.npz")
    G.synthesis.lod.fill_(1.5)
    img = G(torch.from_numpy(ref["z"]), truncation_psi=1.0)
    assert _err(img, torch.from_numpy(ref["img_lod1.5"])) < TOL


def test_configuration_is_derived_from_variables():
    G = load_stylegan(DATA / "r128.pkl")
    c = G.cfg
    assert (c.resolution, c.latent_size, c.dlatent_size, c.mapping_layers) == (128, 16, 16, 8)
    assert c.channels == (16, 16, 8, 4, 2, 1) and G.num_layers == 12
    assert [conv.up for conv in G.synthesis.convs[1::2]] == ["nearest"] * 4 + ["fused"]
    v = load_stylegan(DATA / "variant.pkl").cfg
    assert (v.label_size, v.latent_size, v.mapping_fmaps, v.mapping_layers, v.nonlinearity) == (3, 12, 20, 3, "relu")
    assert not v.const_input_layer and v.use_pixel_norm and not v.use_instance_norm and v.blur_filter is None
    s = load_stylegan(DATA / "nostyle.pkl").cfg
    assert not s.use_styles and not s.use_noise and not s.use_wscale and s.blur_filter == (1, 3, 3, 1)


def test_gs_not_g_is_loaded_by_default():
    ref = np.load(DATA / "r32.npz")
    z = torch.from_numpy(ref["z"])
    with torch.no_grad():
        g = load_stylegan(DATA / "r32.pkl", network="G")(z, truncation_psi=1.0)
        gs = load_stylegan(DATA / "r32.pkl")(z, truncation_psi=1.0)
    assert _err(gs, torch.from_numpy(ref["img_const"])) < TOL
    assert float((g - gs).abs().max()) > 0.05


@torch.no_grad()
def test_noise_modes():
    _, G, ref = _load("r32")
    z = ref["z"]
    const = G(z, noise_mode="const")
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    r1, r2 = G(z, noise_mode="random", generator=g1), G(z, noise_mode="random", generator=g2)
    assert torch.equal(r1, r2) and float((r1 - const).abs().max()) > 1e-3
    assert float((r1 - G(z, noise_mode="random")).abs().max()) > 1e-3        # fresh noise each call
    none = G(z, noise_mode="none")
    zeroed = G.synthesis(G.truncate(G.mapping(z), 0.7, 8), noise=[torch.zeros_like(n) for n in G.synthesis.noise_buffers])
    assert float((none - zeroed).abs().max()) < 1e-6 and float((none - const).abs().max()) > 1e-3

"""Sampling tools and ``facesynth generate`` on the official-layout r32 fixture."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facesynth.cli import main
from facesynth.errors import ConfigError
from facesynth.generate import load_stylegan
from facesynth.generate import sampling as S
from facesynth.media import probe, read_image

PKL = Path(__file__).parent / "data" / "stylegan" / "r32.pkl"


@pytest.fixture(scope="module")
def G():
    torch.set_num_threads(1)
    return load_stylegan(PKL)


def test_parse_seeds():
    assert S.parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert S.parse_seeds("5") == [5] and S.parse_seeds([2, 1]) == [2, 1]
    for bad in ("3-1", "a", "-2"):
        with pytest.raises(ConfigError, match="seed"):
            S.parse_seeds(bad)


def test_seed_latents_are_the_official_draws():
    z = S.seed_latents([0, 42], 24)
    assert np.allclose(z[1].numpy(), np.random.RandomState(42).randn(24).astype(np.float32))


def test_a_seed_gives_the_same_face_at_any_batch_size(G):
    a = S.generate_images(G, "0-4", batch_size=2)
    b = S.generate_images(G, [3], batch_size=1)
    assert a.shape == (5, 3, 32, 32)
    assert float((a[3] - b[0]).abs().max()) < 1e-5


def test_truncation_sweep_goes_from_the_face_to_the_average(G):
    psis = (1.0, 0.5, 0.0)
    sweep = S.truncation_sweep(G, [0, 1], psis).view(2, 3, 3, 32, 32)
    plain = S.generate_images(G, [0, 1], truncation_psi=1.0)
    assert float((sweep[:, 0] - plain).abs().max()) < 1e-5
    assert float((sweep[0, 2] - sweep[1, 2]).abs().max()) < 1e-5       # psi 0: both seeds are the average face
    assert float((sweep[0, 1] - sweep[1, 1]).abs().max()) > 0.01


def test_style_mixing_grid_layout(G):
    grid = S.style_mixing_grid(G, [0, 1, 2], [10, 11], "coarse")
    assert grid.shape == (12, 3, 32, 32)
    assert torch.all(grid[0] == 1.0)                                    # the blank corner (white in [0, 1])
    src = S.generate_images(G, [0, 1, 2], truncation_psi=None)
    dst = S.generate_images(G, [10, 11], truncation_psi=None)
    assert float((grid[1:4] - src).abs().max()) < 1e-5
    assert float((grid[8] - dst[1]).abs().max()) < 1e-5
    w_src, w_dst = G.mapping(S.seed_latents([1], 24)), G.mapping(S.seed_latents([11], 24))
    assert float((grid[10] - S.style_mixing(G, w_src, w_dst, range(4))[0]).abs().max()) < 1e-5
    # "fine" rows copied from a source leave the coarse structure of the destination
    fine = S.style_mixing(G, w_src, w_dst, "fine")
    assert float((fine - dst[1:]).abs().mean()) < float((grid[10] - dst[1]).abs().mean())


def test_slerp_keeps_the_norm_and_hits_the_ends():
    a, b = torch.randn(2, 64), torch.randn(2, 64)
    b = b / b.norm(dim=-1, keepdim=True) * a.norm(dim=-1, keepdim=True)
    assert torch.allclose(S.slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(S.slerp(a, b, 1.0), b, atol=1e-5)
    assert torch.allclose(S.slerp(a, b, 0.3).norm(dim=-1), a.norm(dim=-1), rtol=1e-4)


@pytest.mark.parametrize("space", ["z", "w"])
def test_interpolation_starts_and_ends_on_the_seeds(G, space):
    frames = list(S.interpolation_frames(G, [0, 5, 9], steps=4, space=space))
    assert len(frames) == 9
    ends = S.generate_images(G, [0, 5, 9])
    for k, i in enumerate((0, 4, 8)):
        assert float((frames[i] - ends[k]).abs().max()) < 1e-5
    assert float((frames[1] - frames[0]).abs().mean()) > 0


def test_noise_variation_changes_only_what_noise_touches(G):
    images, std = S.noise_variation(G, seed=3, n=4)
    assert images.shape == (4, 3, 32, 32) and std.shape == (1, 32, 32)
    assert float(std.mean()) > 1e-3
    assert float((images[0] - images[1]).abs().max()) > 1e-3


def test_generate_cli_writes_a_grid(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["generate", "--pkl", str(PKL), "--seeds", "0-3", "--trunc", "0.7", "--device", "cpu", str(out)]) == 0
    img = read_image(out)
    assert img.shape == (64, 64, 3)
    expected = (S.to_unit(S.generate_images(load_stylegan(PKL), [1]))[0] * 255).round().permute(1, 2, 0).numpy()
    assert np.abs(img[:32, 32:].astype(float) - expected).max() <= 1          # seed 1 is the top-right cell
    assert "4 images" in capsys.readouterr().out


def test_generate_cli_other_modes(tmp_path):
    args = ["--pkl", str(PKL), "--seeds", "0-2", "--device", "cpu"]
    assert main(["generate", *args, "--mode", "mixing", "--dst-seeds", "7,8", str(tmp_path / "mix.png")]) == 0
    assert read_image(tmp_path / "mix.png").shape == (96, 128, 3)
    assert main(["generate", *args, "--mode", "truncation", str(tmp_path / "trunc.png")]) == 0
    assert read_image(tmp_path / "trunc.png").shape == (96, 192, 3)
    assert main(["generate", *args, "--mode", "video", "--steps", "3", "--space", "w", str(tmp_path / "i.mp4")]) == 0
    assert probe(tmp_path / "i.mp4").frame_count == 7
    assert main(["generate", *args, str(tmp_path / "folder")]) == 0
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == [      # each image with its provenance sidecar
        "seed0000.png", "seed0000.png.provenance.json", "seed0001.png", "seed0001.png.provenance.json",
        "seed0002.png", "seed0002.png.provenance.json"]


def test_generate_cli_refuses_a_hostile_file_with_one_line(tmp_path, capsys):
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Payload()))
    assert main(["generate", "--pkl", str(tmp_path / "evil.pkl"), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("facesynth: error:") and "nothing was executed" in err
    assert not (tmp_path / "pwned").exists()

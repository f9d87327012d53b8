"""Projection into W and W+ on the official-layout r32 fixture: the loss falls, the shapes are right, and a
missing perceptual network is said plainly."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facesynth.cli import main
from facesynth.generate import load_stylegan
from facesynth.generate import sampling as S
from facesynth.generate.project import PixelOnlyProjectionWarning, VGGPerceptual, project
from facesynth.media import read_image, write_image

PKL = Path(__file__).parent / "data" / "stylegan" / "r32.pkl"


@pytest.fixture(scope="module")
def G():
    torch.set_num_threads(1)
    return load_stylegan(PKL)


@pytest.fixture(scope="module")
def target(G):
    return S.to_unit(S.generate_images(G, [7], truncation_psi=0.5, truncation_cutoff=8))[0]    # a face G can draw


@pytest.mark.parametrize("w_plus", [False, True])
def test_projection_fits_a_face_the_generator_can_draw(G, target, w_plus):
    with pytest.warns(PixelOnlyProjectionWarning, match="pixel loss only"):
        res = project(G, target, steps=60, w_plus=w_plus, lr=0.1)
    assert res.w.shape == (1, G.num_layers, G.w_dim) and not res.perceptual
    assert (res.w[0, 0] == res.w[0, -1]).all() != w_plus          # W: one row for every layer
    start = float(((G.synthesis(G.dlatent_avg.view(1, 1, -1).expand(1, G.num_layers, -1)) - (target * 2 - 1)) ** 2).mean())
    final = float(((res.image - (target * 2 - 1)) ** 2).mean())
    assert final < 0.3 * start
    assert res.pixel_losses[-1] < res.pixel_losses[0]


def test_perceptual_loss_is_used_when_given(G, target):
    from torchvision.models import vgg16

    torch.manual_seed(0)
    vgg = VGGPerceptual(vgg16().features.eval().requires_grad_(False))       # random weights: the code path only
    res = project(G, target, steps=3, perceptual=vgg)
    assert res.perceptual and res.losses[0] > res.pixel_losses[0]


def test_project_cli_writes_w_and_a_comparison(G, target, tmp_path):
    write_image(tmp_path / "face.png", target)
    out = tmp_path / "proj"
    with pytest.warns(PixelOnlyProjectionWarning):
        rc = main(["project", "--pkl", str(PKL), "--steps", "20", "--no-align", "--mix-seeds", "1,2",
                   "--device", "cpu", str(tmp_path / "face.png"), str(out)])
    assert rc == 0
    from facesynth.safe_load import load_torch
    w = load_torch(out / "w.pt")
    assert w.shape == (1, G.num_layers, G.w_dim)
    assert read_image(out / "compare.png").shape == (32, 64, 3)
    assert read_image(out / "mixing.png").shape == (64, 96, 3)


def test_project_face_aligns_a_real_photo_first(G, samples):
    from facesynth.generate.project import project_face

    with pytest.warns(PixelOnlyProjectionWarning):
        res = project_face(G, samples.astronaut, detector="dlib", steps=5)
    assert res.target.shape == (1, 3, 32, 32) and res.target.min() >= -1 and res.target.max() <= 1
    assert res.target.std() > 0.1                    # a face crop, not a blank

"""Projection: the W (one style for every layer) or W+ (one per layer) that makes G draw a given face.

Optimisation with Adam from the average W (``dlatent_avg``), with a pixel loss (mean squared error in G's [-1, 1]
range) plus, when VGG16's ImageNet weights are in torchvision's cache (``$TORCH_HOME/hub/checkpoints/
vgg16-397923af.pth``), a perceptual loss: the squared distance between channel-normalised VGG16 features at
four depths (the LPIPS recipe without its learned per-channel weights). Without those weights the loss is
pixel-only and a ``PixelOnlyProjectionWarning`` says so. Noise inputs stay at their stored maps.

The target should be aligned as G's training faces were: ``project_face`` aligns a photo with
``facesynth.extract`` first. (facesynth's alignment template is not the FFHQ/CelebA-HQ crop, so a released
generator's projection of it is looser than of an FFHQ-aligned face.)
"""
from __future__ import annotations

import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facesynth.errors import ConfigError
from facesynth.generate.model import StyleGAN

__all__ = ["project", "project_face", "ProjectionResult", "PixelOnlyProjectionWarning", "VGG16_FILE",
           "VGGPerceptual", "load_vgg16_features"]

VGG16_FILE = "vgg16-397923af.pth"      # torchvision's VGG16_Weights.IMAGENET1K_V1
_TAPS = (3, 8, 15, 22)                  # relu1_2, relu2_2, relu3_3, relu4_3 (the LPIPS layers)


class PixelOnlyProjectionWarning(UserWarning):
    """VGG16 weights are not in torchvision's cache: projection uses the pixel loss alone."""


@dataclass
class ProjectionResult:
    w: torch.Tensor                     # [1, num_layers, w_dim]; every row equal in W mode
    image: torch.Tensor                 # G's image of w, [1, 3, H, W] in about [-1, 1]
    target: torch.Tensor                # the target as optimised against, [1, 3, H, W] in [-1, 1]
    losses: list[float] = field(default_factory=list)       # total loss per step
    pixel_losses: list[float] = field(default_factory=list)
    perceptual: bool = False            # whether the VGG16 perceptual loss was used


def project(G: StyleGAN, target: torch.Tensor | np.ndarray, steps: int = 500, w_plus: bool = False, lr: float = 0.05,
            perceptual_weight: float = 1.0, pixel_weight: float = 1.0, perceptual: "VGGPerceptual | None | str" = "auto",
            noise_ramp: float = 0.05, seed: int = 0) -> ProjectionResult:
    """Find W (or W+) whose image matches ``target``.

    Args:
        target: uint8 H×W×3 RGB, or float [3, H, W] / [1, 3, H, W] in [0, 1]; resized to G's resolution.
        steps: Adam steps (cosine-decayed learning rate ``lr``).
        w_plus: optimise one W per layer (closer fit, less "on the manifold") instead of one shared W.
        perceptual: "auto" (VGG16 when its weights are cached), None (pixel only) or a VGGPerceptual.
        noise_ramp: Gaussian jitter added to W, decaying to 0 over the first 3/4 of the steps (as the official
            StyleGAN2 projector, to escape poor starts).
    """
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    device = G.dlatent_avg.device
    tgt = _as_target(target, G.resolution).to(device)
    if perceptual == "auto":
        perceptual = VGGPerceptual.from_cache()
        if perceptual is None:
            warnings.warn(f"VGG16 weights ({VGG16_FILE}) are not in torchvision's cache "
                          f"({_hub_dir()}): projecting with the pixel loss only, which gives blurrier matches. Put "
                          f"the file there for the perceptual loss.", PixelOnlyProjectionWarning, stacklevel=2)
    if perceptual is not None:
        perceptual = perceptual.to(device)
        tgt_feats = perceptual.features(tgt)
    g = torch.Generator(device="cpu").manual_seed(seed)
    w_std = _w_std(G)
    start = G.dlatent_avg.detach().clone().view(1, 1, -1)
    w = start.repeat(1, G.num_layers if w_plus else 1, 1).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr, betas=(0.9, 0.999))
    result = ProjectionResult(w=w, image=tgt, target=tgt, perceptual=perceptual is not None)
    G.requires_grad_(False)
    for step in range(steps):
        t = step / steps
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * t)) * min(1.0, t / 0.05 + 0.05)
        jitter = w_std * noise_ramp * max(0.0, 1 - t / 0.75) ** 2
        w_in = w + torch.randn(w.shape, generator=g).to(device) * jitter
        img = G.synthesis(w_in.expand(1, G.num_layers, -1), noise_mode="const")
        pix = F.mse_loss(img, tgt)
        loss = pixel_weight * pix
        if perceptual is not None:
            loss = loss + perceptual_weight * perceptual.distance(perceptual.features(img), tgt_feats)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        result.losses.append(float(loss.detach()))
        result.pixel_losses.append(float(pix.detach()))
    with torch.no_grad():
        result.w = w.detach().expand(1, G.num_layers, -1).clone()
        result.image = G.synthesis(result.w, noise_mode="const")
    return result


def project_face(G: StyleGAN, image_path: str | os.PathLike, detector: str = "auto", **options) -> ProjectionResult:
    """Align the largest face of a photo with ``facesynth.extract`` (crop at G's resolution), then ``project``."""
    from facesynth.extract import extract_faces

    with tempfile.TemporaryDirectory() as tmp:
        faces = extract_faces(image_path, Path(tmp) / "faces", size=G.resolution, detector=detector, progress=False)
        crop = faces[0].image
    return project(G, crop, **options)


def _as_target(target: torch.Tensor | np.ndarray, resolution: int) -> torch.Tensor:
    if isinstance(target, np.ndarray):
        if target.dtype != np.uint8 or target.ndim != 3 or target.shape[2] != 3:
            raise ConfigError(f"target must be uint8 H×W×3 RGB, got {target.dtype} {target.shape}")
        target = torch.from_numpy(np.array(target)).permute(2, 0, 1).float() / 255
    if target.ndim == 3:
        target = target[None]
    if target.ndim != 4 or target.shape[:2] != (1, 3):
        raise ConfigError(f"target must be [3, H, W] or [1, 3, H, W] in [0, 1], got {list(target.shape)}")
    if target.shape[-2:] != (resolution, resolution):
        target = F.interpolate(target.float(), size=(resolution, resolution), mode="area")
    return target.float() * 2 - 1


@torch.no_grad()
def _w_std(G: StyleGAN, n: int = 2000) -> float:
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(123)).to(G.dlatent_avg.device)
    c = None
    if G.c_dim:
        c = F.one_hot(torch.arange(n) % G.c_dim, G.c_dim).float().to(z.device)
    w = G.mapping(z, c, broadcast=False)
    return float((w - G.dlatent_avg).square().sum(1).mean().sqrt())


def _hub_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def load_vgg16_features(path: str | os.PathLike) -> torch.nn.Sequential:
    """torchvision's VGG16 ``features`` (conv layers) with weights from ``path`` (read weights-only)."""
    from torchvision.models import vgg16

    from facesynth.safe_load import load_state_dict

    net = vgg16().features
    state = load_state_dict(path)
    net.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
    return net.eval().requires_grad_(False)


class VGGPerceptual(torch.nn.Module):
    """Channel-normalised VGG16 features at relu1_2, relu2_2, relu3_3, relu4_3 and their mean squared distance."""

    def __init__(self, features: torch.nn.Sequential):
        super().__init__()
        self.net = features[: _TAPS[-1] + 1]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    @classmethod
    def from_cache(cls) -> "VGGPerceptual | None":
        path = _hub_dir() / VGG16_FILE
        return cls(load_vgg16_features(path)) if path.is_file() else None

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """img [N, 3, H, W] in [-1, 1] (resized to 224 when larger) → the normalised feature maps."""
        x = ((img + 1) / 2 - self.mean) / self.std
        if x.shape[-1] > 256:
            x = F.interpolate(x, size=(256, 256), mode="area")
        out = []
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i in _TAPS:
                out.append(x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    @staticmethod
    def distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
        return sum((x - y).square().sum(1).mean() for x, y in zip(a, b))

"""Training augmentation on batched tensors (runs on the GPU with the model).

``random_affine`` (rotation, zoom, shift, flip) moves input, target and masks together, so the network
sees more poses than the face set has. ``random_warp`` bends only the *input* with a smooth random field
(the autoencoder trick of faceswap and DeepFaceLab): to reproduce the unwarped target the network must
learn the face, not copy pixels. ``color_jitter`` changes brightness, contrast and saturation of input and
target alike.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["random_affine", "random_warp", "color_jitter", "apply_grid"]


def apply_grid(x: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)


def random_affine(n: int, size: int, rotation: float, scale: float, shift: float, flip: float,
                  generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Sampling grids ``[n, size, size, 2]`` of random similarity transforms (and flips) for grid_sample."""
    u = lambda: torch.rand(n, generator=generator) * 2 - 1  # noqa: E731  uniform in [-1, 1]
    angle = u() * math.radians(rotation)
    zoom = 1 + u() * scale
    tx, ty = u() * shift * 2, u() * shift * 2          # grid coordinates span 2 units
    mirror = torch.where(torch.rand(n, generator=generator) < flip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * mirror, -sin, tx], 1), torch.stack([sin * mirror, cos, ty], 1)], 1)
    return F.affine_grid(theta.to(device), [n, 1, size, size], align_corners=False)


def random_warp(grid: torch.Tensor, strength: float, generator: torch.Generator, cells: int = 5) -> torch.Tensor:
    """Add a smooth random displacement to sampling grids ``[n, H, W, 2]``.

    Offsets are drawn on a ``cells×cells`` lattice (σ = 0.04·strength of the image width, the interior
    only, so the border stays put) and upsampled bicubically: a rubber-sheet bend, not noise.
    """
    n, h, w, _ = grid.shape
    offsets = torch.randn(n, 2, cells, cells, generator=generator) * (0.08 * strength)
    offsets[:, :, [0, -1], :] = 0
    offsets[:, :, :, [0, -1]] = 0
    field = F.interpolate(offsets.to(grid.device), size=(h, w), mode="bicubic", align_corners=True)
    return grid + field.permute(0, 2, 3, 1)


def color_jitter(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Per-sample brightness, contrast and saturation changes of up to ``strength`` (0 = none); [0,1] kept."""
    if strength <= 0:
        return x
    n = x.shape[0]
    r = lambda: (1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * strength).to(x.device)  # noqa: E731
    grey = x.mean(dim=1, keepdim=True)
    x = grey + (x - grey) * r()                                  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * r()                                  # contrast
    return (x * r()).clamp(0, 1)                                 # brightness

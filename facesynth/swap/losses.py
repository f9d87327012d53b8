"""Reconstruction losses for the autoencoder: DSSIM, L1, MSE inside the face mask, eyes/mouth priority.

Each returns one value per sample (shape ``[N]``) so the trainer can keep a running loss per face, which
is what pruning ranks by.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = ["gaussian_window", "ssim", "dssim", "masked_reconstruction_loss", "DSSIMLoss"]


@functools.lru_cache(maxsize=8)
def _window_cpu(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g)


def gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    """Normalised Gaussian kernel ``[C,1,size,size]`` for a depthwise convolution."""
    return _window_cpu(size, sigma).to(device=device, dtype=dtype).expand(channels, 1, size, size).contiguous()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5, c1: float = 0.01 ** 2,
         c2: float = 0.03 ** 2) -> torch.Tensor:
    """Structural similarity map of images in [0,1] (Wang et al. 2004). Shape: ``[N,C,H,W]`` → ``[N,C,H',W']``.

    Valid convolution (no padding), so borders do not bias the mean; the window shrinks for tiny images.
    """
    c = x.shape[1]
    window = min(window, x.shape[-1], x.shape[-2])
    w = gaussian_window(window, sigma, c, x.device, x.dtype)
    mu_x, mu_y = F.conv2d(x, w, groups=c), F.conv2d(y, w, groups=c)
    sxx = F.conv2d(x * x, w, groups=c) - mu_x ** 2
    syy = F.conv2d(y * y, w, groups=c) - mu_y ** 2
    sxy = F.conv2d(x * y, w, groups=c) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))


def dssim(x: torch.Tensor, y: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Structural dissimilarity ``(1 − SSIM) / 2`` per sample, in [0, 1]. Shape: ``[N,C,H,W]`` → ``[N]``."""
    return ((1 - ssim(x, y, window)) / 2).flatten(1).mean(1)


class DSSIMLoss(torch.nn.Module):
    """Module form of :func:`dssim`, mean over the batch."""

    def __init__(self, window: int = 11):
        super().__init__()
        self.window = window

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return dssim(x, y, self.window).mean()


def masked_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
                               l1: float, mse: float, dssim_weight: float,
                               priority: torch.Tensor | None = None, priority_weight: float = 0.0) -> torch.Tensor:
    """Weighted DSSIM + L1 + MSE between ``pred`` and ``target`` inside ``mask``; one value per sample ``[N]``.

    As DeepFaceLab does, both images are multiplied by the (soft) mask, so the background neither costs nor
    teaches anything. ``priority`` (a ``[N,1,H,W]`` eyes-and-mouth mask) adds ``priority_weight`` × their L1.
    """
    if mask is not None:
        pred, target = pred * mask, target * mask
    loss = pred.new_zeros(pred.shape[0])
    if dssim_weight:
        loss = loss + dssim_weight * dssim(pred.float(), target.float())
    diff = (pred - target).float()
    if l1:
        loss = loss + l1 * diff.abs().flatten(1).mean(1)
    if mse:
        loss = loss + mse * (diff ** 2).flatten(1).mean(1)
    if priority is not None and priority_weight:
        loss = loss + priority_weight * (diff.abs() * priority).flatten(1).mean(1)
    return loss

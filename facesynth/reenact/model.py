"""First Order Motion Model networks (Siarohin et al., NeurIPS 2019), state-dict compatible with the official code.

Parameter and buffer names and shapes equal those of AliaksandrSiarohin/first-order-model (commit c0274845), so
its checkpoints load with ``strict=True``. The maths follows the official modules; the places where it looks odd
say so. Coordinates are (x, y) in [-1, 1] with the end points on pixel centres (official ``make_coordinate_grid``).

Shapes below: B batch, K key points, C image channels, H x W frame size, h x w the downsampled motion size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facesynth import winograd
from facesynth.gpu import compiling
from facesynth.reenact.config import DenseMotionParams, DiscriminatorParams, FOMMConfig

__all__ = ["KPDetector", "DenseMotionNetwork", "OcclusionAwareGenerator", "MultiScaleDiscriminator", "Discriminator",
           "Hourglass", "AntiAliasDownsample", "coordinate_grid", "kp_to_gaussian", "build_kp_detector",
           "build_generator", "build_discriminator", "upsample_conv3x3", "set_fast_inference", "set_phase_conv"]

KP = dict[str, torch.Tensor]   # {"value": [B,K,2], "jacobian": [B,K,2,2]} (jacobian optional)


def build_kp_detector(config: FOMMConfig) -> "KPDetector":
    """The key point detector of ``config`` (random weights)."""
    c, p = config.common_params, config.kp_detector_params
    return KPDetector(num_kp=c.num_kp, num_channels=c.num_channels, estimate_jacobian=c.estimate_jacobian,
                      temperature=p.temperature, block_expansion=p.block_expansion, max_features=p.max_features,
                      scale_factor=p.scale_factor, num_blocks=p.num_blocks,
                      single_jacobian_map=p.single_jacobian_map, pad=p.pad)


def build_generator(config: FOMMConfig) -> "OcclusionAwareGenerator":
    """The occlusion-aware generator (with its dense motion network) of ``config`` (random weights)."""
    c, g = config.common_params, config.generator_params
    return OcclusionAwareGenerator(num_channels=c.num_channels, num_kp=c.num_kp, block_expansion=g.block_expansion,
                                   max_features=g.max_features, num_down_blocks=g.num_down_blocks,
                                   num_bottleneck_blocks=g.num_bottleneck_blocks,
                                   estimate_occlusion_map=g.estimate_occlusion_map,
                                   dense_motion=g.dense_motion_params, align_corners=config.align_corners)


def build_discriminator(config: FOMMConfig) -> "MultiScaleDiscriminator":
    """The multi-scale discriminator of ``config`` (random weights; only training needs it)."""
    c = config.common_params
    return MultiScaleDiscriminator(config.discriminator_params, num_channels=c.num_channels, num_kp=c.num_kp)


def coordinate_grid(h: int, w: int, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """The [-1, 1]² grid of an h x w image as (x, y) pairs, end points on pixel centres.

    Shape: (h, w, 2). ``grid[i, j] = (2j/(w-1) - 1, 2i/(h-1) - 1)``.
    """
    # arange → divide → scale in the dtype, as the official make_coordinate_grid, so the last bits agree
    x = 2 * (torch.arange(w, dtype=dtype, device=device) / (w - 1)) - 1
    y = 2 * (torch.arange(h, dtype=dtype, device=device) / (h - 1)) - 1
    return torch.stack([x.view(1, w).expand(h, w), y.view(h, 1).expand(h, w)], dim=-1)


def kp_to_gaussian(value: torch.Tensor, h: int, w: int, kp_variance: float) -> torch.Tensor:
    """Unnormalised Gaussian bumps exp(-|z - kp|² / (2·variance)) around each key point.

    Shape: value (B, K, 2) → (B, K, h, w).
    """
    grid = coordinate_grid(h, w, value.dtype, value.device)
    diff = grid.view(1, 1, h, w, 2) - value.view(*value.shape[:2], 1, 1, 2)
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / kp_variance)


class AntiAliasDownsample(nn.Module):
    """Gaussian blur then strided subsampling by ``1/scale`` (official ``AntiAliasInterpolation2d``).

    sigma = (1/scale - 1)/2 and size = 2·round(4·sigma) + 1 (Python's round: half to even). The kernel is a
    persistent buffer named ``weight`` because the official checkpoints carry it. Subsampling starts at index 0
    with no centring: the official choice, kept for equality.

    Shape: (B, C, H, W) → (B, C, ceil(H·scale), ceil(W·scale)).
    """

    def __init__(self, channels: int, scale: float):
        super().__init__()
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        self.pad_before = size // 2
        self.pad_after = self.pad_before - 1 if size % 2 == 0 else self.pad_before
        ramp = torch.arange(size, dtype=torch.float32)
        gauss = torch.exp(-(ramp - (size - 1) / 2) ** 2 / (2 * sigma ** 2))
        kernel = gauss.view(size, 1) * gauss.view(1, size)
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.view(1, 1, size, size).repeat(channels, 1, 1, 1))
        self.channels = channels
        self.step = int(1 / scale)

    fast = True      # without autograd: only the kept positions are computed (``set_fast_inference``)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (self.pad_before, self.pad_after, self.pad_before, self.pad_after)
        if self.fast and not torch.is_grad_enabled():
            if x.shape[0] > 1 and x.stride(0) == 0:          # one frame expanded to a batch: blur it once
                return self.forward(x[:1]).expand(x.shape[0], -1, -1, -1)
            # the convolution at the kept positions only: the same sums, step² times fewer
            return F.conv2d(F.pad(x, pad), self.weight, stride=self.step, groups=self.channels)
        x = F.conv2d(F.pad(x, pad), self.weight, groups=self.channels)
        return x[:, :, ::self.step, ::self.step]


class SameBlock(nn.Module):
    """conv → BatchNorm → ReLU at the same resolution."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features)

    fast = True      # without autograd: BatchNorm folded into the conv, which runs by ``winograd.conv2d``

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast and not torch.is_grad_enabled() and not self.norm.training:
            weight, bias = winograd.folded(self.conv, self.norm)
            return winograd.conv2d(x, self.conv, weight, bias, key="folded").relu_()
        return F.relu(self.norm(self.conv(x)))


class DownBlock(SameBlock):
    """conv3x3 → BatchNorm → ReLU → 2x2 average pooling."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(super().forward(x), 2)


class UpBlock(SameBlock):
    """Nearest 2x upsampling (the official default mode) → conv3x3 → BatchNorm → ReLU.

    Without autograd (inference) the upsampling and the conv run as ``upsample_conv3x3``: the same sums with
    2.25 times fewer multiply-adds, equal up to float rounding. ``fast = False`` keeps the two steps.
    """
    fast = True      # without autograd: the inference path below (``set_fast_inference``)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if (self.fast and not torch.is_grad_enabled() and conv.kernel_size == (3, 3)
                and conv.padding == (1, 1)):
            if self.norm.training:
                return F.relu(self.norm(upsample_conv3x3(x, conv.weight, conv.bias, _phase_kernels(conv), conv)))
            weight, bias = winograd.folded(conv, self.norm)        # BatchNorm folded into the conv
            kernels = winograd.cached(conv, "phases-folded", (weight,), lambda: phase_kernels(weight))
            return upsample_conv3x3(x, weight, bias, kernels, conv, key="phases-folded").relu_()
        return super().forward(F.interpolate(x, scale_factor=2))


def phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """The four 2x2 phase kernels of ``upsample_conv3x3``. Shape: (K, C, 3, 3) → (4K, C, 2, 2), phases 00 01 10 11."""
    rows = (torch.stack([weight[:, :, 0], weight[:, :, 1] + weight[:, :, 2]], 2),
            torch.stack([weight[:, :, 0] + weight[:, :, 1], weight[:, :, 2]], 2))
    return torch.cat([torch.stack([r[..., 0], r[..., 1] + r[..., 2]], -1) if b == 0 else
                      torch.stack([r[..., 0] + r[..., 1], r[..., 2]], -1)
                      for r in rows for b in (0, 1)])


def phase_kernels_3x3(kernels: torch.Tensor) -> torch.Tensor:
    """``phase_kernels``' 2x2 kernels inside zero 3x3 ones, phase (a, b) at rows a..a+1, columns b..b+1: with
    padding 1 they give each phase at the input's own positions. Shape: (4K, C, 2, 2) → (4K, C, 3, 3)."""
    k = kernels.shape[0] // 4
    out = kernels.new_zeros(*kernels.shape[:2], 3, 3)
    for p, (a, b) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        out[p * k:(p + 1) * k, :, a:a + 2, b:b + 2] = kernels[p * k:(p + 1) * k]
    return out


def upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     kernels: torch.Tensor | None = None, conv: nn.Conv2d | None = None,
                     key: str = "phases") -> torch.Tensor:
    """``conv2d(interpolate(x, scale_factor=2), weight, bias, padding=1)`` (nearest) without the upsampling.

    Output pixel (2i + a, 2j + b) sees, through the 3x3 kernel, only the 2x2 input pixels around (i, j) on the
    side of phase (a, b), with kernel rows (and columns) merged: phase 0 takes ``w0`` and ``w1 + w2``, phase 1
    ``w0 + w1`` and ``w2``. One conv with the four phases' 2x2 kernels on the zero-padded input, then
    interleaving, gives the result with 16 instead of 36 multiply-adds per input pixel and channel pair. That
    conv computes each phase at (H + 1)(W + 1) positions, of which it keeps H·W; on maps of 8x8 or less (56 % more
    at 4x4) each phase runs as its own conv on exactly its positions instead. Where ``conv``'s convolution runs
    by NNPACK (``winograd.nnpack_takes``), each 2x2 kernel goes into a 3x3 one at its phase's corner and the four
    phases run as one 3x3 conv (padding 1, exact positions): NNPACK then uses Winograd F(6x6, 3x3) instead of its
    FFT: 22-35 % less time (one thread, 2026-12-07), at 1e-5 relative to the largest output.

    Shape: x (N, C, H, W), weight (K, C, 3, 3), bias (K,) → (N, K, 2H, 2W), channels-last if x is.
    """
    n, _, h, w = x.shape
    k = weight.shape[0]
    kernels = phase_kernels(weight) if kernels is None else kernels
    padded = F.pad(x, (1, 1, 1, 1))
    order = ((0, 0), (0, 1), (1, 0), (1, 1))
    if h * w <= 64:
        phases = [F.conv2d(padded[:, :, a:a + h + 1, b:b + w + 1], kernels[p * k:(p + 1) * k])
                  for p, (a, b) in enumerate(order)]
    elif conv is not None and winograd.nnpack_takes(x, conv, weight, 1):
        embedded = winograd.cached(conv, f"{key}-3x3", (kernels,), lambda: phase_kernels_3x3(kernels))
        full = winograd.nnpack_conv2d(x, embedded, None if bias is None else bias.repeat(4), 1,   # bias in the conv
                                      owner=conv, key=f"{key}-3x3")
        phases, bias = [full[:, p * k:(p + 1) * k] for p in range(4)], None
    else:
        full = F.conv2d(padded, kernels) if conv is None else winograd.conv2d(padded, conv, kernels, key=key,
                                                                                padding=0)
        phases = [full[:, p * k:(p + 1) * k, a:a + h, b:b + w] for p, (a, b) in enumerate(order)]
    # in the input's layout: channels-last stays so on a GPU, and the next convolution needs no transpose
    layout = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
              else torch.contiguous_format)
    out = torch.empty(n, k, 2 * h, 2 * w, dtype=phases[0].dtype, device=phases[0].device, memory_format=layout)
    for phase, (a, b) in zip(phases, order):
        out[:, :, a::2, b::2] = phase
    return out if bias is None else out.add_(bias.to(out.dtype).view(1, -1, 1, 1))


def _phase_kernels(conv: nn.Conv2d) -> torch.Tensor:
    """``phase_kernels(conv.weight)``, cached on ``conv`` until the weight changes."""
    return winograd.cached(conv, "phases", (conv.weight,), lambda: phase_kernels(conv.weight.detach()))


set_fast_inference = winograd.set_fast_inference
set_phase_conv = set_fast_inference     # the earlier name


class ResBlock(nn.Module):
    """Pre-activation residual block: (BN → ReLU → conv) twice, plus the input."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(features)
        self.norm2 = nn.BatchNorm2d(features)

    fast = True      # without autograd: the inference path below (``set_fast_inference``)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast and not torch.is_grad_enabled() and not self.norm2.training:
            return self._inference(x)
        out = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(out))) + x

    def _inference(self, x: torch.Tensor) -> torch.Tensor:
        """The same sums without autograd: norm2 folded into conv1, 3x3 convolutions by NNPACK or Winograd where
        that pays (``facesynth.winograd``); equal to ``forward`` up to float rounding (1e-6 to 1e-5 relative)."""
        weight, bias = winograd.folded(self.conv1, self.norm2)
        out = winograd.conv2d(self.norm1(x).relu_(), self.conv1, weight, bias, key="folded")
        out = winograd.conv2d(out.relu_(), self.conv2)
        return out.add_(x)


class HourglassEncoder(nn.Module):
    """Down blocks; returns the input and every block's output (the decoder's skips), finest first."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        width = [in_features] + [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        self.down_blocks = nn.ModuleList(DownBlock(width[i], width[i + 1]) for i in range(num_blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    """Up blocks from the coarsest skip; each output is concatenated with the next finer skip."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            # every level but the deepest also receives the encoder's skip, hence twice the channels
            in_filters = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(UpBlock(in_filters, min(max_features, block_expansion * 2 ** i)))
        self.up_blocks = nn.ModuleList(blocks)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return out


class Hourglass(nn.Module):
    """U-Net of ``num_blocks`` down and up blocks; the output ends with the input itself.

    Shape: (B, in_features, H, W) → (B, block_expansion + in_features, H, W); H, W divisible by 2^num_blocks.
    """

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256):
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = block_expansion + in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class KPDetector(nn.Module):
    """Unsupervised key points and their local jacobians.

    Heatmaps are a softmax over all positions of ``logits / temperature``; a key point is the heatmap's expected
    (x, y), its jacobian the heatmap-weighted mean of 4 predicted channels, read row-major as [[a, b], [c, d]].

    Shape: frames (B, C, H, W) in [0, 1] → {"value": (B, K, 2) in about [-1, 1], "jacobian": (B, K, 2, 2)}.

    Its hourglass and heads are built with their inference paths off (``set_fast_inference(detector, True)`` turns
    them on): they run the official op sequence, because the key points' rounding moves every pixel of an
    animation. On the side-by-side vox-256 check (random weights, 3 seeds, 2 cores, 2026-12-07) the animation was
    1.2-1.9x as far from float64 arithmetic as the official fp32 code with them on, and nearer than it with them
    off, for about 9 ms more per frame at batch 8 (16 → 25 ms). Only the input's anti-alias downsampling keeps its
    fast path (the kept positions only): its key points are the same to the bit (tests/test_reenact_model.py), and it
    saves about 4.5 ms per frame.
    """

    def __init__(self, block_expansion: int, num_kp: int, num_channels: int, max_features: int, num_blocks: int,
                 temperature: float, estimate_jacobian: bool = False, scale_factor: float = 1,
                 single_jacobian_map: bool = False, pad: int = 0):
        super().__init__()
        self.predictor = Hourglass(block_expansion, num_channels, num_blocks, max_features)
        # 7x7 heads without padding (official default pad=0): the heatmap is 6 pixels smaller than the features
        self.kp = winograd.Conv2d(self.predictor.out_filters, num_kp, 7, padding=pad)
        self.num_jacobian_maps = 1 if single_jacobian_map else num_kp
        self.jacobian: winograd.Conv2d | None = None
        if estimate_jacobian:
            self.jacobian = winograd.Conv2d(self.predictor.out_filters, 4 * self.num_jacobian_maps, 7, padding=pad)
            # start at the identity jacobian, as the official initialisation
            nn.init.zeros_(self.jacobian.weight)
            with torch.no_grad():
                self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0] * self.num_jacobian_maps))
        self.temperature = temperature
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = AntiAliasDownsample(num_channels, scale_factor)
        # the official op sequence, except for the downsampling (see the class docstring)
        for part in (self.predictor, self.kp, self.jacobian):
            if part is not None:
                set_fast_inference(part, False)

    def forward(self, frames: torch.Tensor) -> KP:
        x = self.down(frames) if self.scale_factor != 1 else frames
        features = self.predictor(x)
        logits = self.kp(features)
        b, k, h, w = logits.shape
        heatmap = F.softmax(logits.view(b, k, h * w) / self.temperature, dim=2).view(b, k, h, w)
        grid = coordinate_grid(h, w, heatmap.dtype, heatmap.device)
        out = {"value": (heatmap.unsqueeze(-1) * grid).sum(dim=(2, 3))}
        if self.jacobian is not None:
            maps = self.jacobian(features).reshape(b, self.num_jacobian_maps, 4, h, w)
            jacobian = (heatmap.unsqueeze(2) * maps).view(b, k, 4, h * w).sum(dim=-1)
            out["jacobian"] = jacobian.view(b, k, 2, 2)
        return out


class DenseMotionNetwork(nn.Module):
    """Dense backward motion (driving → source) and occlusion map from two key point sets.

    Each key point k proposes the local affine motion ``z ↦ J_s·J_d⁻¹·(z − kp_d) + kp_s`` (the identity for the
    background, k = 0); an hourglass sees, per k, the heatmap difference and the source warped by that motion,
    and predicts a softmax mask that blends the K+1 motions.

    Shape: source (B, C, H, W) → {"deformation": (B, h, w, 2), "mask": (B, K+1, h, w),
    "sparse_deformed": (B, K+1, C, h, w), "occlusion_map": (B, 1, h, w)}, h = H·scale_factor.
    """

    fast = True      # without autograd: the mask and occlusion heads as one convolution (``set_fast_inference``)

    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_kp: int, num_channels: int,
                 estimate_occlusion_map: bool = False, scale_factor: float = 1, kp_variance: float = 0.01,
                 align_corners: bool = False):
        super().__init__()
        self.hourglass = Hourglass(block_expansion, (num_kp + 1) * (num_channels + 1), num_blocks, max_features)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, 7, padding=3)
        self.occlusion: nn.Conv2d | None = None
        if estimate_occlusion_map:
            self.occlusion = nn.Conv2d(self.hourglass.out_filters, 1, 7, padding=3)
        self.num_kp = num_kp
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        self.align_corners = align_corners
        if scale_factor != 1:
            self.down = AntiAliasDownsample(num_channels, scale_factor)

    def forward(self, source: torch.Tensor, kp_driving: KP, kp_source: KP) -> dict[str, torch.Tensor]:
        if self.scale_factor != 1:
            source = self.down(source)
        b, c, h, w = source.shape
        k1 = self.num_kp + 1
        heatmaps = self.heatmap_representation(kp_driving, kp_source, h, w)
        motions = self.sparse_motions(kp_driving, kp_source, h, w)
        warped = F.grid_sample(source.unsqueeze(1).expand(b, k1, c, h, w).reshape(b * k1, c, h, w),
                               motions.reshape(b * k1, h, w, 2), align_corners=self.align_corners)
        warped = warped.view(b, k1, c, h, w)
        # channels grouped per key point: [heatmap_k, warped_k (C channels)] for k = background, 1..K
        features = self.hourglass(torch.cat([heatmaps.unsqueeze(2), warped], dim=2).view(b, k1 * (c + 1), h, w))
        occlusion = None
        if self.fast and self.occlusion is not None and not torch.is_grad_enabled():
            # inference: both 7x7 heads as one convolution (a one-channel conv costs as much as the 11-channel one)
            weight, bias = winograd.cached(self.mask, "with-occlusion", (self.mask.weight, self.mask.bias,
                                                                        self.occlusion.weight, self.occlusion.bias),
                                           lambda: (torch.cat([self.mask.weight, self.occlusion.weight]),
                                                    torch.cat([self.mask.bias, self.occlusion.bias])))
            logits, occlusion = winograd.conv2d(features, self.mask, weight, bias,
                                                key="with-occlusion").split([k1, 1], dim=1)
        else:
            logits = self.mask(features)
            if self.occlusion is not None:
                occlusion = self.occlusion(features)
        mask = F.softmax(logits, dim=1)
        deformation = (motions.permute(0, 1, 4, 2, 3) * mask.unsqueeze(2)).sum(dim=1).permute(0, 2, 3, 1)
        out = {"sparse_deformed": warped, "mask": mask, "deformation": deformation}
        if occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(occlusion)
        return out

    def heatmap_representation(self, kp_driving: KP, kp_source: KP, h: int, w: int) -> torch.Tensor:
        """Driving minus source Gaussians, a zero map first for the background. Shape: (B, K+1, h, w)."""
        diff = (kp_to_gaussian(kp_driving["value"], h, w, self.kp_variance)
                - kp_to_gaussian(kp_source["value"], h, w, self.kp_variance))
        return torch.cat([diff.new_zeros(diff.shape[0], 1, h, w), diff], dim=1)

    def sparse_motions(self, kp_driving: KP, kp_source: KP, h: int, w: int) -> torch.Tensor:
        """Per key point sampling grids into the source, the identity first. Shape: (B, K+1, h, w, 2)."""
        value_d, value_s = kp_driving["value"], kp_source["value"]
        b = value_d.shape[0]
        identity = coordinate_grid(h, w, value_s.dtype, value_s.device).view(1, 1, h, w, 2)
        local = identity - value_d.view(b, self.num_kp, 1, 1, 2)
        if "jacobian" in kp_driving:
            # compiled (``torch.compile``, CUDA graphs on a GPU): the same LU inverse without ``torch.inverse``'s
            # error check, which reads a status back to the host (no such synchronisation inside a CUDA graph)
            inverse = (torch.linalg.inv_ex(kp_driving["jacobian"]).inverse if compiling()
                       else torch.inverse(kp_driving["jacobian"]))
            affine = kp_source["jacobian"] @ inverse      # (B, K, 2, 2)
            local = (affine.view(b, self.num_kp, 1, 1, 2, 2) @ local.unsqueeze(-1)).squeeze(-1)
        to_source = local + value_s.view(b, self.num_kp, 1, 1, 2)
        return torch.cat([identity.expand(b, 1, h, w, 2), to_source], dim=1)


class OcclusionAwareGenerator(nn.Module):
    """Encode the source, warp its features by the dense motion, mask occluded parts, decode.

    Shape: source (B, C, H, W) in [0, 1], key points (B, K, ·) → {"prediction": (B, C, H, W) in [0, 1],
    "mask", "sparse_deformed", "occlusion_map" (as DenseMotionNetwork), "deformed": (B, C, H, W) the source warped
    at full size}. Like the official generator, the dict has no "deformation".
    """

    def __init__(self, num_channels: int, num_kp: int, block_expansion: int, max_features: int,
                 num_down_blocks: int, num_bottleneck_blocks: int, estimate_occlusion_map: bool = False,
                 dense_motion: DenseMotionParams | None = None, align_corners: bool = False):
        super().__init__()
        self.dense_motion_network: DenseMotionNetwork | None = None
        if dense_motion is not None:
            self.dense_motion_network = DenseMotionNetwork(
                block_expansion=dense_motion.block_expansion, num_blocks=dense_motion.num_blocks,
                max_features=dense_motion.max_features, num_kp=num_kp, num_channels=num_channels,
                estimate_occlusion_map=estimate_occlusion_map, scale_factor=dense_motion.scale_factor,
                kp_variance=dense_motion.kp_variance, align_corners=align_corners)
        self.first = SameBlock(num_channels, block_expansion, kernel_size=7, padding=3)
        width = [min(max_features, block_expansion * 2 ** i) for i in range(num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(DownBlock(width[i], width[i + 1]) for i in range(num_down_blocks))
        self.up_blocks = nn.ModuleList(UpBlock(width[i + 1], width[i]) for i in reversed(range(num_down_blocks)))
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock(width[-1]))
        self.final = winograd.Conv2d(block_expansion, num_channels, 7, padding=3)
        self.align_corners = align_corners

    def forward(self, source: torch.Tensor, kp_driving: KP, kp_source: KP) -> dict[str, torch.Tensor]:
        out = self.first(source)
        for block in self.down_blocks:
            out = block(out)
        result: dict[str, torch.Tensor] = {}
        if self.dense_motion_network is not None:
            motion = self.dense_motion_network(source, kp_driving, kp_source)
            result["mask"] = motion["mask"]
            result["sparse_deformed"] = motion["sparse_deformed"]
            out = self.warp(out, motion["deformation"])
            occlusion = motion.get("occlusion_map")
            if occlusion is not None:
                result["occlusion_map"] = occlusion
                if occlusion.shape[2:] != out.shape[2:]:
                    occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear")
                out = out * occlusion
            result["deformed"] = self.warp(source, motion["deformation"])
        out = self.bottleneck(out)
        for block in self.up_blocks:
            out = block(out)
        result["prediction"] = torch.sigmoid(self.final(out))
        return result

    def warp(self, x: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        """Sample ``x`` (B, C, H, W) at ``deformation`` (B, h, w, 2), resized bilinearly to H x W if needed."""
        if deformation.shape[1:3] != x.shape[2:]:
            deformation = F.interpolate(deformation.permute(0, 3, 1, 2), size=x.shape[2:],
                                        mode="bilinear").permute(0, 2, 3, 1)
        return F.grid_sample(x, deformation, align_corners=self.align_corners)


class DiscriminatorBlock(nn.Module):
    """conv4x4 (no padding) → [InstanceNorm] → LeakyReLU(0.2) → [2x2 average pooling]."""

    def __init__(self, in_features: int, out_features: int, norm: bool, pool: bool, sn: bool):
        super().__init__()
        conv = nn.Conv2d(in_features, out_features, kernel_size=4)
        # the classic spectral_norm hook keeps weight_orig/weight_u/weight_v, the official state-dict names
        self.conv = nn.utils.spectral_norm(conv) if sn else conv
        self.norm = nn.InstanceNorm2d(out_features, affine=True) if norm else None
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        out = F.leaky_relu(out, 0.2)
        return F.avg_pool2d(out, 2) if self.pool else out


class Discriminator(nn.Module):
    """Pix2Pix-like patch discriminator, optionally seeing key point heatmaps beside the image.

    Shape: x (B, C, H, W) [, kp value (B, K, 2)] → (feature maps per block, prediction map (B, 1, h', w')).
    """

    def __init__(self, params: DiscriminatorParams, num_channels: int, num_kp: int):
        super().__init__()
        be, mf, n = params.block_expansion, params.max_features, params.num_blocks
        width = [num_channels + num_kp * params.use_kp] + [min(mf, be * 2 ** (i + 1)) for i in range(n)]
        self.down_blocks = nn.ModuleList(
            DiscriminatorBlock(width[i], width[i + 1], norm=i != 0, pool=i != n - 1, sn=params.sn) for i in range(n))
        conv = nn.Conv2d(width[-1], 1, kernel_size=1)
        self.conv = nn.utils.spectral_norm(conv) if params.sn else conv
        self.use_kp = params.use_kp
        self.kp_variance = params.kp_variance

    def forward(self, x: torch.Tensor, kp: KP | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        out = x
        if self.use_kp:
            if kp is None:
                raise ValueError("this discriminator needs key points (use_kp=True)")
            out = torch.cat([out, kp_to_gaussian(kp["value"], x.shape[2], x.shape[3], self.kp_variance)], dim=1)
        features = []
        for block in self.down_blocks:
            out = block(out)
            features.append(out)
        return features, self.conv(out)


class MultiScaleDiscriminator(nn.Module):
    """One Discriminator per scale, keyed like the official ModuleDict ("1", "0-5", ...).

    Input: {"prediction_<scale>": (B, C, H·scale, W·scale)}; output: {"feature_maps_<scale>": [...],
    "prediction_map_<scale>": (B, 1, h', w')}.
    """

    def __init__(self, params: DiscriminatorParams, num_channels: int = 3, num_kp: int = 10):
        super().__init__()
        self.discs = nn.ModuleDict({str(s).replace(".", "-"): Discriminator(params, num_channels, num_kp)
                                    for s in params.scales})

    def forward(self, pyramid: dict[str, torch.Tensor], kp: KP | None = None) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, disc in self.discs.items():
            scale = key.replace("-", ".")
            features, prediction = disc(pyramid["prediction_" + scale], kp)
            out["feature_maps_" + scale] = features
            out["prediction_map_" + scale] = prediction
        return out

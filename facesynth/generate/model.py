"""StyleGAN v1 generator (Karras et al. 2019): mapping network, synthesis network, truncation.

The maths follows the official ``training/networks_stylegan.py`` op for op, so that weights imported from
the released TensorFlow pickles give the official images (``tests/test_generate_equality.py``). Parameters
are stored as the official variables are (raw, without the equalised-learning-rate factor), in PyTorch
layouts: dense ``[out, in]``, conv ``[out, in, kh, kw]``.

Shapes: ``z`` [N, latent_size]; ``w`` [N, num_layers, dlatent_size]; images [N, C, H, W] in about [-1, 1]
(no tanh, no clipping: values can exceed the range, as in the official network).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from facesynth.errors import ConfigError
from facesynth.generate.config import StyleGANConfig

__all__ = ["StyleGAN", "MappingNetwork", "SynthesisNetwork", "Discriminator", "NOISE_MODES"]

NOISE_MODES = ("const", "random", "none")
SQRT2 = math.sqrt(2.0)


def _act(name: str, x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) if name == "lrelu" else F.relu(x)


class EqualizedWeight(nn.Module):
    """A weight stored raw and scaled at run time: ``gain/sqrt(fan_in)*lrmul`` with equalised LR, else ``lrmul``."""

    def __init__(self, shape: Sequence[int], gain: float, use_wscale: bool, lrmul: float = 1.0):
        super().__init__()
        fan_in = math.prod(shape[1:])
        he_std = gain / math.sqrt(fan_in)
        init_std, self.coef = (1.0 / lrmul, he_std * lrmul) if use_wscale else (he_std / lrmul, lrmul)
        self.weight = nn.Parameter(torch.randn(*shape) * init_std)

    def forward(self) -> torch.Tensor:
        return self.weight * self.coef


class Dense(EqualizedWeight):
    def __init__(self, fin: int, fout: int, gain: float, use_wscale: bool, lrmul: float = 1.0, bias: bool = True):
        super().__init__((fout, fin), gain, use_wscale, lrmul)
        self.bias = nn.Parameter(torch.zeros(fout)) if bias else None
        self.bias_lrmul = lrmul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias * self.bias_lrmul if self.bias is not None else None
        return F.linear(x, self.weight * self.coef, b)


class MappingNetwork(nn.Module):
    """Z (and labels) → W broadcast to every synthesis layer.

    Shape: z [N, latent_size], c [N, label_size] → [N, num_layers, dlatent_size].
    """

    def __init__(self, cfg: StyleGANConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.label_size:
            self.label_embed = nn.Parameter(torch.randn(cfg.label_size, cfg.latent_size))
        fin = cfg.latent_size * (2 if cfg.label_size else 1)
        layers = []
        for i in range(cfg.mapping_layers):
            fout = cfg.dlatent_size if i == cfg.mapping_layers - 1 else cfg.mapping_fmaps
            layers.append(Dense(fin, fout, SQRT2, cfg.use_wscale, cfg.mapping_lrmul))
            fin = fout
        self.dense = nn.ModuleList(layers)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, broadcast: bool = True) -> torch.Tensor:
        cfg = self.cfg
        if z.ndim != 2 or z.shape[1] != cfg.latent_size:
            raise ConfigError(f"z must have shape [N, {cfg.latent_size}], got {list(z.shape)}")
        x = z.float()
        if cfg.label_size:
            if c is None or c.shape != (z.shape[0], cfg.label_size):
                raise ConfigError(f"this generator is conditional: give labels c of shape [N, {cfg.label_size}]")
            x = torch.cat([x, c.float() @ self.label_embed], 1)
        if cfg.normalize_latents:
            x = x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8)
        for layer in self.dense:
            x = _act(cfg.mapping_nonlinearity, layer(x))
        return x.unsqueeze(1).repeat(1, cfg.num_styles, 1) if broadcast else x


class LayerEpilogue(nn.Module):
    """What follows every conv in the synthesis network, in the official order:
    noise → bias → activation → pixel norm → instance norm (eps 1e-8, biased variance) → style modulation."""

    def __init__(self, channels: int, cfg: StyleGANConfig):
        super().__init__()
        self.cfg = cfg
        self.noise_strength = nn.Parameter(torch.zeros(channels)) if cfg.use_noise else None
        self.bias = nn.Parameter(torch.zeros(channels))
        self.style = Dense(cfg.dlatent_size, 2 * channels, 1.0, cfg.use_wscale) if cfg.use_styles else None

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        cfg = self.cfg
        if self.noise_strength is not None and noise is not None:
            x = x + noise * self.noise_strength.view(1, -1, 1, 1)
        x = _act(cfg.nonlinearity, x + self.bias.view(1, -1, 1, 1))
        if cfg.use_pixel_norm:
            x = x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8)
        if cfg.use_instance_norm:           # in float32 even under autocast, as the official code casts
            dtype, x = x.dtype, x.float()
            x = x - x.mean((2, 3), keepdim=True)
            x = (x * torch.rsqrt(x.square().mean((2, 3), keepdim=True) + 1e-8)).to(dtype)
        if self.style is not None:
            scale, shift = self.style(w).view(-1, 2, x.shape[1], 1, 1).unbind(1)
            x = x * (scale + 1) + shift
        return x


class Conv(EqualizedWeight):
    """A SAME-padded conv whose output goes through a LayerEpilogue (``up``: 2x upsampling first, then blur)."""

    def __init__(self, cin: int, cout: int, cfg: StyleGANConfig, up: str | None = None, kernel: int = 3):
        super().__init__((cout, cin, kernel, kernel), SQRT2, cfg.use_wscale)
        self.up = up                                  # None, "nearest" or "fused"
        self.epilogue = LayerEpilogue(cout, cfg)
        if up and cfg.blur_filter:
            f = torch.tensor(cfg.blur_filter, dtype=torch.float32)
            f = torch.outer(f, f)
            self.register_buffer("blur_kernel", (f / f.sum()).expand(cout, 1, *f.shape).clone(), persistent=False)
        else:
            self.blur_kernel = None

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        weight = self.weight * self.coef
        if self.up == "fused":
            # official upscale2d_conv2d, fused: the 3x3 kernel padded and summed over its four shifts gives a
            # 4x4 kernel for a stride-2 transposed conv (same result as nearest upsampling + the flipped 3x3)
            wt = F.pad(weight.transpose(0, 1), (1, 1, 1, 1))
            wt = wt[:, :, 1:, 1:] + wt[:, :, :-1, 1:] + wt[:, :, 1:, :-1] + wt[:, :, :-1, :-1]
            x = F.conv_transpose2d(x, wt, stride=2, padding=1)
        else:
            if self.up == "nearest":
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
        if self.blur_kernel is not None:
            x = _blur(x, self.blur_kernel)
        return self.epilogue(x, w, noise)


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise filter with TensorFlow's SAME padding (an even-length filter pads one less before than after)."""
    k = kernel.shape[-1]
    before = (k - 1) // 2
    x = F.pad(x, (before, k - 1 - before, before, k - 1 - before))
    return F.conv2d(x, kernel.to(x.dtype), groups=x.shape[1])


class ToRGB(EqualizedWeight):
    def __init__(self, cin: int, cfg: StyleGANConfig):
        super().__init__((cfg.num_channels, cin, 1, 1), 1.0, cfg.use_wscale)
        self.bias = nn.Parameter(torch.zeros(cfg.num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.coef, self.bias)


class SynthesisNetwork(nn.Module):
    """W → image. ``lod`` > 0 is a network part way through progressive growing: the official 'linear'
    structure blends the two ToRGB outputs around it.

    Shape: w [N, num_styles, dlatent_size] → [N, num_channels, resolution, resolution].
    """

    def __init__(self, cfg: StyleGANConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        if cfg.const_input_layer:
            self.const = nn.Parameter(torch.ones(1, ch[0], 4, 4))
        else:
            self.dense = Dense(cfg.dlatent_size, ch[0] * 16, SQRT2 / 4, cfg.use_wscale, bias=False)
        self.input_epilogue = LayerEpilogue(ch[0], cfg)
        layers = [Conv(ch[0], ch[0], cfg)]
        for i in range(1, len(ch)):
            layers.append(Conv(ch[i - 1], ch[i], cfg, up="fused" if cfg.fused_at(4 << i) else "nearest"))
            layers.append(Conv(ch[i], ch[i], cfg))
        self.convs = nn.ModuleList(layers)
        # torgb[k] is the official ToRGB_lod{k}: k = 0 is the full resolution
        self.torgb = nn.ModuleList(ToRGB(c, cfg) for c in reversed(ch))
        for i in range(cfg.num_layers if cfg.use_noise else 0):
            side = 4 << (i // 2)
            self.register_buffer(f"noise{i}", torch.randn(1, 1, side, side))
        self.register_buffer("lod", torch.zeros(()))

    @property
    def noise_buffers(self) -> list[torch.Tensor]:
        return [getattr(self, f"noise{i}") for i in range(self.cfg.num_layers)] if self.cfg.use_noise else []

    def make_noise(self, n: int, mode: str, generator: torch.Generator | None = None,
                   device: torch.device | None = None) -> list[torch.Tensor | None]:
        """Noise inputs of every layer: the stored maps (``const``), fresh N(0,1) maps [n,1,H,W] (``random``), or
        none at all (``none``)."""
        if mode not in NOISE_MODES:
            raise ConfigError(f"noise_mode must be one of {NOISE_MODES}, got {mode!r}")
        if not self.cfg.use_noise or mode == "none":
            return [None] * self.cfg.num_layers
        if mode == "const":
            return self.noise_buffers
        device = device or self.lod.device
        return [torch.randn(n, 1, 4 << (i // 2), 4 << (i // 2), generator=generator, device=device)
                for i in range(self.cfg.num_layers)]

    def forward(self, w: torch.Tensor, noise_mode: str = "const", noise: Sequence[torch.Tensor | None] | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        cfg = self.cfg
        if w.ndim != 3 or w.shape[1:] != (cfg.num_styles, cfg.dlatent_size):
            raise ConfigError(f"w must have shape [N, {cfg.num_styles}, {cfg.dlatent_size}], got {list(w.shape)}")
        if noise is None:
            noise = self.make_noise(w.shape[0], noise_mode, generator, w.device)
        elif len(noise) != cfg.num_layers:
            raise ConfigError(f"noise must list {cfg.num_layers} maps (or None entries), got {len(noise)}")
        style = (lambda i: w[:, i]) if cfg.use_styles else (lambda i: w[:, 0])
        if cfg.const_input_layer:
            x = self.const.expand(w.shape[0], -1, -1, -1)
        else:
            x = self.dense(w[:, 0]).view(w.shape[0], cfg.channels[0], 4, 4)
        x = self.input_epilogue(x, style(0), noise[0])
        lod = float(self.lod)
        if lod == 0:
            for i, conv in enumerate(self.convs, start=1):
                x = conv(x, style(i), noise[i])
            return self.torgb[0](x)
        # official 'linear' structure: images_out = lerp_clip(torgb(res), upscale(images_out), lod - lod(res))
        x = self.convs[0](x, style(1), noise[1])
        n_res = len(cfg.channels)
        out = self.torgb[n_res - 1](x)
        for b in range(1, n_res):
            x = self.convs[2 * b - 1](x, style(2 * b), noise[2 * b])
            x = self.convs[2 * b](x, style(2 * b + 1), noise[2 * b + 1])
            img = self.torgb[n_res - 1 - b](x)
            t = min(max(lod - (n_res - 1 - b), 0.0), 1.0)
            out = img + (F.interpolate(out, scale_factor=2, mode="nearest") - img) * t
        return out


class StyleGAN(nn.Module):
    """The official ``G_style``: mapping → truncation → synthesis.

    Example::

        G = StyleGAN(StyleGANConfig.preset("quick"))
        img = G(torch.randn(4, G.z_dim), truncation_psi=0.7, truncation_cutoff=8, noise_mode="const")
    """

    def __init__(self, cfg: StyleGANConfig | None = None):
        super().__init__()
        self.cfg = cfg or StyleGANConfig()
        self.mapping = MappingNetwork(self.cfg)
        self.synthesis = SynthesisNetwork(self.cfg)
        self.register_buffer("dlatent_avg", torch.zeros(self.cfg.dlatent_size))

    @property
    def z_dim(self) -> int:
        return self.cfg.latent_size

    @property
    def w_dim(self) -> int:
        return self.cfg.dlatent_size

    @property
    def c_dim(self) -> int:
        return self.cfg.label_size

    @property
    def num_layers(self) -> int:
        """Rows of W (num_styles: one per synthesis layer, or 1 without styles)."""
        return self.cfg.num_styles

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    def truncate(self, w: torch.Tensor, psi: float | None = None, cutoff: int | None = None) -> torch.Tensor:
        """``dlatent_avg + (w - dlatent_avg) * psi`` on the rows below ``cutoff`` (official ``Truncation``);
        psi None/1 or cutoff None/<=0 leave w unchanged. Shape: [N, L, D] → [N, L, D]."""
        if psi is None or psi == 1 or cutoff is None or cutoff <= 0:
            return w
        coef = torch.ones(w.shape[1], 1, device=w.device, dtype=w.dtype)
        coef[: int(cutoff)] = psi
        avg = self.dlatent_avg.to(w.dtype)
        return avg + (w - avg) * coef

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float | None | str = "default",
                truncation_cutoff: int | None | str = "default", noise_mode: str = "const",
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Images for latents z [N, z_dim] → [N, C, H, W]. Truncation defaults to the network's own
        (official G_style: psi 0.7, cutoff 8); ``noise_mode`` is ``const`` (the stored noise maps, as the
        official figures use), ``random`` or ``none``."""
        psi = self.cfg.truncation_psi if truncation_psi == "default" else truncation_psi
        cutoff = self.cfg.truncation_cutoff if truncation_cutoff == "default" else truncation_cutoff
        w = self.truncate(self.mapping(z, c), psi, cutoff)
        return self.synthesis(w, noise_mode=noise_mode, generator=generator)


class Discriminator(nn.Module):
    """The official ``D_basic`` layout for training at small resolutions: FromRGB, per resolution a 3x3 conv
    then blur + 3x3 conv + 2x downscale, and at 4x4 the minibatch standard deviation, a conv and two dense
    layers. Equalised learning rate throughout. ``lod`` > 0 (progressive growing) blends in a FromRGB of the
    downscaled image as the official 'linear' structure does. (Only G is checked against the official
    network; this D is trained from scratch here, never loaded from a pickle.)

    Shape: images [N, C, R, R] in about [-1, 1] → logits [N].
    """

    def __init__(self, cfg: StyleGANConfig, mbstd_group_size: int = 4):
        super().__init__()
        self.cfg, self.group = cfg, mbstd_group_size
        ch = cfg.channels                                   # the generator's widths at 4, 8, …, R
        # fromrgb[k] reads the image at resolution R / 2**k (official FromRGB_lod{k})
        self.fromrgb = nn.ModuleList(_FromRGB(cfg.num_channels, c, cfg) for c in reversed(ch))
        self.convs = nn.ModuleList()
        for i in range(len(ch) - 1, 0, -1):
            self.convs.append(nn.ModuleList([_DConv(ch[i], ch[i], cfg), _DConv(ch[i], ch[i - 1], cfg)]))
        if cfg.blur_filter:
            f = torch.tensor(cfg.blur_filter, dtype=torch.float32)
            f = torch.outer(f, f)
            self.register_buffer("blur_kernel", (f / f.sum())[None, None], persistent=False)
        else:
            self.blur_kernel = None
        extra = 1 if mbstd_group_size > 1 else 0
        self.conv4 = _DConv(ch[0] + extra, ch[0], cfg)
        self.dense0 = Dense(ch[0] * 16, ch[0], SQRT2, cfg.use_wscale)
        self.dense1 = Dense(ch[0], 1, 1.0, cfg.use_wscale)
        self.register_buffer("lod", torch.zeros(()))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        act, lod = self.cfg.nonlinearity, float(self.lod)
        x = self.fromrgb[0](img)
        for k, (conv0, conv1) in enumerate(self.convs):
            x = conv0(x)
            if self.blur_kernel is not None:
                x = _blur(x, self.blur_kernel.expand(x.shape[1], 1, -1, -1))
            x = F.avg_pool2d(conv1(x, activate=False), 2)
            x = _act(act, x + conv1.bias.view(1, -1, 1, 1))
            t = min(max(lod - k, 0.0), 1.0)      # official lerp_clip(x, fromrgb(downscaled image), lod - k)
            if t > 0:
                img = F.avg_pool2d(img, 2)
                x = x + (self.fromrgb[k + 1](img) - x) * t
        if self.group > 1:
            x = _minibatch_stddev(x, self.group)
        x = self.conv4(x)
        x = _act(act, self.dense0(x.flatten(1)))
        return self.dense1(x).squeeze(1)


class _FromRGB(EqualizedWeight):
    def __init__(self, cin: int, cout: int, cfg: StyleGANConfig):
        super().__init__((cout, cin, 1, 1), SQRT2, cfg.use_wscale)
        self.bias = nn.Parameter(torch.zeros(cout))
        self.nonlinearity = cfg.nonlinearity

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return _act(self.nonlinearity, F.conv2d(img, self.weight * self.coef, self.bias))


class _DConv(EqualizedWeight):
    def __init__(self, cin: int, cout: int, cfg: StyleGANConfig):
        super().__init__((cout, cin, 3, 3), SQRT2, cfg.use_wscale)
        self.bias = nn.Parameter(torch.zeros(cout))
        self.nonlinearity = cfg.nonlinearity

    def forward(self, x: torch.Tensor, activate: bool = True) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.coef, padding=1)
        return _act(self.nonlinearity, x + self.bias.view(1, -1, 1, 1)) if activate else x


def _minibatch_stddev(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """One extra feature map: the standard deviation across groups of samples, averaged (official layer)."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    if n % g:
        g = 1
    y = x.view(g, -1, c, h, w).float()
    y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean((1, 2, 3))      # [n/g]
    y = y.view(-1, 1, 1, 1).repeat(g, 1, h, w).to(x.dtype)
    return torch.cat([x, y], 1)

"""Autoencoders for face swapping: one shared encoder, one decoder (or identity path) per person.

Swapping is decoding person A's face through person B's decoder: the shared encoder has learned pose,
expression and lighting from both people; each decoder paints one identity. Architectures:

- ``original``: faceswap's "Original" model class (the study's). Four 5×5 stride-2 convolutions, a dense
  bottleneck, a dense expansion to 4×4, then pixel-shuffle upscales.
- ``df``: DeepFaceLab SAEHD "DF": the same idea at 128 px and up with residual blocks in the decoders.
- ``liae``: DeepFaceLab "LIAE": one decoder; identity lives in two intermediate layers, ``inter_AB``
  (shared) and ``inter_B``. Person A decodes from [AB, AB], person B from [B, AB].

All decoders output colour in [0,1] (sigmoid) and, with ``learn_mask``, a face mask in [0,1].
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from facesynth.errors import ConfigError
from facesynth.swap.config import SwapConfig

__all__ = ["SwapModel", "build_model", "PatchDiscriminator", "IDENTITIES"]

IDENTITIES = ("a", "b")


def _lrelu(x: torch.Tensor, slope: float = 0.1) -> torch.Tensor:
    return F.leaky_relu(x, slope)


class Down(nn.Module):
    """5×5 stride-2 convolution + leaky ReLU: halves the resolution."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 5, stride=2, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _lrelu(self.conv(x))


class Up(nn.Module):
    """3×3 convolution to 4× channels + leaky ReLU + pixel shuffle: doubles the resolution."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(_lrelu(self.conv(x)))


class Residual(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _lrelu(x + self.conv2(_lrelu(self.conv1(x), 0.2)), 0.2)


class Encoder(nn.Module):
    """Image ``[N,3,R,R]`` → feature map ``[N, 8·e_dims, R/16, R/16]``."""

    def __init__(self, e_dims: int):
        super().__init__()
        dims = [3, e_dims, e_dims * 2, e_dims * 4, e_dims * 8]
        self.layers = nn.Sequential(*[Down(a, b) for a, b in zip(dims[:-1], dims[1:])])
        self.out_channels = dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Inter(nn.Module):
    """Dense bottleneck: features → ``ae_dims`` → ``[N, out_ch, r, r]`` → one upscale to ``2r``."""

    def __init__(self, in_features: int, ae_dims: int, res: int, out_ch: int):
        super().__init__()
        self.res, self.out_ch = res, out_ch
        self.dense1 = nn.Linear(in_features, ae_dims)
        self.dense2 = nn.Linear(ae_dims, res * res * out_ch)
        self.up = Up(out_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense2(self.dense1(x.flatten(1)))
        return self.up(x.view(-1, self.out_ch, self.res, self.res))


class Decoder(nn.Module):
    """Code ``[N, cin, r, r]`` → colour ``[N,3,8r,8r]`` (and mask ``[N,1,8r,8r]``) in [0,1]."""

    def __init__(self, cin: int, dims: tuple[int, int, int], mask_dims: tuple[int, int, int] | None,
                 residual: bool):
        super().__init__()
        layers: list[nn.Module] = []
        c = cin
        for d in dims:
            layers.append(Up(c, d))
            if residual:
                layers.append(Residual(d))
            c = d
        self.rgb = nn.Sequential(*layers)
        self.to_rgb = nn.Conv2d(c, 3, 5, padding=2)
        self.mask = None
        if mask_dims is not None:
            m, c = [], cin
            for d in mask_dims:
                m.append(Up(c, d))
                c = d
            self.mask = nn.Sequential(*m)
            self.to_mask = nn.Conv2d(c, 1, 5, padding=2)

    def forward(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        rgb = torch.sigmoid(self.to_rgb(self.rgb(code)))
        mask = torch.sigmoid(self.to_mask(self.mask(code))) if self.mask is not None else None
        return rgb, mask


class SwapModel(nn.Module):
    """Shared encoder + per-identity decoding.

    ``forward(x, identity)``: faces ``[N,3,R,R]`` in [0,1] (RGB) → ``(colour [N,3,R,R], mask [N,1,R,R] or None)``,
    painted as person ``identity`` (``"a"`` or ``"b"``). ``swap(x, "a2b")`` paints A's faces as B.
    """

    def __init__(self, config: SwapConfig):
        super().__init__()
        self.config = config
        r = config.resolution
        self.encoder = Encoder(config.e_dims)
        feat = self.encoder.out_channels * (r // 16) ** 2
        lowest = r // 16
        mask_dims = None
        if config.architecture == "original":
            # dense to 4×4 whatever the resolution, as faceswap's Original does at 64 px
            lowest = 4 if r == 64 else r // 16
            self.inter = Inter(feat, config.ae_dims, lowest, config.e_dims * 8)
            code_ch = config.e_dims * 4
            self.inter.up = Up(config.e_dims * 8, code_ch)
            n_up = _log2(r // (lowest * 2))
            dims = tuple(config.d_dims * 2 ** i for i in range(n_up - 1, -1, -1))
            if config.learn_mask:
                mask_dims = tuple(config.d_mask_dims * 2 ** i for i in range(n_up - 1, -1, -1))
            residual = False
        else:
            ch = config.ae_dims * (2 if config.architecture == "liae" else 1)
            code_ch = ch * (2 if config.architecture == "liae" else 1)
            if config.architecture == "df":
                self.inter = Inter(feat, config.ae_dims, lowest, config.ae_dims)
            else:
                self.inter_ab = Inter(feat, config.ae_dims, lowest, ch)
                self.inter_b = Inter(feat, config.ae_dims, lowest, ch)
            dims = (config.d_dims * 8, config.d_dims * 4, config.d_dims * 2)
            if config.learn_mask:
                mask_dims = (config.d_mask_dims * 8, config.d_mask_dims * 4, config.d_mask_dims * 2)
            residual = True
        if len(dims) != 3 and config.architecture != "original":
            raise ConfigError("internal: decoder depth")
        make = lambda: Decoder(code_ch, dims, mask_dims, residual)  # noqa: E731
        if config.architecture == "liae":
            self.decoder = make()
        else:
            self.decoders = nn.ModuleDict({i: make() for i in IDENTITIES})

    @property
    def resolution(self) -> int:
        return self.config.resolution

    def forward(self, x: torch.Tensor, identity: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        if identity not in IDENTITIES:
            raise ConfigError(f"identity must be 'a' or 'b', got {identity!r}")
        e = self.encoder(x)
        if self.config.architecture == "liae":
            ab = self.inter_ab(e)
            code = torch.cat([ab, ab] if identity == "a" else [self.inter_b(e), ab], dim=1)
            return self.decoder(code)
        return self.decoders[identity](self.inter(e))

    def swap(self, x: torch.Tensor, direction: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``"a2b"``: A's faces painted as B; ``"b2a"``: the reverse."""
        if direction not in ("a2b", "b2a"):
            raise ConfigError(f"direction must be 'a2b' or 'b2a', got {direction!r}")
        return self(x, direction[-1])


def _log2(n: int) -> int:
    k = n.bit_length() - 1
    if 2 ** k != n:
        raise ConfigError(f"resolution gives a non-power-of-two upscale factor {n}")
    return k


class PatchDiscriminator(nn.Module):
    """PatchGAN-style critic: ``[N,3,R,R]`` in [0,1] → logits ``[N,1,R/8,R/8]``, one per receptive patch."""

    def __init__(self, dims: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, dims, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(dims, dims * 2, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(dims * 2, dims * 4, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(dims * 4, 1, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


def build_model(config: SwapConfig) -> SwapModel:
    return SwapModel(config)

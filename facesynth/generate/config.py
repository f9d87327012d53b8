"""``StyleGANConfig``: every switch of the official StyleGAN v1 generator (``G_style``/``G_mapping``/``G_synthesis``).

Defaults are the official defaults (``training/networks_stylegan.py``), so ``StyleGANConfig()`` is the 1024²
FFHQ/CelebA-HQ generator. ``channels`` gives the feature maps per resolution (4, 8, …, resolution); when left
out it follows the official ``nf(stage) = min(fmap_base / 2**(stage * fmap_decay), fmap_max)``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from facesynth.errors import ConfigError

__all__ = ["StyleGANConfig"]


@dataclass
class StyleGANConfig:
    resolution: int = 1024                 # output side in pixels, a power of two from 4 (8 and up in practice)
    num_channels: int = 3                  # output colour channels
    latent_size: int = 512                 # Z
    label_size: int = 0                    # conditioning labels (0: unconditional)
    dlatent_size: int = 512                # W
    mapping_layers: int = 8
    mapping_fmaps: int = 512
    mapping_lrmul: float = 0.01            # learning-rate multiplier of the mapping network
    mapping_nonlinearity: str = "lrelu"    # "lrelu" or "relu"
    normalize_latents: bool = True         # pixel norm on Z
    fmap_base: int = 8192
    fmap_decay: float = 1.0
    fmap_max: int = 512
    channels: tuple[int, ...] = ()         # feature maps at 4, 8, …, resolution; () = from fmap_base/decay/max
    use_styles: bool = True
    const_input_layer: bool = True         # learned 4x4 constant (False: a dense layer from W[0])
    use_noise: bool = True
    nonlinearity: str = "lrelu"
    use_wscale: bool = True                # equalised learning rate
    use_pixel_norm: bool = False
    use_instance_norm: bool = True
    fused_scale: bool | str = "auto"       # transposed-conv upsampling; "auto" = at 128 px and above
    blur_filter: tuple[float, ...] | None = (1, 2, 1)
    truncation_psi: float | None = 0.7     # G_style's defaults, used when a call does not say otherwise
    truncation_cutoff: int | None = 8
    dlatent_avg_beta: float = 0.995        # training: moving average of W
    style_mixing_prob: float = 0.9         # training: mixing regularisation
    extra: dict[str, Any] = field(default_factory=dict)   # unrecognised official kwargs, kept for the record

    def __post_init__(self) -> None:
        log2 = int(round(math.log2(self.resolution))) if self.resolution > 0 else 0
        if self.resolution < 4 or 2 ** log2 != self.resolution:
            raise ConfigError(f"StyleGAN resolution must be a power of two >= 4, got {self.resolution}")
        for name in ("nonlinearity", "mapping_nonlinearity"):
            if getattr(self, name) not in ("lrelu", "relu"):
                raise ConfigError(f"{name} must be 'lrelu' or 'relu', got {getattr(self, name)!r}")
        if self.fused_scale not in (True, False, "auto"):
            raise ConfigError(f"fused_scale must be True, False or 'auto', got {self.fused_scale!r}")
        if not self.channels:
            self.channels = tuple(self.nf(stage) for stage in range(1, log2))
        self.channels = tuple(int(c) for c in self.channels)
        if len(self.channels) != log2 - 1:
            raise ConfigError(f"channels must list one width per resolution 4..{self.resolution} ({log2 - 1} "
                              f"values), got {len(self.channels)}")
        if self.blur_filter is not None:
            self.blur_filter = tuple(float(v) for v in self.blur_filter) or None
        if self.mapping_layers < 1:
            raise ConfigError(f"mapping_layers must be >= 1, got {self.mapping_layers}")

    def nf(self, stage: int) -> int:
        return min(int(self.fmap_base / (2.0 ** (stage * self.fmap_decay))), self.fmap_max)

    @property
    def resolution_log2(self) -> int:
        return int(round(math.log2(self.resolution)))

    @property
    def num_layers(self) -> int:
        """Rows of W that the synthesis network reads: two per resolution."""
        return 2 * self.resolution_log2 - 2

    @property
    def num_styles(self) -> int:
        return self.num_layers if self.use_styles else 1

    def fused_at(self, res: int) -> bool:
        """Whether the upsampling into ``res`` is the fused transposed convolution (official 'auto': res >= 128)."""
        return res >= 128 if self.fused_scale == "auto" else bool(self.fused_scale)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["blur_filter"] = list(self.blur_filter) if self.blur_filter else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StyleGANConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown StyleGAN settings {unknown}; known: {sorted(known)}")
        d = dict(d)
        if d.get("channels") is not None:
            d["channels"] = tuple(d["channels"])
        if d.get("blur_filter") is not None:
            d["blur_filter"] = tuple(d["blur_filter"])
        return cls(**d)

    @classmethod
    def preset(cls, name: str) -> "StyleGANConfig":
        """``"quick"``: a CPU-sized 32² generator for tests and QUICK notebooks; ``"64"``, ``"128"``: small
        resolutions for training on a face set; ``"1024"``: the official 1024² generator."""
        presets = {
            "quick": dict(resolution=32, latent_size=64, dlatent_size=64, mapping_layers=4, mapping_fmaps=64,
                          fmap_base=256, fmap_max=64),
            "64": dict(resolution=64, latent_size=256, dlatent_size=256, mapping_layers=8, mapping_fmaps=256,
                       fmap_base=2048, fmap_max=256),
            "128": dict(resolution=128, fmap_base=4096, fmap_max=256, latent_size=256, dlatent_size=256,
                        mapping_fmaps=256),
            "1024": {},
        }
        if name not in presets:
            raise ConfigError(f"unknown StyleGAN preset {name!r}; choose one of {sorted(presets)}")
        return cls(**presets[name])

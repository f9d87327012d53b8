"""Face-swap configuration: one dataclass, named presets.

Presets:
- ``quick``: a small DF-style network at 64 px; a few hundred iterations on a 2-core CPU visibly learn.
- ``paper``: the study's model, a faceswap-"Original"-class autoencoder at 64 px (conv encoder
  128-256-512-1024, 1024-d dense bottleneck, upscaling decoders), batch 12, L1 loss so logged values sit on
  the study's scale (≈0.03 late in training).
- ``dfl-df`` / ``dfl-liae``: DeepFaceLab SAEHD-like networks at 128 px (ae_dims 256, e_dims 64, d_dims 64,
  d_mask_dims 22), DSSIM + MSE losses as DeepFaceLab weights them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from facesynth.errors import ConfigError

__all__ = ["SwapConfig", "PRESETS"]


@dataclass
class SwapConfig:
    # network
    architecture: str = "df"          # "original" (faceswap), "df" or "liae" (DeepFaceLab SAEHD)
    resolution: int = 128             # side of the aligned crops the network sees
    ae_dims: int = 256                # bottleneck width
    e_dims: int = 64                  # encoder base channels (×1, ×2, ×4, ×8 down the stack)
    d_dims: int = 64                  # decoder base channels
    d_mask_dims: int = 22             # mask decoder base channels
    learn_mask: bool = True           # predict a face mask beside the colour
    # data and augmentation
    batch_size: int = 12
    mask_type: str = "extended"       # which stored mask the loss is restricted to ("" = whole crop)
    random_warp: bool = True          # DeepFaceLab/faceswap random grid warp of the input only
    warp_strength: float = 1.0
    rotation: float = 10.0            # ± degrees of random rotation (input and target together)
    scale: float = 0.05               # ± relative zoom
    shift: float = 0.05               # ± relative translation
    flip: float = 0.5                 # probability of a horizontal flip
    color_jitter: float = 0.0         # strength of brightness/contrast/saturation/hue jitter
    cache_faces: int = 4096           # decoded crops kept in memory (bounded; the rest is read lazily)
    # loss
    l1_weight: float = 0.0
    mse_weight: float = 10.0
    dssim_weight: float = 10.0
    mask_loss_weight: float = 10.0
    eyes_mouth_priority: bool = False
    eyes_mouth_weight: float = 3.0    # extra weight of the eyes-and-mouth region when prioritised
    gan_weight: float = 0.0           # >0 adds a patch discriminator (the study: "a discriminator can be added")
    gan_dims: int = 16
    # optimisation
    optimizer: str = "adam"           # "adam" or "adamw"
    lr: float = 5e-5
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    lr_schedule: str = "constant"     # "constant", "cosine", "step"
    warmup: int = 0                   # linear warm-up iterations
    lr_total: int = 400_000           # cosine horizon
    min_lr: float = 0.0
    lr_step: int = 100_000
    lr_gamma: float = 0.5
    clip_grad: float = 0.0            # max gradient norm, 0 = off
    amp: bool = True                  # bf16/fp16 autocast on GPU (no effect on CPU)
    channels_last: bool = True        # on GPU
    # bookkeeping
    checkpoint_every: int = 1000
    checkpoint_minutes: float = 10.0
    snapshot_every: int = 25_000      # keep snapshots/NNNNNNNN.pt
    preview_every: int = 1000         # previews/NNNNNNNN.png (A, A→A, A→B, B, B→B, B→A)
    log_every: int = 1                # a log.jsonl record (losses, lr) every step, as the study plotted
    face_loss_momentum: float = 0.1   # running per-face loss (exponential moving average)
    seed: int = 0
    preset_name: str = "custom"       # which preset it came from

    def __post_init__(self) -> None:
        if self.architecture not in ("original", "df", "liae"):
            raise ConfigError(f"architecture must be original, df or liae, got {self.architecture!r}")
        if self.resolution % 16 or self.resolution < 32:
            raise ConfigError(f"resolution must be a multiple of 16 and ≥ 32, got {self.resolution}")
        if self.optimizer not in ("adam", "adamw"):
            raise ConfigError(f"optimizer must be adam or adamw, got {self.optimizer!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {self.batch_size}")
        self.betas = tuple(self.betas)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "SwapConfig":
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], "preset_name": name, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SwapConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(architecture="df", resolution=64, ae_dims=64, e_dims=16, d_dims=8, d_mask_dims=4,
                  batch_size=4, lr=2e-4, l1_weight=1.0, mse_weight=0.0, dssim_weight=1.0, mask_loss_weight=1.0,
                  warp_strength=0.7, checkpoint_every=100, preview_every=100, snapshot_every=1000),
    "paper": dict(architecture="original", resolution=64, ae_dims=1024, e_dims=128, d_dims=64, d_mask_dims=32,
                  batch_size=12, lr=5e-5, l1_weight=1.0, mse_weight=0.0, dssim_weight=0.0, mask_loss_weight=1.0),
    "dfl-df": dict(architecture="df", resolution=128, ae_dims=256, e_dims=64, d_dims=64, d_mask_dims=22),
    "dfl-liae": dict(architecture="liae", resolution=128, ae_dims=256, e_dims=64, d_dims=64, d_mask_dims=22),
}

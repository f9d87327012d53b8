"""First Order Motion Model configuration: dataclasses that mirror the official ``model_params``.

The official YAML files (``config/vox-256.yaml`` in AliaksandrSiarohin/first-order-model) map onto these
dataclasses field by field, so ``FOMMConfig.from_yaml(path)`` reads them unchanged. Built-in names:

- ``vox-256``: the released ``vox-cpk.pth.tar``.
- ``vox-adv-256``: the released ``vox-adv-cpk.pth.tar``. Its key point detector and generator are those of
  vox-256; only the discriminator (``use_kp: True``, no spectral norm) and training values differ.

``align_corners`` is ours, not the official config's: the official code calls ``grid_sample`` without it, which
means False on torch >= 1.3 (what the official code computes today, our default); the released weights were
trained on torch 1.0, which behaved like True (offered as an option).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from facesynth.errors import ConfigError

__all__ = ["CommonParams", "KPDetectorParams", "DenseMotionParams", "GeneratorParams", "DiscriminatorParams",
           "FOMMConfig", "BUILTIN_CONFIGS", "read_yaml"]


@dataclass
class CommonParams:
    num_kp: int = 10                   # key points per face
    num_channels: int = 3              # RGB
    estimate_jacobian: bool = True     # a 2x2 local affine per key point (first-order motion)


@dataclass
class KPDetectorParams:
    temperature: float = 0.1           # softmax temperature of the heatmaps
    block_expansion: int = 32          # hourglass base channels
    max_features: int = 1024           # hourglass channel cap
    scale_factor: float = 0.25         # the detector sees an anti-aliased, downsampled frame
    num_blocks: int = 5                # hourglass depth
    single_jacobian_map: bool = False  # official option: one jacobian map shared by all key points
    pad: int = 0                       # padding of the 7x7 heads (0: the heatmap is 6 pixels smaller)


@dataclass
class DenseMotionParams:
    block_expansion: int = 64
    max_features: int = 1024
    num_blocks: int = 5
    scale_factor: float = 0.25         # motion is estimated at a quarter of the frame size
    kp_variance: float = 0.01          # variance of the key point Gaussians (official default)


@dataclass
class GeneratorParams:
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    num_bottleneck_blocks: int = 6
    estimate_occlusion_map: bool = True
    dense_motion_params: DenseMotionParams | None = field(default_factory=DenseMotionParams)


@dataclass
class DiscriminatorParams:
    scales: tuple[float, ...] = (1,)
    block_expansion: int = 32
    max_features: int = 512
    num_blocks: int = 4
    sn: bool = False                   # spectral norm on every conv (vox-256 sets it)
    use_kp: bool = False               # key point heatmaps concatenated to the image (vox-adv)
    kp_variance: float = 0.01


@dataclass
class FOMMConfig:
    common_params: CommonParams = field(default_factory=CommonParams)
    kp_detector_params: KPDetectorParams = field(default_factory=KPDetectorParams)
    generator_params: GeneratorParams = field(default_factory=GeneratorParams)
    discriminator_params: DiscriminatorParams = field(default_factory=DiscriminatorParams)
    align_corners: bool = False        # grid_sample convention, see the module docstring
    name: str = ""                     # where the values came from (a built-in name or a file)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "", align_corners: bool = False) -> "FOMMConfig":
        """Build from an official config dict (the whole file, or just its ``model_params``)."""
        model = data.get("model_params", data)
        if not isinstance(model, Mapping):
            raise ConfigError(f"{name or 'config'}: model_params must be a mapping, got {type(model).__name__}")
        try:
            gen = dict(model.get("generator_params", {}))
            dense = gen.pop("dense_motion_params", None)
            disc = dict(model.get("discriminator_params", {}))
            if "scales" in disc:
                disc["scales"] = tuple(disc["scales"])
            return cls(
                common_params=CommonParams(**model.get("common_params", {})),
                kp_detector_params=KPDetectorParams(**model.get("kp_detector_params", {})),
                generator_params=GeneratorParams(
                    **gen, dense_motion_params=None if dense is None else DenseMotionParams(**dense)),
                discriminator_params=DiscriminatorParams(**disc),
                align_corners=align_corners, name=name)
        except TypeError as e:  # an unknown key in the YAML
            raise ConfigError(f"{name or 'config'}: {e}; is it an official FOMM config?") from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, align_corners: bool = False) -> "FOMMConfig":
        """Read an official FOMM YAML file (only ``model_params`` is used)."""
        return cls.from_dict(read_yaml(path), name=str(path), align_corners=align_corners)

    @classmethod
    def named(cls, name: str, align_corners: bool = False) -> "FOMMConfig":
        """A built-in config by its official name (``"vox-256"``, ``"vox-adv-256"``)."""
        key = name.lower().removesuffix(".yaml")
        if key not in BUILTIN_CONFIGS:
            raise ConfigError(f"unknown FOMM config {name!r}; built-in: {sorted(BUILTIN_CONFIGS)}, or a YAML path")
        return cls.from_dict(BUILTIN_CONFIGS[key], name=key, align_corners=align_corners)

    @classmethod
    def resolve(cls, config: "str | os.PathLike | FOMMConfig", align_corners: bool | None = None) -> "FOMMConfig":
        """A config from a built-in name, a YAML path, or a FOMMConfig (``align_corners`` overrides if given)."""
        if isinstance(config, FOMMConfig):
            cfg = config
        elif isinstance(config, str) and config.lower().removesuffix(".yaml") in BUILTIN_CONFIGS:
            cfg = cls.named(config)
        else:
            cfg = cls.from_yaml(config)
        if align_corners is not None:
            cfg = dataclasses.replace(cfg, align_corners=align_corners)
        return cfg


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """An official FOMM YAML file as a dict. A missing file, broken YAML (the message gives its line and column)
    or a file that is not a mapping is a ConfigError."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: FOMM config not found; pass a YAML path or one of {sorted(BUILTIN_CONFIGS)}")
    try:
        with open(p, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}{where}: not valid YAML ({problem}); fix the file or use one of "
                          f"{sorted(BUILTIN_CONFIGS)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a UTF-8 text file ({e.reason} at byte {e.start}); is it a YAML config?") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{p}: not a YAML mapping; is it an official FOMM config?")
    return dict(data)


_VOX_MODEL: dict[str, Any] = {
    "common_params": {"num_kp": 10, "num_channels": 3, "estimate_jacobian": True},
    "kp_detector_params": {"temperature": 0.1, "block_expansion": 32, "max_features": 1024,
                           "scale_factor": 0.25, "num_blocks": 5},
    "generator_params": {"block_expansion": 64, "max_features": 512, "num_down_blocks": 2,
                         "num_bottleneck_blocks": 6, "estimate_occlusion_map": True,
                         "dense_motion_params": {"block_expansion": 64, "max_features": 1024, "num_blocks": 5,
                                                 "scale_factor": 0.25}},
}

# model_params of the official config/vox-256.yaml and config/vox-adv-256.yaml (commit c0274845)
BUILTIN_CONFIGS: dict[str, dict[str, Any]] = {
    "vox-256": {**_VOX_MODEL, "discriminator_params": {"scales": [1], "block_expansion": 32, "max_features": 512,
                                                       "num_blocks": 4, "sn": True}},
    "vox-adv-256": {**_VOX_MODEL, "discriminator_params": {"scales": [1], "block_expansion": 32,
                                                           "max_features": 512, "num_blocks": 4, "use_kp": True}},
    # facesynth's own, not an official file: every structural feature of vox-256 (jacobians, occlusion map,
    # 5-block hourglasses, 2 down and 6 bottleneck blocks, spectral-norm discriminator) at 64x64 with few
    # channels, so that a self-supervised training of a few minutes runs on a CPU (the notebooks' QUICK mode)
    "quick-64": {"common_params": {"num_kp": 10, "num_channels": 3, "estimate_jacobian": True},
                 "kp_detector_params": {"temperature": 0.1, "block_expansion": 8, "max_features": 64,
                                        "scale_factor": 0.5, "num_blocks": 5},
                 "generator_params": {"block_expansion": 16, "max_features": 64, "num_down_blocks": 2,
                                      "num_bottleneck_blocks": 6, "estimate_occlusion_map": True,
                                      "dense_motion_params": {"block_expansion": 8, "max_features": 64,
                                                              "num_blocks": 5, "scale_factor": 0.5}},
                 "discriminator_params": {"scales": [1], "block_expansion": 8, "max_features": 64,
                                          "num_blocks": 4, "sn": True}},
}

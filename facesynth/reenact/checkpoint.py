"""Official FOMM checkpoints in and out: ``load_fomm`` and the strict key/shape check.

An official checkpoint (``logger.Logger.save_cpk``) is ``torch.save`` of a plain dict: ``generator`` and
``kp_detector`` state dicts (no ``module.`` prefix), and in training files also ``discriminator``,
``optimizer_generator``, ``optimizer_discriminator``, ``optimizer_kp_detector`` and ``epoch``. Inference needs
only the first two; the others are accepted and ignored. The discriminator is loaded (and checked as strictly)
only when asked for: its spectral-norm entries (``weight_orig``, ``weight_u``, ``weight_v``) are those of the
torch that wrote the file, and the released files were written by torch 1.0, whose layout we could not check.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from facesynth.errors import CheckpointError
from facesynth.reenact.config import FOMMConfig
from facesynth.reenact.model import (KP, KPDetector, MultiScaleDiscriminator, OcclusionAwareGenerator,
                                     build_discriminator, build_generator, build_kp_detector)
from facesynth.safe_load import check_state_dict as _check, load_checkpoint

__all__ = ["FOMM", "load_fomm", "check_state_dict", "MODEL_ENTRIES", "TRAINING_ENTRIES"]

MODEL_ENTRIES = ("generator", "kp_detector")
TRAINING_ENTRIES = ("discriminator", "optimizer_generator", "optimizer_discriminator", "optimizer_kp_detector",
                    "epoch")


@dataclass
class FOMM:
    """A loaded First Order Motion Model in eval mode: key point detector and generator on one device."""

    kp_detector: KPDetector
    generator: OcclusionAwareGenerator
    config: FOMMConfig
    device: torch.device
    epoch: int | None = None          # the checkpoint's last finished epoch, when it says
    discriminator: MultiScaleDiscriminator | None = None   # only when load_fomm(discriminator=True)

    @torch.inference_mode()
    def keypoints(self, frames: torch.Tensor) -> KP:
        """Key points of each frame.

        Shape: frames (N, C, H, W) float in [0, 1] → {"value": (N, K, 2) in about [-1, 1] as (x, y),
        "jacobian": (N, K, 2, 2)} on the model's device.
        """
        return self.kp_detector(self._frames(frames, "frames"))

    @torch.inference_mode()
    def generate(self, source: torch.Tensor, kp_source: KP, kp_driving: KP) -> dict[str, torch.Tensor]:
        """The official generator's output for ``source`` moved from ``kp_source`` to ``kp_driving``.

        Shape: source (N or 1, C, H, W) in [0, 1]; kp_source with N or 1 entries; kp_driving with N entries
        → {"prediction": (N, C, H, W) in [0, 1], "mask", "sparse_deformed", "occlusion_map", "deformed"}.
        A single source (and its key points) is broadcast over the N driving key point sets.
        """
        source = self._frames(source, "source")
        kp_driving = {k: v.to(self.device) for k, v in kp_driving.items()}
        n = kp_driving["value"].shape[0]
        if source.shape[0] not in (1, n):
            raise ValueError(f"source has {source.shape[0]} frames, kp_driving {n}: give 1 or {n} source frames")
        kp_source = {k: v.to(self.device).expand(n, *v.shape[1:]) for k, v in kp_source.items()}
        return self.generator(source.expand(n, *source.shape[1:]), kp_driving=kp_driving, kp_source=kp_source)

    def animate(self, source: torch.Tensor, driving, relative: bool = True, adapt_movement_scale: bool = True,
                **options) -> torch.Tensor:
        """``source`` animated by ``driving``: (T, C, H, W) float in [0, 1] on the CPU.

        See ``facesynth.reenact.animate.animate`` (options: ``batch_size``, ``best_frame``, ``autocast``).
        """
        from facesynth.reenact.animate import animate
        return animate(self, source, driving, relative=relative, adapt_movement_scale=adapt_movement_scale,
                       **options)

    def _frames(self, x: torch.Tensor, name: str) -> torch.Tensor:
        channels = self.config.common_params.num_channels
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a float tensor (N, {channels}, H, W) in [0, 1], got {shape}")
        return x.to(self.device, torch.float32)


def load_fomm(checkpoint: str | os.PathLike | Mapping[str, Any], config: str | os.PathLike | FOMMConfig = "vox-256",
              device: str | torch.device = "auto", align_corners: bool | None = None,
              discriminator: bool = False) -> FOMM:
    """Load an official FOMM checkpoint (``vox-cpk.pth.tar``...) into our modules, strictly.

    ``checkpoint`` is a path, a registry name (``"fomm-vox"``, resolved by facesynth.weights), or an already
    loaded checkpoint dict. ``config`` is a built-in name (``"vox-256"``, ``"vox-adv-256"``), an official YAML
    path or a FOMMConfig. ``align_corners`` overrides the config's grid_sample convention (default False: what
    the official code computes on today's torch). ``discriminator=True`` also loads the ``discriminator`` entry
(training files only), with the same strict check; otherwise that entry is ignored.

    Raises:
        CheckpointError: unreadable file, missing ``generator``/``kp_detector`` entry, or any missing,
            unexpected or mis-shaped key (the message names the first ones).
        UnsafeCheckpointError: the file asks to import code.
        WeightsNotFoundError: a registry name whose file is not on disk.
    """
    from facesynth.gpu import pick_device

    cfg = FOMMConfig.resolve(config, align_corners=align_corners)
    data, source = load_checkpoint(checkpoint)
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{source}: expected the official FOMM checkpoint dict, got {type(data).__name__}")
    wanted = MODEL_ENTRIES + (("discriminator",) if discriminator else ())
    missing = [k for k in wanted if k not in data]
    if missing:
        raise CheckpointError(f"{source}: no {' / '.join(missing)} entry (it has {sorted(map(str, data))[:10]}); "
                              f"is it a First Order Motion Model checkpoint?")
    modules: dict[str, nn.Module] = {"kp_detector": build_kp_detector(cfg), "generator": build_generator(cfg)}
    if discriminator:
        modules["discriminator"] = build_discriminator(cfg)
    for name, module in modules.items():
        load_checked(module, data[name], f"{source} [{name}] (config {cfg.name or 'given'})")
    dev = pick_device(device)
    modules = {name: module.to(dev).eval() for name, module in modules.items()}
    epoch = data.get("epoch")
    model = FOMM(modules["kp_detector"], modules["generator"], cfg, dev,
                 epoch=int(epoch) if isinstance(epoch, (int, torch.Tensor)) else None,
                 discriminator=modules.get("discriminator"))
    if not isinstance(checkpoint, Mapping):
        from facesynth.provenance.record import remember_weights

        remember_weights(model, source)          # results name the file they came from
    return model


def load_checked(module: nn.Module, state: Any, what: str) -> None:
    """Load ``state`` into ``module`` after ``check_state_dict``; a lone ``module.`` prefix is removed."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{what}: expected a state dict (names → tensors), got {type(state).__name__}")
    # DataParallel adds "module."; the official files have none, but re-saved ones sometimes do
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    check_state_dict(module.state_dict(), state, what)
    module.load_state_dict(state, strict=True)


def check_state_dict(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], what: str,
                     show: int = 5) -> None:
    """``facesynth.safe_load.check_state_dict`` with the FOMM hint (the config must match the checkpoint)."""
    _check(expected, found, what, "Check that the config matches the checkpoint (vox-256 for vox-cpk.pth.tar)",
           show)

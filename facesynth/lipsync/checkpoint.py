"""Official Wav2Lip checkpoints in and out: ``load_wav2lip`` and random official-layout networks.

The official training scripts save ``torch.save({"state_dict", "optimizer", "global_step", "global_epoch"})``
(``save_checkpoint`` in ``wav2lip_train.py``); the released ``wav2lip.pth`` / ``wav2lip_gan.pth`` (about 416 MB:
weights plus the Adam state) are thought to be pre-zip files whose keys carry DataParallel's ``module.``
prefix. The official ``inference.load_model`` deletes every ``module.`` substring and loads strictly; so do we,
through ``facesynth.safe_load`` (``weights_only=True``: nothing in the file is executed). ``optimizer`` and the
step counters are ignored.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from facesynth.errors import CheckpointError
from facesynth.lipsync.model import ConvBlock, QualityDiscriminator, SyncNet, Wav2Lip
from facesynth.safe_load import check_state_dict, load_checkpoint

__all__ = ["load_wav2lip", "load_syncnet", "load_quality_discriminator", "load_official", "official_checkpoint",
           "randomize_", "random_wav2lip", "MODELS"]

MODELS: dict[str, type[nn.Module]] = {"wav2lip": Wav2Lip, "syncnet": SyncNet, "disc": QualityDiscriminator}
# randomize_ scales Wav2Lip's last conv by this so the sigmoid output spreads over about (0.05, 0.85) on real faces
# (checked on the sample portraits and test sounds) instead of saturating
OUTPUT_GAIN = 0.08


def load_wav2lip(checkpoint: str | os.PathLike | Mapping[str, Any] = "wav2lip-gan",
                 device: str | torch.device = "auto") -> Wav2Lip:
    """Load an official Wav2Lip generator checkpoint (``wav2lip.pth``, ``wav2lip_gan.pth``), strictly, in eval mode.

    Args:
        checkpoint: a path, a registry name (``"wav2lip"``, ``"wav2lip-gan"``: resolved by facesynth.weights), or an
            already loaded checkpoint dict in the official layout.
        device: ``"auto"`` (cuda, mps, cpu), or any torch device.

    Returns:
        ``Wav2Lip`` taking the official tensors: ``net(mel [B,1,80,16], faces [B,6,96,96] BGR) → [B,3,96,96]``.

    Raises:
        CheckpointError: truncated, damaged or foreign file, no ``state_dict`` entry, or any missing, unexpected
            or mis-shaped key (the message names the first ones).
        UnsafeCheckpointError: the file asks to import code; nothing was executed.
        WeightsNotFoundError: a registry name whose file is not on disk.

    Example:
        >>> net = load_wav2lip("weights/wav2lip_gan.pth")          # doctest: +SKIP
    """
    return load_official(checkpoint, "wav2lip", device)


def load_syncnet(checkpoint: str | os.PathLike | Mapping[str, Any], device: str | torch.device = "auto") -> SyncNet:
    """Load an official lip-sync expert checkpoint (``lipsync_expert.pth``) like ``load_wav2lip``."""
    return load_official(checkpoint, "syncnet", device)


def load_quality_discriminator(checkpoint: str | os.PathLike | Mapping[str, Any],
                               device: str | torch.device = "auto") -> QualityDiscriminator:
    """Load an official visual-quality discriminator checkpoint (``visual_quality_disc.pth``) like ``load_wav2lip``."""
    return load_official(checkpoint, "disc", device)


def load_official(checkpoint: str | os.PathLike | Mapping[str, Any], kind: str,
                  device: str | torch.device = "auto") -> nn.Module:
    """Build ``MODELS[kind]`` and load an official-layout checkpoint into it (see ``load_wav2lip``)."""
    from facesynth.gpu import pick_device

    data, source = load_checkpoint(checkpoint)
    if not isinstance(data, Mapping) or "state_dict" not in data:
        found = sorted(map(str, data))[:10] if isinstance(data, Mapping) else type(data).__name__
        raise CheckpointError(f"{source}: no 'state_dict' entry (found {found}); is it an official Wav2Lip "
                              f"checkpoint (wav2lip.pth, wav2lip_gan.pth)? TorchScript exports (*.pt) are not "
                              f"supported")
    state = data["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: 'state_dict' is not a mapping of names to tensors")
    # as the official inference.load_model: every "module." substring goes (no real key contains one)
    state = {k.replace("module.", ""): v for k, v in state.items()}
    model = MODELS[kind]()
    check_state_dict(model.state_dict(), state, f"{source} [{MODELS[kind].__name__}]",
                     "Use the official file for this network (wav2lip.pth / wav2lip_gan.pth for the generator, "
                     "lipsync_expert.pth for SyncNet, visual_quality_disc.pth for the discriminator)")
    model.load_state_dict(state, strict=True)
    if not isinstance(checkpoint, Mapping):
        from facesynth.provenance.record import remember_weights

        remember_weights(model, source)          # results name the file they came from
    return model.to(pick_device(device)).eval()


def official_checkpoint(model: nn.Module, prefix: str = "module.", global_step: int = 0,
                        global_epoch: int = 0, optimizer: Any = None) -> dict[str, Any]:
    """``model`` in the official checkpoint layout: ``{"state_dict", "optimizer", "global_step", "global_epoch"}``.

    ``prefix`` is prepended to every key (``"module."`` as the released files are thought to have; ``""`` as the
    current training code writes). ``optimizer`` is an optimiser state dict or None.
    """
    state = {prefix + k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"state_dict": state, "optimizer": optimizer, "global_step": int(global_step),
            "global_epoch": int(global_epoch)}


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every weight and buffer of a Wav2Lip network with seeded random values that exercise it; in place.

    Deterministic across machines (numpy's PCG64, drawn module by module in registration order, i.e. the
    state dict's order): the same seed always gives bit-identical weights. Convs get He-normal weights
    (fan-in over the kernel taps that reach one output, so transposed stride-2 convs count a quarter) and
    biases N(0, 0.05²); BatchNorms get scale U(0.8, 1.2), shift N(0, 0.1²), running mean N(0, 0.1²), running
    variance U(0.5, 1.5) and a random ``num_batches_tracked``, so that eval mode hides nothing. Residual blocks'
    scales are halved so deep residual chains do not blow up, and the last conv of ``Wav2Lip.output_block``
    is scaled so the sigmoid output spreads over about (0.05, 0.85) instead of saturating.
    """
    rng = np.random.default_rng(seed)

    def fill(t: torch.Tensor, values: np.ndarray) -> None:
        t.copy_(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(t.shape))

    residual_bns = {id(m.conv_block[1]) for m in model.modules() if isinstance(m, ConvBlock) and m.residual}
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                w = module.weight
                taps = w.shape[2] * w.shape[3]
                if isinstance(module, nn.ConvTranspose2d):
                    fan_in = w.shape[0] * taps / (module.stride[0] * module.stride[1])
                else:
                    fan_in = w.shape[1] * taps
                fill(w, rng.standard_normal(w.numel()) * np.sqrt(2.0 / fan_in))
                fill(module.bias, rng.normal(0.0, 0.05, module.bias.numel()))
            elif isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                scale = 0.5 if id(module) in residual_bns else 1.0
                fill(module.weight, rng.uniform(0.8, 1.2, n) * scale)
                fill(module.bias, rng.normal(0.0, 0.1, n))
                fill(module.running_mean, rng.normal(0.0, 0.1, n))
                fill(module.running_var, rng.uniform(0.5, 1.5, n))
                module.num_batches_tracked.fill_(int(rng.integers(1, 100_000)))
        if isinstance(model, Wav2Lip):
            model.output_block[1].weight.mul_(OUTPUT_GAIN)
    return model


def random_wav2lip(seed: int = 0, device: str | torch.device = "auto") -> Wav2Lip:
    """A Wav2Lip generator with seeded random weights (``randomize_``), loaded through the official layout.

    For demos and tests where the released weights are absent: it has the official architecture and takes
    the official tensors, but its lips follow nothing. Equivalent to ``load_wav2lip(official_checkpoint(...))``.
    """
    return load_wav2lip(official_checkpoint(randomize_(Wav2Lip(), seed)), device=device)

"""``FOMMTrainer``: the official self-supervised FOMM objective, for training or fine-tuning on short videos.

Every step draws pairs of frames of one video (source and driving, as the official ``FramesDataset``: two
sorted random indices, with a random horizontal flip, time flip and colour jitter shared by both frames),
reconstructs the driving frame from the
source by the motion between their key points, and minimises the official losses (``modules/model.py`` and
``train.py`` of AliaksandrSiarohin/first-order-model):

- perceptual pyramid: at each of ``scales`` (an anti-aliased image pyramid) the weighted L1 between VGG19
  features (5 slices, ImageNet normalisation) of the prediction and of the driving frame. The VGG19 weights come
  from torchvision's cache (``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``); without them a warning says so
  and an L1 pyramid on the pixels takes its place (logged as ``loss_l1_pyramid``);
- equivariance: a random affine + thin-plate-spline warp of the driving frame must move its key points by the
  same warp (value loss), and their jacobians by the warp's jacobian (jacobian loss);
- optional GAN (``generator_gan`` > 0, as vox-adv-256): least-squares losses of the multi-scale discriminator,
  with feature matching, the discriminator seeing the driving key point heatmaps when ``use_kp``.

The learning rates follow the official MultiStepLR: × 0.1 at each of ``epoch_milestones`` official epochs
(``iterations_per_epoch`` iterations each).

Workdir layout: ``config.json`` (the resolved model config, the training values, the videos and the checkpoint
fine-tuned from: ``FOMMTrainer(workdir=...)`` alone reopens it), ``checkpoint.pt`` (atomic, resumed by default),
``backup.pt``, ``log.jsonl``; ``save_official(path)`` writes the official checkpoint layout that ``load_fomm`` and
the official code read.

Under torchrun (``setup_distributed``) every rank draws its own pairs (``batch_size`` per rank) and, after each
backward pass, the gradients of the networks being stepped are averaged across ranks in one all-reduce, as the
StyleGAN trainer does; DistributedDataParallel is not used because the key point detector runs three times per
step (source, driving, warped driving) and the jacobian loss differentiates with ``torch.autograd.grad``. The
BatchNorm running statistics are averaged across ranks after every step (SyncBatchNorm is not used: each rank
normalises by its own batch, as the official single-machine DataParallel training did per GPU), so all ranks
hold the same weights and buffers; rank 0 alone writes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from facesynth.errors import CheckpointError, ConfigError, MediaError
from facesynth.fileio import atomic_write_json
from facesynth.gpu import seed_everything
from facesynth.media import is_image
from facesynth.reenact.checkpoint import load_checked
from facesynth.reenact.config import BUILTIN_CONFIGS, FOMMConfig, read_yaml
from facesynth.reenact.evaluate import iter_video_frames, resize_frames
from facesynth.reenact.model import (KP, AntiAliasDownsample, build_discriminator, build_generator,
                                     build_kp_detector, coordinate_grid)
from facesynth.training import LRSchedule, Trainer, atomic_torch_save, distributed_device

__all__ = ["FOMMTrainer", "FOMMTrainConfig", "still_as_video", "ColorJitter", "LossWeights", "TransformParams",
           "RandomTPS", "ImagePyramid", "VGG19Features", "load_vgg19", "VideoPairs", "MissingVGGWarning", "VGG19_FILE",
           "CONFIG_FILE", "STILL_FRAMES"]

VGG19_FILE = "vgg19-dcbb9e9d.pth"     # torchvision's VGG19_Weights.IMAGENET1K_V1
CONFIG_FILE = "config.json"
STILL_FRAMES = 60                     # frames of the clip a still portrait becomes (notebook 02's choice)


class MissingVGGWarning(UserWarning):
    """VGG19 weights are not in torchvision's cache: the perceptual loss is replaced by an L1 pyramid."""


@dataclass
class LossWeights:
    generator_gan: float = 0.0                       # vox-256: no GAN; vox-adv-256: 1
    discriminator_gan: float = 1.0
    feature_matching: tuple[float, ...] = (10, 10, 10, 10)   # per discriminator block
    perceptual: tuple[float, ...] = (10, 10, 10, 10, 10)     # per VGG19 slice
    equivariance_value: float = 10.0
    equivariance_jacobian: float = 10.0


@dataclass
class TransformParams:
    sigma_affine: float = 0.05        # std of the random affine's deviation from the identity
    sigma_tps: float = 0.005          # std of the thin-plate-spline weights
    points_tps: int = 5               # control points per side


@dataclass
class ColorJitter:
    """The official ``jitter_param``: brightness, contrast, saturation and hue changed by random factors drawn
    once per clip (so a source and driving pair change alike), in random order, as torchvision's ColorJitter;
    brightness/contrast/saturation factors in [max(0, 1 - v), 1 + v], the hue shift in [-hue, hue] turns."""
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0

    def __call__(self, frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 or float (T, 3, H, W) → the same dtype, every frame changed by one draw."""
        import torchvision.transforms.functional as TF

        adjust = [(TF.adjust_brightness, self.brightness), (TF.adjust_contrast, self.contrast),
                  (TF.adjust_saturation, self.saturation)]
        ops = []
        for fn, v in adjust:
            if v:
                ops.append((fn, float(torch.empty(()).uniform_(max(0.0, 1 - v), 1 + v, generator=generator))))
        if self.hue:
            ops.append((TF.adjust_hue, float(torch.empty(()).uniform_(-self.hue, self.hue, generator=generator))))
        for i in torch.randperm(len(ops), generator=generator).tolist():
            fn, factor = ops[i]
            frames = fn(frames, factor)
        return frames


@dataclass
class FOMMTrainConfig:
    """The official ``train_params`` (vox-256 values) plus the frame size and our loop's settings."""
    frame_size: int = 256                             # dataset_params.frame_shape
    batch_size: int = 40
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-4
    lr_kp_detector: float = 2e-4
    scales: tuple[float, ...] = (1, 0.5, 0.25, 0.125)   # perceptual pyramid
    num_repeats: int = 75                             # official epoch = num_repeats passes over the videos
    num_epochs: int = 100                             # the official run's length in those epochs
    epoch_milestones: tuple[int, ...] = (60, 90)      # learning rates x 0.1 at these epochs
    horizontal_flip: bool = True
    time_flip: bool = True
    jitter: ColorJitter = field(default_factory=lambda: ColorJitter(0.1, 0.1, 0.1, 0.1))
    transform_params: TransformParams = field(default_factory=TransformParams)
    loss_weights: LossWeights = field(default_factory=LossWeights)
    seed: int = 0
    cache_videos: int = 8                             # decoded videos kept in memory (least recently used out)
    checkpoint_every: int = 500
    log_every: int = 1

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **overrides) -> "FOMMTrainConfig":
        """From an official config dict (``train_params`` and ``dataset_params``); keyword arguments override."""
        train = dict(data.get("train_params", {}))
        dataset = data.get("dataset_params", {}) or {}
        values: dict[str, Any] = {}
        names = {f.name for f in dataclasses.fields(cls)}
        for key, value in train.items():
            if key == "transform_params":
                values[key] = TransformParams(**value)
            elif key == "loss_weights":
                value = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
                values[key] = LossWeights(**value)
            elif key in ("scales", "epoch_milestones"):
                values[key] = tuple(value)
            elif key in names:
                values[key] = value
        if "frame_shape" in dataset:
            values["frame_size"] = int(dataset["frame_shape"][0])
        flips = (dataset.get("augmentation_params") or {}).get("flip_param") or {}
        values.update({k: bool(v) for k, v in flips.items() if k in ("horizontal_flip", "time_flip")})
        augmentation = dataset.get("augmentation_params") or {}
        if "jitter_param" in augmentation:
            values["jitter"] = ColorJitter(**(augmentation["jitter_param"] or {}))
        return dataclasses.replace(cls(**values), **overrides)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides) -> "FOMMTrainConfig":
        """From an official YAML file (``read_yaml``: a broken file is a ConfigError naming its line)."""
        try:
            return cls.from_dict(read_yaml(path), **overrides)
        except (TypeError, AttributeError) as e:      # an unknown key, or a section that is not a mapping
            raise ConfigError(f"{path}: {e}; is it an official FOMM config?") from None

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON values (``config.json``); ``from_saved`` reads it back."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_saved(cls, data: Mapping[str, Any]) -> "FOMMTrainConfig":
        """Inverse of ``to_dict``."""
        values = dict(data)
        try:
            for key, kind in (("jitter", ColorJitter), ("transform_params", TransformParams),
                              ("loss_weights", LossWeights)):
                if key in values:
                    values[key] = kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values[key].items()})
            for key in ("scales", "epoch_milestones"):
                if key in values:
                    values[key] = tuple(values[key])
            return cls(**values)
        except (TypeError, AttributeError) as e:
            raise ConfigError(f"saved FOMM training values do not fit this version ({e}); use a new workdir") from None


class FOMMTrainer(Trainer):
    """Train (or fine-tune, or resume) a First Order Motion Model on short videos in ``workdir``.

    Args:
        config: the model: a built-in name (``"vox-256"``), an official YAML path or a FOMMConfig; None: the
            workdir's own (``config.json``), or vox-256 for a new one. A YAML's ``train_params`` and
            ``dataset_params.frame_shape`` also set the training values.
        videos: video files, image files (a still portrait: cropped around its face and turned into a clip of
            ``STILL_FRAMES`` random warps, ``still_as_video``), float tensors (T, C, H, W) in [0, 1], or
            ``DrivingClip`` face crops (``reenact.prepare.prepare_driving``); frames are resized to the frame
            size. Empty: the workdir's recorded videos (files and DrivingClips can be reopened, tensors cannot).
        workdir: ``config.json``, checkpoints and ``log.jsonl``; a workdir with a checkpoint resumes from it, and
            ``FOMMTrainer(workdir=...)`` alone reopens it with its recorded config, videos and training values.
        train: a FOMMTrainConfig, or None for the YAML's (else the workdir's, else vox-256's) values;
            ``overrides`` replace fields.
        checkpoint: an official checkpoint (file or registry name) to start from (fine-tuning); ignored when the
            workdir resumes.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...; under torchrun each rank takes its LOCAL_RANK GPU.
    """

    def __init__(self, config: str | os.PathLike | FOMMConfig | None = None,
                 videos: Sequence[str | os.PathLike | torch.Tensor] = (), workdir: str | os.PathLike = "work/fomm",
                 train: FOMMTrainConfig | None = None, checkpoint: str | os.PathLike | Mapping | None = None,
                 device: str | torch.device = "auto", **overrides):
        super().__init__(workdir, *distributed_device(device))
        saved = self.saved_config(CONFIG_FILE)
        saved_model = _saved_model_config(saved, self.workdir) if saved is not None else None
        self.model_config = (FOMMConfig.resolve(config) if config is not None
                             else saved_model or FOMMConfig.named("vox-256"))
        if saved_model is not None and _structure(self.model_config) != _structure(saved_model):
            raise ConfigError(f"{self.workdir} holds a FOMM of another configuration ({saved_model.name or 'saved'}); "
                              f"use a new workdir or the same config")
        if train is None:
            from_yaml = (config is not None and not isinstance(config, FOMMConfig)
                         and str(config).lower().removesuffix(".yaml") not in BUILTIN_CONFIGS)
            if from_yaml:
                train = FOMMTrainConfig.from_yaml(config)
            elif saved is not None:
                train = FOMMTrainConfig.from_saved(saved.get("train", {}))
            else:
                train = FOMMTrainConfig()
        try:
            self.config = dataclasses.replace(train, **overrides)
        except TypeError as e:
            raise ConfigError(f"FOMMTrainer: {e}; the settings are FOMMTrainConfig's fields") from None
        cfg = self.config
        if saved is not None:
            videos = videos or _reopen_videos(saved.get("videos", []), self.workdir)
            checkpoint = saved.get("checkpoint") if checkpoint is None else checkpoint
        if not videos:
            raise ConfigError("FOMMTrainer needs at least one video (a file, an image, a (T, C, H, W) tensor or a "
                              "DrivingClip)")
        for video in videos:
            if isinstance(video, (str, os.PathLike)) and not Path(video).is_file():
                raise MediaError(f"{video}: no such video or image file")
        if cfg.batch_size < 2:
            raise ConfigError("batch_size must be at least 2: BatchNorm in train mode needs two samples at the "
                              "hourglass's 1x1 bottom")
        self.checkpoint_every, self.log_every = cfg.checkpoint_every, cfg.log_every
        seed_everything(cfg.seed)             # the same initial weights on every rank
        self.kp_detector = build_kp_detector(self.model_config).to(self.device)
        self.generator = build_generator(self.model_config).to(self.device)
        self.discriminator = build_discriminator(self.model_config).to(self.device)
        if checkpoint is not None and not self.checkpoint_path.is_file():
            self._load_official(checkpoint)
        betas = (0.5, 0.999)     # official train.py
        base = cfg.lr_generator or 1.0
        self.optimizers = {
            name: torch.optim.Adam([{"params": module.parameters(), "lr_mult": lr / base}], lr=lr, betas=betas)
            for name, module, lr in (("generator", self.generator, cfg.lr_generator),
                                     ("kp_detector", self.kp_detector, cfg.lr_kp_detector),
                                     ("discriminator", self.discriminator, cfg.lr_discriminator))}
        self.data = VideoPairs(videos, cfg.frame_size, cfg.cache_videos)
        self.schedule = LRSchedule(base, "multistep", gamma=0.1,     # official train.py: MultiStepLR(gamma=0.1)
                                   milestones=tuple(m * self.iterations_per_epoch for m in cfg.epoch_milestones))
        self.rng = torch.Generator().manual_seed(cfg.seed * 1000 + self.dist.rank)   # each rank its own pairs
        # the discriminator's scales as its ModuleDict spells them ("1", "0-5"), so the pyramid keys agree
        disc_scales = [int(v) if v.is_integer() else v
                       for v in (float(k.replace("-", ".")) for k in self.discriminator.discs)]
        self.pyramid = ImagePyramid(sorted({*cfg.scales, *disc_scales}, reverse=True),
                                    self.model_config.common_params.num_channels).to(self.device)
        self.vgg = load_vgg19() if sum(cfg.loss_weights.perceptual) else None
        self._events: dict[str, Any] = {}
        if self.vgg is not None:
            self.vgg = self.vgg.to(self.device)
        elif sum(cfg.loss_weights.perceptual):
            self._events = {"event": "no_vgg19", "message": "VGG19 weights missing: L1 pyramid replaces the "
                                                            "perceptual loss"}
        if self.dist.is_main:
            atomic_write_json(self.workdir / CONFIG_FILE, {
                "model": dataclasses.asdict(self.model_config), "train": cfg.to_dict(),
                "videos": [_describe_video(v) for v in videos],
                "checkpoint": _describe_checkpoint(checkpoint)}, indent=2)
        self.resume()

    # --- Trainer hooks -------------------------------------------------------------------------------------
    def model_state(self) -> dict[str, Any]:
        return {"generator": self.generator.state_dict(), "kp_detector": self.kp_detector.state_dict(),
                "discriminator": self.discriminator.state_dict(), "rng": self.rng.get_state()}

    def load_model_state(self, state: dict[str, Any]) -> None:
        for name in ("generator", "kp_detector", "discriminator"):
            getattr(self, name).load_state_dict(state[name])
        self.rng.set_state(state["rng"])
        if self.dist.rank:
            # the checkpoint holds rank 0's data stream: the other ranks branch off it, one seed per rank
            branch = int(torch.randint(2**62, (1,), generator=self.rng))
            self.rng.manual_seed(branch + self.dist.rank)

    def buffered_modules(self) -> list[nn.Module]:
        return [self.kp_detector, self.generator, self.discriminator]     # BatchNorm statistics, spectral norm

    def monitored_loss(self, record: dict) -> float:
        return record["loss_generator_total"]

    def pop_events(self) -> dict:
        events, self._events = self._events, {}
        return events

    # --- one step ------------------------------------------------------------------------------------------
    def train_step(self, iteration: int) -> dict[str, float]:
        cfg = self.config
        source, driving = self.data.batch(cfg.batch_size, self.rng, cfg.horizontal_flip, cfg.time_flip, cfg.jitter)
        source, driving = source.to(self.device), driving.to(self.device)
        for module in (self.kp_detector, self.generator, self.discriminator):
            module.train()
        losses, generated, real = self.generator_losses(source, driving)
        total = sum(losses.values())
        for name in ("generator", "kp_detector"):
            self.optimizers[name].zero_grad(set_to_none=True)
        total.backward()
        self._average_grads(self.generator, self.kp_detector)
        self.step_optimizers("generator", "kp_detector", loss=total)     # the NaN guard (training.py)
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["loss_generator_total"] = float(total.detach())
        if cfg.loss_weights.generator_gan:     # official: the discriminator trains only beside a generator GAN loss
            out["loss_disc_gan"] = self._discriminator_step(real, generated["prediction"].detach(),
                                                            generated["kp_driving"])
        self._average_buffers()
        return out

    def _average_grads(self, *modules: nn.Module) -> None:
        """Every rank's mean gradient, in one all-reduce (no-op outside torch.distributed)."""
        if self.dist.enabled:
            self._average_across_ranks([p.grad for m in modules for p in m.parameters() if p.grad is not None])

    def _average_buffers(self) -> None:
        """BatchNorm running statistics as the mean over the ranks' batches (spectral-norm vectors, equal on
        every rank, stay equal), so that every rank holds the same model."""
        if self.dist.enabled:
            self._average_across_ranks([b for m in self.buffered_modules() for b in m.buffers()
                                        if b.is_floating_point()])

    @torch.no_grad()
    def _average_across_ranks(self, tensors: list[torch.Tensor]) -> None:
        import torch.distributed as dist

        if not tensors:
            return
        flat = torch.cat([t.flatten() for t in tensors])
        dist.all_reduce(flat)
        flat /= self.dist.world_size
        for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
            t.copy_(part.view_as(t))

    def generator_losses(self, source: torch.Tensor, driving: torch.Tensor
                         ) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor]]:
        """The weighted generator-side losses of one batch (official ``GeneratorFullModel``), differentiable.

        Shape: source, driving (B, C, H, W) in [0, 1] → (losses, the generator's output with ``kp_source`` and
        ``kp_driving`` added, the driving frame's image pyramid).
        """
        cfg, w = self.config, self.config.loss_weights
        kp_source, kp_driving = self.kp_detector(source), self.kp_detector(driving)
        generated = {**self.generator(source, kp_driving=kp_driving, kp_source=kp_source),
                     "kp_source": kp_source, "kp_driving": kp_driving}
        real, fake = self.pyramid(driving), self.pyramid(generated["prediction"])
        losses: dict[str, torch.Tensor] = {}
        if sum(w.perceptual):
            if self.vgg is not None:
                losses["loss_perceptual"] = perceptual_pyramid_loss(self.vgg, fake, real, cfg.scales, w.perceptual)
            else:
                losses["loss_l1_pyramid"] = l1_pyramid_loss(fake, real, cfg.scales, sum(w.perceptual))
        if w.generator_gan:
            kp = {k: v.detach() for k, v in kp_driving.items()}
            maps_fake, maps_real = self.discriminator(fake, kp=kp), self.discriminator(real, kp=kp)
            keys = [k.replace("-", ".") for k in self.discriminator.discs]
            losses["loss_gen_gan"] = sum(w.generator_gan * ((1 - maps_fake["prediction_map_" + s]) ** 2).mean()
                                         for s in keys)
            if sum(w.feature_matching):
                losses["loss_feature_matching"] = sum(
                    weight * (a - b).abs().mean() for s in keys
                    for weight, a, b in zip(w.feature_matching, maps_real["feature_maps_" + s],
                                            maps_fake["feature_maps_" + s]) if weight)
        if w.equivariance_value or w.equivariance_jacobian:
            losses.update(self._equivariance_losses(driving, kp_driving))
        return losses, generated, real

    def _equivariance_losses(self, driving: torch.Tensor, kp_driving: KP) -> dict[str, torch.Tensor]:
        w = self.config.loss_weights
        transform = RandomTPS(driving.shape[0], self.config.transform_params, self.rng, self.device)
        transformed_kp = self.kp_detector(transform.transform_frame(driving, self.model_config.align_corners))
        out = {}
        if w.equivariance_value:
            warped = transform.warp_coordinates(transformed_kp["value"])
            out["loss_equivariance_value"] = w.equivariance_value * (kp_driving["value"] - warped).abs().mean()
        if w.equivariance_jacobian and "jacobian" in kp_driving:
            jacobian = transform.jacobian(transformed_kp["value"]) @ transformed_kp["jacobian"]
            product = torch.inverse(kp_driving["jacobian"]) @ jacobian
            eye = torch.eye(2, device=product.device, dtype=product.dtype).view(1, 1, 2, 2)
            out["loss_equivariance_jacobian"] = w.equivariance_jacobian * (eye - product).abs().mean()
        return out

    def _discriminator_step(self, real: dict[str, torch.Tensor], prediction: torch.Tensor, kp_driving: KP) -> float:
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        loss = self.discriminator_loss(real, prediction, kp_driving)
        loss.backward()
        self._average_grads(self.discriminator)
        self.step_optimizers("discriminator", loss=loss)
        return float(loss.detach())

    def discriminator_loss(self, real: dict[str, torch.Tensor], prediction: torch.Tensor,
                           kp_driving: KP) -> torch.Tensor:
        """Least-squares discriminator loss (official ``DiscriminatorFullModel``); inputs are detached here.

        Shape: real, the driving frame's pyramid; prediction (B, C, H, W); kp_driving as the key point detector's.
        """
        w = self.config.loss_weights
        kp = {k: v.detach() for k, v in kp_driving.items()}
        maps_fake = self.discriminator(self.pyramid(prediction.detach()), kp=kp)
        maps_real = self.discriminator({k: v.detach() for k, v in real.items()}, kp=kp)
        return sum(w.discriminator_gan * ((1 - maps_real["prediction_map_" + s]) ** 2
                                          + maps_fake["prediction_map_" + s] ** 2).mean()
                   for s in (k.replace("-", ".") for k in self.discriminator.discs))

    # --- official checkpoints ------------------------------------------------------------------------------
    @property
    def iterations_per_epoch(self) -> int:
        """An official epoch: ``num_repeats`` passes over the videos in batches of all ranks together (the last
        partial one dropped)."""
        return max(1, self.config.num_repeats * len(self.data) // (self.config.batch_size * self.dist.world_size))

    @property
    def num_iterations(self) -> int:
        """The official run's length in iterations: ``num_epochs`` official epochs."""
        return self.config.num_epochs * self.iterations_per_epoch

    def save_official(self, path: str | os.PathLike, epoch: int | None = None) -> Path:
        """Write the official checkpoint layout (``logger.Logger.save_cpk``), atomically.

        Keys: ``generator``, ``kp_detector``, ``discriminator``, ``optimizer_generator``,
        ``optimizer_kp_detector``, ``optimizer_discriminator`` and ``epoch`` (0-based index of the last finished
        official epoch; by default from ``iteration`` and ``iterations_per_epoch``, at least 0).
        """
        if epoch is None:
            epoch = max(0, self.iteration // self.iterations_per_epoch - 1)
        data: dict[str, Any] = {"generator": self.generator.state_dict(), "kp_detector": self.kp_detector.state_dict(),
                                "discriminator": self.discriminator.state_dict()}
        for name, opt in self.optimizers.items():
            state = opt.state_dict()
            # lr_mult is our loop's; the official optimiser groups do not have it
            state["param_groups"] = [{k: v for k, v in g.items() if k != "lr_mult"} for g in state["param_groups"]]
            data["optimizer_" + name] = state
        data["epoch"] = int(epoch)
        return atomic_torch_save(data, path)

    def _load_official(self, checkpoint: str | os.PathLike | Mapping) -> None:
        """Start from an official checkpoint: generator and key point detector strictly, the discriminator if
        it fits (the released files were written by torch 1.0, whose spectral-norm entries may differ)."""
        from facesynth.safe_load import load_checkpoint

        data, what = load_checkpoint(checkpoint)
        for name in ("generator", "kp_detector"):
            if name not in data:
                raise CheckpointError(f"{what}: no {name} entry; is it a First Order Motion Model checkpoint?")
            load_checked(getattr(self, name), data[name], f"{what} [{name}]")
        if "discriminator" in data:
            try:
                load_checked(self.discriminator, data["discriminator"], f"{what} [discriminator]")
            except CheckpointError as e:
                warnings.warn(f"{e}; the discriminator starts from random weights", stacklevel=3)


def _structure(config: FOMMConfig) -> dict[str, Any]:
    """What makes two FOMM configs the same network (everything but the name they came by)."""
    return {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(config))).items() if k != "name"}


def _saved_model_config(saved: Mapping[str, Any], workdir: Path) -> FOMMConfig:
    model = saved.get("model")
    if not isinstance(model, Mapping):
        raise ConfigError(f"{workdir / CONFIG_FILE}: no model entry; delete it to start a new model")
    return FOMMConfig.from_dict(model, name=str(model.get("name", "")),
                                align_corners=bool(model.get("align_corners", False)))


def _describe_video(video: Any) -> Any:
    """A video as config.json records it: a file's absolute path, a DrivingClip's fields (its crop of a file), or
    for a tensor only its shape (tensors cannot be reopened)."""
    if isinstance(video, torch.Tensor):
        return {"tensor": list(video.shape)}
    if _is_driving_clip(video):
        fields = {f.name: getattr(video, f.name) for f in dataclasses.fields(video) if f.name != "face_boxes"}
        return {"driving_clip": {**fields, "path": str(Path(video.path).resolve()), "box": list(video.box),
                                 "frame_size": list(video.frame_size)}}
    return str(Path(video).resolve())


def _reopen_videos(recorded: Sequence[Any], workdir: Path) -> list[Any]:
    from facesynth.reenact.prepare import DrivingClip

    in_memory = [v["tensor"] for v in recorded if isinstance(v, Mapping) and "tensor" in v]
    if in_memory:
        raise ConfigError(f"{workdir} was trained on {len(in_memory)} clip(s) held in memory (tensors of shape "
                          f"{in_memory[0]}...), which config.json cannot record; give the videos again "
                          f"(--videos on the command line)")
    return [DrivingClip(**{**v["driving_clip"], "path": Path(v["driving_clip"]["path"]),
                           "box": tuple(v["driving_clip"]["box"]),
                           "frame_size": tuple(v["driving_clip"]["frame_size"])})
            if isinstance(v, Mapping) else v for v in recorded]


def _describe_checkpoint(checkpoint: Any) -> str | None:
    """A checkpoint file's absolute path, a registry name as given, or None for a dict given in memory."""
    if checkpoint is None or isinstance(checkpoint, Mapping):
        return None
    return str(Path(checkpoint).resolve()) if Path(checkpoint).is_file() else str(checkpoint)


# --- losses ----------------------------------------------------------------------------------------------------

def perceptual_pyramid_loss(vgg: "VGG19Features", fake: dict[str, torch.Tensor], real: dict[str, torch.Tensor],
                            scales: Sequence[float], weights: Sequence[float]) -> torch.Tensor:
    """Σ over scales and VGG19 slices of weight · mean |features(fake) − features(real)| (real detached)."""
    total = fake[_key(scales[0])].new_zeros(())
    for s in scales:
        x, y = vgg(fake[_key(s)]), vgg(real[_key(s)])
        for weight, a, b in zip(weights, x, y):
            if weight:
                total = total + weight * (a - b.detach()).abs().mean()
    return total


def l1_pyramid_loss(fake: dict[str, torch.Tensor], real: dict[str, torch.Tensor], scales: Sequence[float],
                    weight: float) -> torch.Tensor:
    """The perceptual pyramid without VGG19: Σ over scales of weight · mean |fake − real| on the pixels."""
    return sum(weight * (fake[_key(s)] - real[_key(s)].detach()).abs().mean() for s in scales)


def _key(scale: float) -> str:
    return "prediction_" + str(scale)


class ImagePyramid(nn.Module):
    """Anti-aliased downsampled copies of an image (official ``ImagePyramide``); scale 1 is the image itself.

    Shape: (B, C, H, W) → {"prediction_<scale>": (B, C, ceil(H·scale), ceil(W·scale))}, keyed by ``str(scale)``
    as the official code and MultiScaleDiscriminator expect ("prediction_1", "prediction_0.5").
    """

    def __init__(self, scales: Sequence[float], num_channels: int = 3):
        super().__init__()
        self.scales = list(scales)
        self.downs = nn.ModuleDict({str(s).replace(".", "-"): AntiAliasDownsample(num_channels, s)
                                    for s in self.scales if s != 1})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {_key(s): x if s == 1 else self.downs[str(s).replace(".", "-")](x) for s in self.scales}


class RandomTPS:
    """A random affine + thin-plate-spline warp of [-1, 1]² per batch element (official ``Transform``).

    ``warp(z) = A·z + b + Σ_i w_i · r_i² · log(r_i + 1e-6)``, where r_i = |z − c_i|₁ (the official code uses the
    L1 distance to the control points c_i, a 5 x 5 grid), A, b = identity + N(0, sigma_affine²), w_i ~ N(0,
    sigma_tps²).
    """

    def __init__(self, batch: int, params: TransformParams, generator: torch.Generator,
                 device: torch.device | str = "cpu"):
        noise = torch.randn(batch, 2, 3, generator=generator) * params.sigma_affine
        self.theta = (noise + torch.eye(2, 3).view(1, 2, 3)).to(device)
        n = params.points_tps
        self.control_points = coordinate_grid(n, n).view(1, 1, n * n, 2).to(device)
        self.control_params = (torch.randn(batch, 1, n * n, generator=generator) * params.sigma_tps).to(device)
        self.batch = batch

    def warp_coordinates(self, coordinates: torch.Tensor) -> torch.Tensor:
        """Shape: (B or 1, N, 2) → (B, N, 2)."""
        theta = self.theta.to(coordinates.dtype).unsqueeze(1)
        out = (theta[..., :2] @ coordinates.unsqueeze(-1)).squeeze(-1) + theta[..., 2]
        r = (coordinates.unsqueeze(2) - self.control_points.to(coordinates.dtype)).abs().sum(-1)
        bend = (r ** 2 * torch.log(r + 1e-6) * self.control_params.to(coordinates.dtype)).sum(dim=2)
        return out + bend.view(self.batch, coordinates.shape[1], 1)

    def transform_frame(self, frame: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
        """The frame resampled at the warped pixel grid, reflection padding. Shape: (B, C, H, W) → same."""
        b, _, h, w = frame.shape
        grid = coordinate_grid(h, w, frame.dtype, frame.device).view(1, h * w, 2)
        grid = self.warp_coordinates(grid).view(b, h, w, 2)
        return F.grid_sample(frame, grid, padding_mode="reflection", align_corners=align_corners)

    def jacobian(self, coordinates: torch.Tensor) -> torch.Tensor:
        """d warp / d z at each point, rows (x, y), differentiable. Shape: (B, K, 2) → (B, K, 2, 2)."""
        warped = self.warp_coordinates(coordinates)
        rows = [torch.autograd.grad(warped[..., i].sum(), coordinates, create_graph=True)[0] for i in range(2)]
        return torch.stack(rows, dim=-2)


# --- VGG19 -----------------------------------------------------------------------------------------------------

class VGG19Features(nn.Module):
    """Frozen VGG19 feature slices ending at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (official ``Vgg19``).

    Shape: (B, 3, H, W) in [0, 1] → 5 feature maps; ImageNet mean/std normalisation inside.
    """

    def __init__(self, features: nn.Sequential):
        super().__init__()
        bounds = (0, 2, 7, 12, 21, 30)
        self.slices = nn.ModuleList(nn.Sequential(*features[a:b]) for a, b in zip(bounds, bounds[1:]))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGG19Features":
        return super().train(False)     # frozen: no dropout/batch norm inside, but stay in eval regardless

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], (x - self.mean) / self.std
        for block in self.slices:
            h = block(h)
            out.append(h)
        return out


def load_vgg19(path: str | os.PathLike | None = None) -> VGG19Features | None:
    """ImageNet VGG19 features from torchvision's cache, or None (with a MissingVGGWarning) when absent."""
    from torchvision.models import vgg19

    if path is None:
        path = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
    path = Path(path)
    if not path.is_file():
        warnings.warn(f"VGG19 weights not found at {path}: training WITHOUT the perceptual loss, using an L1 "
                      f"pyramid on the pixels instead (weaker). Put torchvision's {VGG19_FILE} there to train "
                      f"with the official perceptual loss.", MissingVGGWarning, stacklevel=3)
        return None
    from facesynth.safe_load import load_torch

    net = vgg19(weights=None)
    net.load_state_dict(load_torch(path, map_location="cpu"))
    return VGG19Features(net.features)


# --- data ------------------------------------------------------------------------------------------------------

def still_as_video(image: torch.Tensor, frames: int = 60, params: TransformParams | None = None,
                   seed: int = 0) -> torch.Tensor:
    """A still image as a short training video: ``frames`` random affine + thin-plate-spline warps of it.

    The warps are the equivariance loss's (``RandomTPS``; ``params`` defaults to the official sigma_affine 0.05,
    sigma_tps 0.005), so each pair of frames differs by a small head-like motion. Giving such a video to
    ``FOMMTrainer`` beside real videos teaches the generator one more face from a single photo (the few-shot case:
    fine-tune on the portrait that will be animated). Reflection padding at the borders, as the official warp.

    Shape: image (C, H, W) or (1, C, H, W) float in [0, 1] → (frames, C, H, W) float in [0, 1].
    """
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"still_as_video expects one image (C, H, W) or (1, C, H, W), got {tuple(image.shape)}")
    if frames < 2:
        raise ValueError(f"frames must be at least 2 (pairs are drawn from the video), got {frames}")
    generator = torch.Generator().manual_seed(seed)
    warp = RandomTPS(frames, params or TransformParams(), generator, image.device)
    with torch.no_grad():
        return warp.transform_frame(image.float().expand(frames, -1, -1, -1)).clamp_(0, 1)


def _is_driving_clip(video: Any) -> bool:
    from facesynth.reenact.prepare import DrivingClip

    return isinstance(video, DrivingClip)


class VideoPairs:
    """Random (source, driving) frame pairs of short videos, frames resized to ``size`` x ``size``.

    A video is a file (whole frames), an image file (a still portrait: its face crop, as ``reenact`` crops a
    source, warped into ``STILL_FRAMES`` frames by ``still_as_video``), a float tensor (T, C, H, W) in [0, 1], or
    a ``DrivingClip`` (its fixed face crop, as ``prepare_driving`` makes it: the official training data are such
    face crops).

    Stills are made at once (a portrait without a face fails here, not mid-training) and kept. Videos are
    decoded on first use and kept as uint8 tensors in a least-recently-used cache of ``cache`` videos. Each pair
    comes from one video chosen uniformly: two sorted random frame indices (with replacement), as the official
    training dataset.
    """

    def __init__(self, videos: Sequence[str | os.PathLike | torch.Tensor], size: int, cache: int = 8):
        self.videos = list(videos)
        self.size = size
        self.cache_size = max(1, cache)
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._stills = {i: _uint8(_still_clip(v, size)) for i, v in enumerate(self.videos)
                        if isinstance(v, (str, os.PathLike)) and is_image(v)}

    def __len__(self) -> int:
        return len(self.videos)

    def frames(self, index: int) -> torch.Tensor:
        """Video ``index`` as uint8 (T, 3, size, size)."""
        if index in self._stills:
            return self._stills[index]
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        video = self.videos[index]
        if isinstance(video, torch.Tensor):
            if video.dim() != 4:
                raise ValueError(f"a video tensor must be (T, C, H, W) in [0, 1], got {tuple(video.shape)}")
            clip = resize_frames(video.float(), self.size).clamp(0, 1)
        elif _is_driving_clip(video):     # the face crop that reenact() will animate with (prepare_driving)
            clip = resize_frames(torch.cat(list(video)), self.size).clamp(0, 1)
        else:
            clip = torch.cat(list(iter_video_frames(video, self.size, 32)))
        clip = _uint8(clip)
        self._cache[index] = clip
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return clip

    def batch(self, n: int, generator: torch.Generator, horizontal_flip: bool = True,
              time_flip: bool = True, jitter: "ColorJitter | None" = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` pairs as float (n, 3, size, size) in [0, 1]: (source, driving); ``jitter`` changes both
        frames of a pair alike."""
        sources, drivings = [], []
        for _ in range(n):
            clip = self.frames(int(torch.randint(len(self.videos), (1,), generator=generator)))
            i, j = sorted(torch.randint(clip.shape[0], (2,), generator=generator).tolist())
            pair = clip[[i, j]]
            if time_flip and torch.rand((), generator=generator) < 0.5:
                pair = pair.flip(0)
            if horizontal_flip and torch.rand((), generator=generator) < 0.5:
                pair = pair.flip(-1)
            if jitter is not None:
                pair = jitter(pair, generator)
            sources.append(pair[0])
            drivings.append(pair[1])
        return torch.stack(sources).float().div_(255), torch.stack(drivings).float().div_(255)


def _uint8(frames: torch.Tensor) -> torch.Tensor:
    return frames.mul(255).round_().to(torch.uint8)


def _still_clip(image: str | os.PathLike, size: int) -> torch.Tensor:
    """A portrait file as a training clip: its face crop (``prepare_source``) warped by ``still_as_video``."""
    from facesynth.reenact.prepare import prepare_source

    face, _ = prepare_source(image, size=size)
    return still_as_video(face, frames=STILL_FRAMES)

"""``StyleGANTrainer``: StyleGAN v1 trained on a face set at small resolutions (32–128 px).

The losses are those of the official ``training/loss.py`` for the released models: non-saturating logistic
loss for G, logistic loss plus the R1 penalty on reals (``r1_gamma``; every step, or every ``r1_every`` steps
scaled by it: StyleGAN2's lazy regularisation) for D. The official
training tricks are kept: style-mixing regularisation (``style_mixing_prob``: past a random layer, W comes
from a second latent), the moving average of W (``dlatent_avg``, beta 0.995) that truncation uses, an
exponential moving average of G's weights (``G_ema``, half-life ``ema_kimg`` thousand images: the official
Gs), Adam with betas (0, 0.99), mirror augmentation. Progressive growing is optional (``progressive``): the
official schedule (``training_loop.training_schedule``) lowers the level of detail ``lod`` from
``lod_initial_resolution`` to the full resolution, each resolution trained for ``lod_training_kimg`` thousand
images and faded in over ``lod_transition_kimg``; G, D and the reals follow the official 'linear' structure
and ``process_reals`` crossfade. Without it the networks train at their final resolution from the start.

Workdir layout: ``config.json``; ``checkpoint.pt`` (atomic, resumed by default; G, D, G_ema, optimisers, RNG);
``generator.pt`` (G_ema in ``save_stylegan`` format, rewritten with every checkpoint: ``load_stylegan`` reads
it); ``log.jsonl`` (iteration, loss_g, loss_d, r1, lr, time); ``snapshots/NNNNNNNN.png`` (a grid of G_ema
faces for fixed seeds, like the official ``fakesNNNNNN.png``).

Under torchrun (``setup_distributed``) every rank draws its own batches and the gradients of G and D are
averaged across ranks after each backward pass (one all-reduce per network), as is ``dlatent_avg``; rank 0
alone writes. DistributedDataParallel is not used because the R1 penalty differentiates D's output with
``torch.autograd.grad``, which DDP does not support.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from facesynth.errors import ConfigError, NoFaceError
from facesynth.extract.faceset import FaceSet
from facesynth.fileio import atomic_write_json
from facesynth.generate.checkpoint import save_stylegan
from facesynth.generate.config import StyleGANConfig
from facesynth.generate.model import Discriminator, StyleGAN
from facesynth.generate.sampling import image_grid, seed_latents, to_unit
from facesynth.gpu import seed_everything
from facesynth.media import write_image
from facesynth.training import LRSchedule, Trainer, distributed_device

__all__ = ["StyleGANTrainer", "StyleGANTrainConfig", "d_logistic_r1_loss", "diff_augment", "g_nonsaturating_loss", "lod_at",
           "process_reals", "CONFIG_FILE", "GENERATOR_FILE"]

CONFIG_FILE = "config.json"
GENERATOR_FILE = "generator.pt"


@dataclass
class StyleGANTrainConfig:
    model: StyleGANConfig = field(default_factory=lambda: StyleGANConfig.preset("quick"))
    batch_size: int = 8                 # official: 32 at 32-64 px … 4 at 1024 px (per GPU, 8 GPUs)
    lr: float = 0.002                   # official: 0.001 at low resolutions … 0.003 at 1024 px
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 10.0              # official FFHQ/CelebA-HQ
    r1_every: int = 1                   # lazy R1 (StyleGAN2): the penalty, times this, every this many steps
    ema_kimg: float = 10.0              # half-life of G_ema in thousands of images (official G_smoothing_kimg)
    mirror: bool = True                 # random horizontal flips (official mirror_augment)
    augment: tuple[str, ...] = ()       # DiffAugment of what D sees, reals and fakes: "translation", "color"
    progressive: bool = False           # progressive growing (official schedule) instead of the fixed structure
    lod_initial_resolution: int = 8     # … starting at this resolution
    lod_training_kimg: float = 600.0    # … thousand images per resolution at full strength
    lod_transition_kimg: float = 600.0  # … and while fading the next resolution in
    snapshot_every: int = 100           # iterations between snapshot grids (0: never)
    snapshot_seeds: int = 16
    checkpoint_every: int = 500
    checkpoint_minutes: float = 10.0
    log_every: int = 1
    seed: int = 0

    @classmethod
    def preset(cls, name: str) -> "StyleGANTrainConfig":
        """``"quick"``: 32 px, CPU-sized, a short ``ema_kimg`` so that a few hundred steps show in G_ema;
        ``"quick-faces"``: the same network trained to draw faces in a few CPU minutes (a high learning rate,
        lazy R1, no mixing); ``"64"``, ``"128"``: small GPU runs."""
        if name == "quick":
            return cls(StyleGANConfig.preset("quick"), batch_size=8, ema_kimg=0.1, snapshot_every=50)
        if name == "quick-faces":
            # measured on the sample video's 118 faces, 2 CPU cores: 1600 steps (about 4 min) give 16 of 16
            # samples that dlib finds as faces, 0.58 from the man's identity, 0.76 from the sample portraits'
            model = StyleGANConfig.preset("quick")
            model.mapping_layers, model.style_mixing_prob = 2, 0.0       # one person: little to disentangle
            return cls(model, batch_size=8, lr=0.006, r1_every=16, ema_kimg=0.2, snapshot_every=200)
        if name in ("64", "128"):
            return cls(StyleGANConfig.preset(name), batch_size=32 if name == "64" else 16)
        raise ConfigError(f"unknown training preset {name!r}; choose quick, quick-faces, 64 or 128")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        d["betas"] = list(self.betas)
        d["augment"] = list(self.augment)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StyleGANTrainConfig":
        d = dict(d)
        d["model"] = StyleGANConfig.from_dict(d["model"])
        d["betas"] = tuple(d["betas"])
        d["augment"] = tuple(d.get("augment", ()))
        return cls(**d)


def lod_at(kimg: float, resolution: int, initial_resolution: int = 8, training_kimg: float = 600.0,
           transition_kimg: float = 600.0) -> float:
    """Level of detail after ``kimg`` thousand images (official ``training_schedule``): log2(R / initial) at
    the start, one less per ``training_kimg + transition_kimg``, falling linearly during each transition; 0 at
    the end (full resolution)."""
    phase = training_kimg + transition_kimg
    phase_idx = int(math.floor(kimg / phase)) if phase > 0 else 0
    phase_kimg = kimg - phase_idx * phase
    lod = math.log2(resolution) - math.floor(math.log2(initial_resolution)) - phase_idx
    if transition_kimg > 0:
        lod -= max(phase_kimg - training_kimg, 0.0) / transition_kimg
    return max(lod, 0.0)


def process_reals(x: torch.Tensor, lod: float) -> torch.Tensor:
    """Reals [N, C, R, R] as the network sees them at ``lod`` (official ``process_reals``): at resolution
    R / 2**floor(lod), crossfaded with their 2x-downscaled version by lod's fraction, upscaled back to R."""
    if lod <= 0:
        return x
    k = 2 ** int(math.floor(lod))
    y = F.avg_pool2d(x, k) if k > 1 else x
    frac = lod - math.floor(lod)
    if frac > 0:
        y = y + (F.interpolate(F.avg_pool2d(y, 2), scale_factor=2, mode="nearest") - y) * frac
    return F.interpolate(y, scale_factor=k, mode="nearest") if k > 1 else y


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable augmentation (Zhao et al. 2020, DiffAugment) of images [N, C, H, W] in [-1, 1].

    ``"color"``: random brightness (±0.5), saturation (×0–2) and contrast (×0.5–1.5) per image; ``"translation"``:
    a random shift of up to 1/8 of the side, zero-padded. The same policy runs on reals and fakes, so D cannot
    memorise a small face set and G is not taught the augmentation.
    """
    n = x.shape[0]

    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(x.device)

    if "color" in policy:
        x = x + (rand(n, 1, 1, 1) - 0.5)
        mean = x.mean(1, keepdim=True)
        x = (x - mean) * (rand(n, 1, 1, 1) * 2) + mean
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * (rand(n, 1, 1, 1) + 0.5) + mean
    if "translation" in policy:
        h, w = x.shape[-2:]
        shift = (rand(n, 2) * 2 - 1) * 0.125                 # fraction of the side, as DiffAugment's ratio 1/8
        pixels = (shift * torch.tensor([w, h], device=x.device)).round()
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, :, 2] = pixels * 2 / torch.tensor([w, h], device=x.device)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return x


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """``softplus(-D(G(z)))`` averaged (official ``G_logistic_nonsaturating``)."""
    return F.softplus(-fake_logits).mean()


def d_logistic_r1_loss(D: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                       r1_gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Official ``D_logistic_simplegp``: ``softplus(D(fake)) + softplus(-D(real)) + gamma/2 * |grad D(real)|^2``.
    Returns (total loss, the mean squared gradient norm)."""
    real = real.detach().requires_grad_(r1_gamma > 0)
    real_logits, fake_logits = D(real), D(fake.detach())
    loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
    penalty = torch.zeros((), device=real.device)
    if r1_gamma > 0:
        grad, = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
        penalty = grad.square().flatten(1).sum(1).mean()
        loss = loss + penalty * (r1_gamma * 0.5)
    return loss, penalty


class StyleGANTrainer(Trainer):
    """Train (or resume) a StyleGAN on the faces of a face set.

    Args:
        config: a StyleGANTrainConfig or preset name; a workdir that already holds a model keeps its own.
        faces: face-set folder (made by ``extract_faces``); every active face is one training image, resized
            to the model's resolution.
        workdir: checkpoints, log, snapshots and ``generator.pt``.
    """

    def __init__(self, config: StyleGANTrainConfig | str | None = None, faces: str | os.PathLike | None = None,
                 workdir: str | os.PathLike = "work/stylegan", device: str = "auto", progress: bool | None = None):
        super().__init__(workdir, *distributed_device(device))
        self.progress = progress
        saved = self.saved_config(CONFIG_FILE)
        cfg = StyleGANTrainConfig.preset(config) if isinstance(config, str) else config
        if saved is not None:
            saved_cfg = StyleGANTrainConfig.from_dict(saved["config"])
            if cfg is not None and cfg.model != saved_cfg.model:
                raise ConfigError(f"{self.workdir} holds a StyleGAN with another network configuration; use a "
                                  f"new workdir or the same model settings")
            cfg = cfg or saved_cfg
            faces = faces or saved["faces"]
        if cfg is None:
            raise ConfigError(f"{self.workdir} holds no model yet: give a config (e.g. 'quick')")
        if faces is None:
            raise ConfigError("StyleGANTrainer needs a face-set folder (made by extract_faces)")
        self.config = cfg
        self.faces_path = str(Path(faces).resolve())
        self.checkpoint_every, self.checkpoint_minutes, self.log_every = (cfg.checkpoint_every,
                                                                         cfg.checkpoint_minutes, cfg.log_every)
        seed_everything(cfg.seed)
        self.images = _load_faces(self.faces_path, cfg.model.resolution)
        self.G = StyleGAN(cfg.model).to(self.device)
        self.D = Discriminator(cfg.model).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.optimizers = {"G": torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=cfg.betas, eps=1e-8),
                           "D": torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=cfg.betas, eps=1e-8)}
        self.schedule = LRSchedule(cfg.lr)
        self.generator = torch.Generator().manual_seed(cfg.seed * 1000 + 1 + self.dist.rank)
        self._last_r1 = 0.0            # logged at every step: the penalty as last measured (lazy R1)
        self._snapshot_z = seed_latents(range(cfg.snapshot_seeds), cfg.model.latent_size)
        if self.dist.is_main:
            atomic_write_json(self.workdir / CONFIG_FILE, {"config": cfg.to_dict(), "faces": self.faces_path},
                              indent=2)
        self.resume()

    # --- Trainer hooks -------------------------------------------------------------------------------------
    def model_state(self) -> dict[str, Any]:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                "generator": self.generator.get_state()}

    def load_model_state(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.generator.set_state(state["generator"])
        if self.dist.rank:
            # the checkpoint holds rank 0's data stream: the other ranks branch off it, one seed per rank
            branch = int(torch.randint(2**62, (1,), generator=self.generator))
            self.generator.manual_seed(branch + self.dist.rank)

    def buffered_modules(self) -> list[torch.nn.Module]:
        return [self.G, self.D]          # dlatent_avg moves with every batch of fakes

    def monitored_loss(self, record: dict) -> float:
        return record["loss_g"]

    def save_checkpoint(self, path: Path | None = None) -> Path | None:
        out = super().save_checkpoint(path)
        if path is None and self.dist.is_main:
            save_stylegan(self.G_ema, self.workdir / GENERATOR_FILE)
        return out

    # --- one step ------------------------------------------------------------------------------------------
    def _reals(self) -> torch.Tensor:
        idx = torch.randint(len(self.images), (self.config.batch_size,), generator=self.generator)
        x = self.images[idx].float().div(127.5).sub(1)
        if self.config.mirror:
            flip = torch.rand(len(idx), generator=self.generator) < 0.5
            x[flip] = x[flip].flip(-1)
        return x.to(self.device)

    def _fakes(self, n: int) -> torch.Tensor:
        """G(z) with mixing regularisation, updating dlatent_avg (G_style with is_training=True)."""
        G, cfg = self.G, self.config.model
        z = torch.randn(n, cfg.latent_size, generator=self.generator).to(self.device)
        w = G.mapping(z)
        with torch.no_grad():
            batch_avg = w[:, 0].mean(0)
            if self.dist.enabled:
                batch_avg = self._average(batch_avg.clone())
            G.dlatent_avg.lerp_(batch_avg, 1 - cfg.dlatent_avg_beta)
        cur_layers = G.num_layers - 2 * int(float(G.synthesis.lod))     # layers in use at this level of detail
        if cfg.style_mixing_prob > 0 and cur_layers > 1 and \
                float(torch.rand((), generator=self.generator)) < cfg.style_mixing_prob:
            z2 = torch.randn(n, cfg.latent_size, generator=self.generator).to(self.device)
            cutoff = int(torch.randint(1, cur_layers, (), generator=self.generator))
            w = torch.cat([w[:, :cutoff], G.mapping(z2)[:, cutoff:]], 1)
        return G.synthesis(w, noise_mode="random")

    def train_step(self, iteration: int) -> dict[str, float]:
        cfg = self.config
        self.G.train()
        self.D.train()
        lod = self.current_lod()
        self.G.synthesis.lod.fill_(lod)
        self.D.lod.fill_(lod)
        # discriminator
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        with torch.no_grad():
            fake = self._fakes(cfg.batch_size)
        regularise = cfg.r1_gamma > 0 and iteration % cfg.r1_every == 0
        loss_d, r1 = d_logistic_r1_loss(self.D, self._augment(process_reals(self._reals(), lod)), self._augment(fake),
                                        cfg.r1_gamma * cfg.r1_every if regularise else 0.0)
        if regularise:
            self._last_r1 = float(r1.detach())
        self.optimizers["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        self._average_grads(self.D)
        self.step_optimizers("D", loss=loss_d)          # the NaN guard (training.py)
        # generator
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        loss_g = g_nonsaturating_loss(self.D(self._augment(self._fakes(cfg.batch_size))))
        self.optimizers["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self._average_grads(self.G)
        if self.step_optimizers("G", loss=loss_g):
            self._update_ema()
        # logged as if R1 ran at every step (the penalty as last measured), so a lazy R1 draws no spikes
        loss_d = float(loss_d.detach()) - (0.5 * cfg.r1_gamma * cfg.r1_every * self._last_r1 if regularise else 0.0)
        losses = {"loss_g": float(loss_g.detach()), "loss_d": loss_d + 0.5 * cfg.r1_gamma * self._last_r1,
                  "r1": self._last_r1}
        return {**losses, "lod": lod} if cfg.progressive else losses

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.config.augment, self.generator) if self.config.augment else x

    def current_lod(self) -> float:
        """The level of detail at this iteration (0 without progressive growing)."""
        cfg = self.config
        if not cfg.progressive:
            return 0.0
        kimg = self.iteration * cfg.batch_size * self.dist.world_size / 1000
        return lod_at(kimg, cfg.model.resolution, cfg.lod_initial_resolution, cfg.lod_training_kimg,
                      cfg.lod_transition_kimg)

    def _average(self, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as tdist

        tdist.all_reduce(t)
        return t.div_(self.dist.world_size)

    @torch.no_grad()
    def _average_grads(self, net: torch.nn.Module) -> None:
        """Mean of every rank's gradients, flattened into one all-reduce (parameters without a gradient, such as
        the unused lower-resolution ToRGB layers, are the same on every rank and are skipped)."""
        if not self.dist.enabled:
            return
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        flat = self._average(torch.cat([g.flatten() for g in grads]))
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))

    @torch.no_grad()
    def _update_ema(self) -> None:
        beta = 0.5 ** (self.config.batch_size / max(self.config.ema_kimg * 1000, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p, 1 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)        # dlatent_avg and the constant noise maps follow G (official Gs setup)

    # --- periodic work -------------------------------------------------------------------------------------
    def after_step(self) -> None:
        every = self.config.snapshot_every
        if self.dist.is_main and every and self.iteration % every == 0:
            self.snapshot()

    @torch.no_grad()
    def snapshot(self, path: str | os.PathLike | None = None) -> Path:
        """A grid of G_ema faces for the fixed snapshot seeds (no truncation), written as PNG."""
        path = Path(path) if path else self.workdir / "snapshots" / f"{self.iteration:08d}.png"
        images = self.G_ema(self._snapshot_z.to(self.device), truncation_psi=None, noise_mode="const").cpu()
        return write_image(path, to_unit(image_grid(images)))


def _load_faces(root: str, resolution: int) -> torch.Tensor:
    """Every active face of the set, resized (area filter) to ``resolution``: uint8 [N, 3, R, R]."""
    faces = FaceSet.open(root).active()
    if not faces:
        raise NoFaceError(f"{root}: the face set has no active faces; extract some (facesynth extract) first")
    arr = np.stack([cv2.resize(f.image, (resolution, resolution), interpolation=cv2.INTER_AREA) for f in faces])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

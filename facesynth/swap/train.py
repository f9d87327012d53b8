"""``SwapTrainer``: trains the shared-encoder autoencoder on two face sets.

Every step draws a batch of each person, augments it (random affine on input and target, random warp
on the input only), reconstructs both through their own decoders and minimises the masked loss of both
sides. The learning rate actually used is logged every step; per-face running losses go back into each
face set's ``scores["loss"]`` so pruning can rank faces by how badly they train.

Workdir layout: ``config.json``, ``checkpoint.pt`` (atomic, resumed by default), ``backup.pt`` (best mean
loss so far), ``log.jsonl``, ``previews/NNNNNNNN.png``, ``snapshots/NNNNNNNN.pt``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from facesynth.errors import ConfigError
from facesynth.fileio import atomic_write_json
from facesynth.gpu import amp_dtype, autocast, channels_last, pick_device, seed_everything
from facesynth.media import write_image
from facesynth.swap.augment import apply_grid, color_jitter, random_affine, random_warp
from facesynth.swap.config import SwapConfig
from facesynth.extract.faceset import FaceSet
from facesynth.swap.data import FaceData
from facesynth.swap.losses import masked_reconstruction_loss
from facesynth.swap.model import PatchDiscriminator, SwapModel
from facesynth.training import LRSchedule, Trainer, atomic_torch_save, distributed_device

__all__ = ["SwapTrainer", "load_swap_model", "CONFIG_FILE"]

CONFIG_FILE = "config.json"
STRUCTURAL = ("architecture", "resolution", "ae_dims", "e_dims", "d_dims", "d_mask_dims", "learn_mask")


class _Pair(nn.Module):
    """Both reconstructions in one forward call, so DistributedDataParallel sees every parameter used once."""

    def __init__(self, model: SwapModel):
        super().__init__()
        self.model = model

    def forward(self, xa: torch.Tensor, xb: torch.Tensor):
        return self.model(xa, "a"), self.model(xb, "b")


class SwapTrainer(Trainer):
    """Train (or resume) a face-swap model in ``workdir``.

    Args:
        config: a SwapConfig or a preset name. A workdir that already has a model keeps its network shape;
            other settings (learning rate, batch size, …) come from ``config`` when given.
        faces_a, faces_b: face-set folders of person A and B (remembered in the workdir).
        workdir: where checkpoints, the log, previews and snapshots go.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``…; under torchrun each rank takes its LOCAL_RANK GPU.
    """

    def __init__(self, config: SwapConfig | str | None = None, faces_a: str | os.PathLike | None = None,
                 faces_b: str | os.PathLike | None = None, workdir: str | os.PathLike = "work/model",
                 device: str = "auto", progress: bool | None = None):
        super().__init__(workdir, *distributed_device(device))
        self.progress = progress
        saved = self.saved_config(CONFIG_FILE)
        cfg = SwapConfig.preset(config) if isinstance(config, str) else config
        if cfg is None and saved is None:
            raise ConfigError(f"{self.workdir} holds no model yet: give a config (e.g. SwapConfig.preset('quick'))")
        if saved is not None:
            saved_cfg = SwapConfig.from_dict(saved["config"])
            if cfg is not None:
                changed = [k for k in STRUCTURAL if getattr(cfg, k) != getattr(saved_cfg, k)]
                if changed:
                    raise ConfigError(f"{self.workdir} holds a model with different {', '.join(changed)}; use a new "
                                      f"workdir or the same network settings")
            cfg = cfg or saved_cfg
            faces_a = faces_a or saved["faces_a"]
            faces_b = faces_b or saved["faces_b"]
        if faces_a is None or faces_b is None:
            raise ConfigError("SwapTrainer needs faces_a and faces_b (face-set folders made by extract_faces)")
        self.config = cfg
        self.faces_paths = {"a": str(Path(faces_a).resolve()), "b": str(Path(faces_b).resolve())}
        self.checkpoint_every = cfg.checkpoint_every
        self.checkpoint_minutes = cfg.checkpoint_minutes
        self.log_every = cfg.log_every
        seed_everything(cfg.seed)
        self.data = {k: FaceData(p, cfg.resolution, cfg.mask_type, cfg.cache_faces) for k, p in self.faces_paths.items()}
        self.model = SwapModel(cfg).to(self.device)
        self.use_cuda_tricks = self.device.type == "cuda"
        if self.use_cuda_tricks and cfg.channels_last:
            self.model = channels_last(self.model, self.device)
        self.pair: nn.Module = _Pair(self.model)
        if self.dist.enabled:
            # a predicted mask without a mask loss gets no gradient: DDP must then be told to expect unused parameters
            self.pair = nn.parallel.DistributedDataParallel(
                self.pair, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(cfg.learn_mask and not cfg.mask_loss_weight))
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizers = {"model": opt_cls(self.model.parameters(), lr=cfg.lr, betas=cfg.betas,
                                            weight_decay=cfg.weight_decay)}
        self.disc: PatchDiscriminator | None = None
        self._disc_step_net: nn.Module | None = None     # the discriminator as its own update runs it
        if cfg.gan_weight > 0:
            self.disc = PatchDiscriminator(cfg.gan_dims).to(self.device)
            self._disc_step_net = self.disc
            if self.dist.enabled:      # its gradients are averaged across ranks too, or the ranks' critics drift apart
                self._disc_step_net = nn.parallel.DistributedDataParallel(
                    self.disc, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self.optimizers["disc"] = opt_cls(self.disc.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.schedule = LRSchedule(cfg.lr, cfg.lr_schedule, cfg.warmup, cfg.lr_total, cfg.min_lr, cfg.lr_step,
                                   cfg.lr_gamma)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_cuda_tricks and cfg.amp
                                           and amp_dtype(self.device) == torch.float16)
        self.generator = torch.Generator().manual_seed(cfg.seed * 1000 + self.dist.rank)
        self.face_loss: dict[str, dict[int, float]] = {"a": {}, "b": {}}
        self._events: dict[str, Any] = {}
        self._preview_ids = {k: d.ids[:: max(1, len(d) // 4)][:4] for k, d in self.data.items()}
        if self.dist.is_main:
            atomic_write_json(self.workdir / CONFIG_FILE, {"config": cfg.to_dict(), "faces_a": self.faces_paths["a"],
                                                           "faces_b": self.faces_paths["b"]}, indent=2)
        self.resume()

    # --- Trainer hooks -------------------------------------------------------------------------------------
    def model_state(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict(), "generator": self.generator.get_state(),
                 "face_loss": {k: {str(i): v for i, v in d.items()} for k, d in self.face_loss.items()},
                 "config": self.config.to_dict()}
        if self.disc is not None:
            state["disc"] = self.disc.state_dict()
        if self.scaler.is_enabled():      # fp16: the loss scale it has found goes on after a resume
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_model_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.disc is not None and "disc" in state:
            self.disc.load_state_dict(state["disc"])
        if self.scaler.is_enabled() and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        if self.dist.rank:
            # the checkpoint holds rank 0's data stream only: the other ranks branch off it (one seed per rank),
            # so that after a resume they still draw batches of their own rather than rank 0's
            branch = int(torch.randint(2**62, (1,), generator=self.generator))
            self.generator.manual_seed(branch + self.dist.rank)
        self.face_loss = {k: {int(i): float(v) for i, v in d.items()} for k, d in state["face_loss"].items()}

    def buffered_modules(self) -> list[nn.Module]:
        return [m for m in (self.model, self.disc) if m is not None]

    def monitored_loss(self, record: dict) -> float:
        return (record["loss_a"] + record["loss_b"]) / 2

    def pop_events(self) -> dict:
        events, self._events = self._events, {}
        return events

    # --- one step ------------------------------------------------------------------------------------------
    def _sample(self, who: str) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg, g = self.config, self.generator
        ids, img, mask, prio = self.data[who].batch(cfg.batch_size, g)
        img, mask, prio = img.to(self.device), mask.to(self.device), prio.to(self.device)
        n, r = img.shape[0], cfg.resolution
        grid = random_affine(n, r, cfg.rotation, cfg.scale, cfg.shift, cfg.flip, g, self.device)
        stacked = apply_grid(torch.cat([img, mask, prio], 1), grid)
        target, mask, prio = stacked[:, :3], stacked[:, 3:4], stacked[:, 4:5]
        if cfg.random_warp and cfg.warp_strength > 0:
            inp = apply_grid(img, random_warp(grid, cfg.warp_strength, g))
        else:
            inp = target
        jitter_state = g.get_state()
        inp = color_jitter(inp, cfg.color_jitter, g)
        g.set_state(jitter_state)            # the same jitter on the target
        target = color_jitter(target, cfg.color_jitter, g)
        if self.use_cuda_tricks and cfg.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        return ids, inp, target, mask, prio

    def train_step(self, iteration: int) -> dict[str, float]:
        cfg = self.config
        ids_a, in_a, tgt_a, m_a, p_a = self._sample("a")
        ids_b, in_b, tgt_b, m_b, p_b = self._sample("b")
        self.model.train()
        with autocast(self.device, enabled=cfg.amp):
            (rgb_a, mask_a), (rgb_b, mask_b) = self.pair(in_a, in_b)
        per = {}
        total = 0.0
        for who, rgb, pmask, tgt, m, p in (("a", rgb_a, mask_a, tgt_a, m_a, p_a), ("b", rgb_b, mask_b, tgt_b, m_b, p_b)):
            loss = masked_reconstruction_loss(
                rgb.float(), tgt, m if cfg.mask_type else None, cfg.l1_weight, cfg.mse_weight, cfg.dssim_weight,
                p if cfg.eyes_mouth_priority else None, cfg.eyes_mouth_weight)
            if pmask is not None and cfg.mask_loss_weight:
                loss = loss + cfg.mask_loss_weight * ((pmask.float() - m) ** 2).flatten(1).mean(1)
            per[who] = loss
            total = total + loss.mean()
        losses = {"loss_a": float(per["a"].detach().mean()), "loss_b": float(per["b"].detach().mean())}
        if self.disc is not None:
            fake = torch.cat([rgb_a, rgb_b]).float()
            g_logits = self.disc(fake * torch.cat([m_a, m_b]))
            g_loss = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))
            total = total + cfg.gan_weight * g_loss
            losses["loss_gan"] = float(g_loss.detach())
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if cfg.clip_grad:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.step_optimizers("model", loss=total, scaler=self.scaler)     # the NaN guard (training.py)
        if self.disc is not None:
            losses["loss_disc"] = self._disc_step(torch.cat([tgt_a * m_a, tgt_b * m_b]),
                                                  (fake * torch.cat([m_a, m_b])).detach())
        if all(np.isfinite(v) for v in losses.values()):
            self._update_face_loss("a", ids_a, per["a"])
            self._update_face_loss("b", ids_b, per["b"])
        return losses

    def _disc_step(self, real: torch.Tensor, fake: torch.Tensor) -> float:
        opt = self.optimizers["disc"]
        logits = self._disc_step_net(torch.cat([real, fake]))    # one forward, so DDP syncs its gradients once
        real_logits, fake_logits = logits[: real.shape[0]], logits[real.shape[0]:]
        loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self.step_optimizers("disc", loss=loss)
        return float(loss.detach())

    def _update_face_loss(self, who: str, ids: list[int], loss: torch.Tensor) -> None:
        k = self.config.face_loss_momentum
        table = self.face_loss[who]
        for fid, value in zip(ids, loss.detach().float().cpu().tolist()):
            table[fid] = value if fid not in table else (1 - k) * table[fid] + k * value

    # --- periodic work -------------------------------------------------------------------------------------
    def after_step(self) -> None:
        if not self.dist.is_main:
            return
        cfg = self.config
        if cfg.preview_every and self.iteration % cfg.preview_every == 0:
            write_image(self.workdir / "previews" / f"{self.iteration:08d}.png", self.preview())
        if cfg.snapshot_every and self.iteration % cfg.snapshot_every == 0:
            atomic_torch_save({"model": self.model.state_dict(), "config": cfg.to_dict(), "iteration": self.iteration},
                              self.workdir / "snapshots" / f"{self.iteration:08d}.pt")

    def after_checkpoint_window(self, mean_loss: float) -> None:
        super().after_checkpoint_window(mean_loss)
        if self.dist.is_main:
            self.save_face_losses()

    def save_face_losses(self) -> None:
        """Write the running per-face losses into each face set's ``scores["loss"]`` (atomically)."""
        for who, data in self.data.items():
            on_disk = FaceSet.open(data.root)     # fresh: pruning may have changed it since training began
            ids = set(on_disk.ids)
            known = {fid: {"loss": v} for fid, v in self.face_loss[who].items() if fid in ids}
            if known:
                on_disk.update_scores(known)

    def reload_faces(self) -> dict[str, int]:
        """Re-read both face sets (after pruning) and mark the change in the next log record."""
        before = {k: len(d) for k, d in self.data.items()}
        for d in self.data.values():
            d.reload()
        after = {k: len(d) for k, d in self.data.items()}
        self._preview_ids = {k: [i for i in ids if i in set(self.data[k].ids)] or self.data[k].ids[:4]
                             for k, ids in self._preview_ids.items()}
        if after != before:
            self._events = {"event": "data_changed", "faces_a": after["a"], "faces_b": after["b"],
                            "faces_a_before": before["a"], "faces_b_before": before["b"]}
        return after

    @torch.inference_mode()
    def preview(self) -> np.ndarray:
        """A uint8 grid, one row per sample face: A, A→A, A→B, B, B→B, B→A (masked predictions composited)."""
        self.model.eval()
        rows = []
        for who, other in (("a", "b"), ("b", "a")):
            data = self.data[who]
            pos = {fid: i for i, fid in enumerate(data.ids)}
            imgs = [data.load(pos[fid])[0] for fid in self._preview_ids[who] if fid in pos]
            x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div(255).to(self.device)
            same, _ = self.model(x, who)
            swapped, _ = self.model(x, other)
            rows.append(torch.cat([x, same.float(), swapped.float()], dim=3))
        self.model.train()
        n = max(r.shape[0] for r in rows)       # a person with fewer faces (one photo) repeats them
        rows = [r.repeat(-(-n // r.shape[0]), 1, 1, 1)[:n] for r in rows]
        grid = torch.cat(rows, dim=3)                                 # [n, 3, R, 6R]
        grid = torch.cat(list(grid), dim=1)                           # [3, nR, 6R]
        return (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()

    def train(self, iterations: int, callbacks=(), progress: bool | None = None) -> "SwapTrainer":
        """Train until the iteration count reaches ``iterations`` (a target; a resumed run continues)."""
        return super().train(iterations, callbacks, self.progress if progress is None else progress)


def load_swap_model(workdir: str | os.PathLike, device: str = "auto", which: str = "checkpoint") -> SwapModel:
    """The trained network of a workdir (``checkpoint``, ``backup`` or a snapshot path), eval mode."""
    from facesynth.errors import CheckpointError
    from facesynth.safe_load import load_torch

    workdir = Path(workdir)
    path = Path(which) if which not in ("checkpoint", "backup") else workdir / f"{which}.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: no trained model there; train one with `facesynth train-swap` first")
    dev = pick_device(device)
    state = load_torch(path, map_location=dev)
    model_state = state["model"]["model"] if "optimizers" in state else state["model"]
    cfg_dict = state["model"]["config"] if "optimizers" in state else state["config"]
    model = SwapModel(SwapConfig.from_dict(cfg_dict)).to(dev)
    try:
        model.load_state_dict(model_state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the saved configuration ({e})") from None
    from facesynth.provenance.record import remember_weights

    model.trained_iterations = int(state["iteration"]) if "iteration" in state else None
    return remember_weights(model.eval(), path)   # converted results name the checkpoint they came from

"""What every trainer shares: atomic checkpoints and resume, ``log.jsonl``, callbacks, the NaN guard,
learning-rate schedules, and torch.distributed set-up.

A technique's trainer subclasses ``Trainer`` and implements ``train_step`` (one optimisation step, returning
its losses) plus ``model_state``/``load_model_state``. ``train(iterations=N)`` then trains *until* the
iteration count reaches N, like a target: a reopened workdir resumes where its checkpoint stands, and calling
``train`` again with the same N does nothing.

Crash safety: the checkpoint is written to a temporary file, fsynced and renamed, so a ``kill -9`` at any
moment leaves either the previous or the new checkpoint. ``log.jsonl`` is appended line by line; on resume
the lines past the checkpoint's iteration (trained but never saved) are dropped, so log and weights agree.

NaN guard, in two stages. Before an optimiser steps, ``step_optimizers`` checks the loss and the gradients (on
every rank together): when any is not finite the step is skipped, the gradients are dropped, the buffers of
``buffered_modules`` (BatchNorm statistics, moving averages) are put back as they were before the iteration,
a ``nan_skip`` event is logged and the iteration is redone with new batches; so the weights stay finite from
iteration 1, checkpoint or not. A loss that still comes back non-finite from ``train_step`` restores the last
checkpoint with a lowered learning rate (``nan_restore``).
"""
from __future__ import annotations

import abc
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from facesynth.errors import CheckpointError, ConfigError
from facesynth.fileio import atomic_write
from facesynth.safe_load import load_torch

__all__ = ["Callback", "Trainer", "LRSchedule", "distributed_device", "atomic_torch_save", "read_log", "DistributedContext",
           "setup_distributed", "rng_state", "set_rng_state", "moving_average"]

CHECKPOINT = "checkpoint.pt"
BACKUP = "backup.pt"
LOG = "log.jsonl"


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` that leaves the previous file intact until the new one is complete on disk."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def read_log(workdir_or_file: str | os.PathLike) -> list[dict]:
    """All records of a ``log.jsonl`` (a torn last line from a crash is skipped)."""
    p = Path(workdir_or_file)
    p = p / LOG if p.is_dir() else p
    if not p.is_file():
        return []
    records = []
    for line in p.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def moving_average(values, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (the first ones average what exists so far). Shape kept.

    Used to draw logged losses (live plots, paper figures).
    """
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(values) == 0:
        return values
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(0, idx - window)
    return (c[idx] - c[start]) / (idx - start)


def rng_state() -> dict:
    """Python, NumPy (legacy global) and torch RNG states, in a form ``torch.load(weights_only=True)`` reads."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    np_state = np.random.get_state()
    state["numpy"] = (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:]))
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class Callback:
    """Hooks a notebook or script can pass to ``train``; every method is optional."""

    def on_train_begin(self, trainer: "Trainer") -> None: ...

    def on_step(self, trainer: "Trainer", record: dict) -> None:
        """After every step; ``record`` has the iteration, losses and learning rate."""

    def on_log(self, trainer: "Trainer", record: dict) -> None:
        """After a record was appended to log.jsonl."""

    def on_checkpoint(self, trainer: "Trainer", path: Path) -> None: ...

    def on_train_end(self, trainer: "Trainer") -> None: ...


@dataclass
class LRSchedule:
    """Learning rate per iteration: linear warm-up, then ``constant``, ``cosine`` (to ``min_lr`` at ``total``),
    ``step`` (× ``gamma`` every ``step_size``) or ``multistep`` (× ``gamma`` at each of ``milestones``, as
    torch's MultiStepLR). ``scale`` multiplies everything (the NaN guard lowers it)."""
    base_lr: float
    schedule: str = "constant"
    warmup: int = 0
    total: int = 400_000
    min_lr: float = 0.0
    step_size: int = 100_000
    gamma: float = 0.5
    scale: float = 1.0
    milestones: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine", "step", "multistep"):
            raise ConfigError(f"lr schedule must be constant, cosine, step or multistep, got {self.schedule!r}")

    def __call__(self, iteration: int) -> float:
        lr = self.base_lr
        if self.schedule == "cosine":
            t = min(1.0, max(0, iteration - self.warmup) / max(1, self.total - self.warmup))
            lr = self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
        elif self.schedule == "step":
            lr = self.base_lr * self.gamma ** (max(0, iteration - self.warmup) // self.step_size)
        elif self.schedule == "multistep":
            lr = self.base_lr * self.gamma ** sum(iteration >= m for m in self.milestones)
        if self.warmup and iteration < self.warmup:
            lr *= (iteration + 1) / self.warmup
        return lr * self.scale


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> DistributedContext:
    """Join the process group torchrun describes (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``); gloo on CPU, nccl on GPU.

    Outside torchrun this returns a single-process context and touches nothing.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext()
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedContext(rank=rank, world_size=world, local_rank=local, backend=backend)


def distributed_device(device: str | torch.device = "auto") -> tuple[torch.device, DistributedContext]:
    """``pick_device(device)`` and ``setup_distributed``; under torchrun on CUDA each rank takes its local GPU."""
    from facesynth.gpu import pick_device

    dev = pick_device(device)
    dist = setup_distributed(dev)
    if dist.enabled and dev.type == "cuda":
        dev = torch.device("cuda", dist.local_rank)
    return dev, dist


class Trainer(abc.ABC):
    """The loop, checkpoints, log and guards every technique's trainer shares.

    Subclasses set ``self.optimizers`` (name → optimiser), ``self.schedule`` (LRSchedule) and implement
    ``train_step(iteration) -> dict[str, float]``, ``model_state() -> dict`` and ``load_model_state(state)``.
    """

    checkpoint_every: int = 500          # iterations between checkpoints
    checkpoint_minutes: float = 10.0     # …and at least this often in wall-clock time
    log_every: int = 1                   # iterations between log.jsonl records
    nan_lr_factor: float = 0.5           # learning-rate scale applied after a non-finite loss
    max_nan_restores: int = 5
    max_nan_skips: int = 10              # skipped steps in a row (non-finite loss or gradients) before giving up

    def __init__(self, workdir: str | os.PathLike, device: torch.device, dist: DistributedContext | None = None):
        self.workdir = Path(workdir)
        self.device = device
        self.dist = dist or DistributedContext()
        self.iteration = 0
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedule = LRSchedule(base_lr=1e-4)
        self.best_loss = math.inf
        self.nan_restores = 0
        self.extra_state: dict[str, Any] = {}
        self._last_checkpoint_time = time.time()
        self._skipped: list[str] | None = None     # what was not finite when this iteration's step was skipped
        self._nan_skips_in_a_row = 0
        if self.dist.is_main:
            self.workdir.mkdir(parents=True, exist_ok=True)

    def saved_config(self, name: str = "config.json") -> dict | None:
        """The JSON a trainer wrote into its workdir when it started (None before the first run)."""
        p = self.workdir / name
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}: damaged ({e}); delete it to start a new model") from None

    # --- to implement ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def train_step(self, iteration: int) -> dict[str, float]:
        """One optimisation step at ``iteration`` (0-based); returns its losses as floats."""

    @abc.abstractmethod
    def model_state(self) -> dict[str, Any]:
        """State dicts of the networks (and anything else the model needs to resume)."""

    @abc.abstractmethod
    def load_model_state(self, state: dict[str, Any]) -> None:
        """Inverse of ``model_state``; strict."""

    def buffered_modules(self) -> Sequence[torch.nn.Module]:
        """Modules whose buffers (BatchNorm running statistics, moving averages) a skipped step puts back."""
        return ()

    def monitored_loss(self, record: dict) -> float:
        """The number whose running mean decides when a backup is kept (lower is better)."""
        losses = [v for k, v in record.items() if k.startswith("loss")]
        return float(sum(losses) / len(losses)) if losses else math.inf

    # --- state ---------------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.workdir / CHECKPOINT

    @property
    def log_path(self) -> Path:
        return self.workdir / LOG

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration, "model": self.model_state(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "lr_scale": self.schedule.scale, "best_loss": self.best_loss, "nan_restores": self.nan_restores,
            "rng": rng_state(), "extra": self.extra_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.load_model_state(state["model"])
            for k, o in self.optimizers.items():
                o.load_state_dict(state["optimizers"][k])
            self.iteration = int(state["iteration"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{self.checkpoint_path}: does not match this model/configuration ({e}); "
                                  f"use a new workdir or the configuration it was trained with") from None
        self.schedule.scale = float(state.get("lr_scale", 1.0))
        self.best_loss = float(state.get("best_loss", math.inf))
        self.nan_restores = int(state.get("nan_restores", 0))
        self.extra_state = dict(state.get("extra", {}))
        if "rng" in state:
            set_rng_state(state["rng"])

    def save_checkpoint(self, path: Path | None = None) -> Path | None:
        """Atomically write the full training state (rank 0 only)."""
        if not self.dist.is_main:
            return None
        path = path or self.checkpoint_path
        atomic_torch_save(self.state_dict(), path)
        self._last_checkpoint_time = time.time()
        return path

    def resume(self) -> bool:
        """Load ``checkpoint.pt`` if the workdir has one and cut the log back to its iteration.

        Temporary files left by a writer that was killed mid-write are removed first: the file they were
        meant to replace is still the complete previous version.
        """
        if self.dist.is_main and self.workdir.is_dir():
            for stale in [*self.workdir.glob(".*.tmp"), *self.workdir.glob("*/.*.tmp")]:
                stale.unlink(missing_ok=True)
        if not self.checkpoint_path.is_file():
            return False
        self.load_state_dict(load_torch(self.checkpoint_path, map_location=self.device))
        if self.dist.is_main:
            self._truncate_log(self.iteration)
        return True

    def _truncate_log(self, iteration: int) -> None:
        records = read_log(self.log_path)
        kept = [r for r in records if r.get("iteration", 0) <= iteration]
        if len(kept) != len(records) or (self.log_path.is_file() and not self.log_path.read_text().endswith("\n")
                                         and self.log_path.stat().st_size):
            data = "".join(json.dumps(r) + "\n" for r in kept).encode()
            atomic_write(self.log_path, lambda f: f.write(data))

    def log(self, record: dict) -> None:
        """Append one JSON line to log.jsonl (rank 0 only)."""
        if not self.dist.is_main:
            return
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def set_lr(self, iteration: int) -> float:
        lr = self.schedule(iteration)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_mult", 1.0)
        return lr

    # --- the loop ------------------------------------------------------------------------------------------
    def train(self, iterations: int, callbacks: Sequence[Callback] = (), progress: bool | None = None) -> "Trainer":
        """Train until ``self.iteration == iterations`` (a target, not a count), checkpointing on the way."""
        from tqdm.auto import tqdm

        if iterations <= self.iteration:
            return self
        for cb in callbacks:
            cb.on_train_begin(self)
        window: list[float] = []
        disable = (None if progress is None else not progress) if self.dist.is_main else True
        bar = tqdm(total=iterations, initial=self.iteration, desc=type(self).__name__, unit="it", disable=disable)
        try:
            while self.iteration < iterations:
                lr = self.set_lr(self.iteration)
                buffers = self._snapshot_buffers()
                self._skipped = None
                losses = self.train_step(self.iteration)
                if self._skipped is not None:
                    self._skip_non_finite_step(losses, buffers)
                    continue
                self._nan_skips_in_a_row = 0
                if not self._all_finite(losses):
                    self._recover_from_nan(losses)
                    continue
                self.iteration += 1
                record = {"iteration": self.iteration, **{k: float(v) for k, v in losses.items()}, "lr": lr,
                          "time": round(time.time(), 3), **self.pop_events()}
                for cb in callbacks:
                    cb.on_step(self, record)
                if self.iteration % self.log_every == 0 or "event" in record:
                    self.log(record)
                    for cb in callbacks:
                        cb.on_log(self, record)
                window.append(self.monitored_loss(record))
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()}, refresh=False)
                if self._checkpoint_due() or self.iteration == iterations:
                    mean = float(np.mean(window)) if window else math.inf
                    window.clear()
                    self.after_checkpoint_window(mean)
                    path = self.save_checkpoint()
                    if path is not None:
                        for cb in callbacks:
                            cb.on_checkpoint(self, path)
                self.after_step()
        finally:
            bar.close()
        for cb in callbacks:
            cb.on_train_end(self)
        return self

    # --- the NaN guard ------------------------------------------------------------------------------------
    def step_optimizers(self, *names: str, loss: torch.Tensor | None = None,
                        scaler: "torch.amp.GradScaler | None" = None) -> bool:
        """Step the optimisers ``names`` (keys of ``self.optimizers``) after the backward pass, unless the loss or
        any of their gradients is not finite on some rank; returns False when the step was skipped.

        A skipped step drops the gradients and marks the iteration, which ``train`` then redoes (see the module
        docstring); later calls in the same iteration skip too, so nothing steps on what a NaN touched. An enabled
        fp16 ``scaler`` keeps its own gradient check (it skips steps on inf gradients, its overflow signal, and
        lowers its scale), so it always steps and updates; here only a non-finite loss marks the iteration.
        """
        optimizers = [self.optimizers[n] for n in names]
        if scaler is not None and scaler.is_enabled():
            loss_ok = loss is None or self._agree(bool(torch.isfinite(loss.detach()).all()))
            for opt in optimizers:
                scaler.step(opt)
            scaler.update()
            if not loss_ok:
                self._skipped = [*(self._skipped or []), "loss"]
            return loss_ok and self._skipped is None
        bad: list[str] = []
        if self._skipped is None:
            if loss is not None and not bool(torch.isfinite(loss.detach()).all()):
                bad.append("loss")
            bad += [f"{n} gradients" for n, opt in zip(names, optimizers) if not _finite_grads(opt)]
            if not self._agree(not bad) and not bad:
                bad.append("another rank")
        if self._skipped is not None or bad:
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            self._skipped = [*(self._skipped or []), *bad]
            return False
        for opt in optimizers:
            opt.step()
        return True

    def _agree(self, ok: bool) -> bool:
        """``ok`` on every rank (one all-reduce under torch.distributed), so that all ranks take the same branch."""
        if not self.dist.enabled:
            return ok
        import torch.distributed as dist

        flag = torch.tensor([0.0 if ok else 1.0], device=self.device if self.dist.backend == "nccl" else "cpu")
        dist.all_reduce(flag)
        return bool(flag.item() == 0)

    def _snapshot_buffers(self) -> list[torch.Tensor]:
        return [b.detach().clone() for m in self.buffered_modules() for b in m.buffers()]

    def _skip_non_finite_step(self, losses: dict, buffers: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for b, saved in zip([b for m in self.buffered_modules() for b in m.buffers()], buffers):
                b.copy_(saved)
        self._nan_skips_in_a_row += 1
        bad = sorted({*self._skipped, *(k for k, v in losses.items() if not math.isfinite(v))})
        self._skipped = None
        if self._nan_skips_in_a_row > self.max_nan_skips:
            raise ConfigError(f"{self._nan_skips_in_a_row} steps in a row had non-finite losses or gradients "
                              f"({', '.join(bad)}); lower the learning rate or check the data")
        self.log({"iteration": self.iteration, "event": "nan_skip", "bad": bad, "time": round(time.time(), 3)})

    def _all_finite(self, losses: dict) -> bool:
        """Whether every loss is finite, on every rank: under DDP one rank's NaN reaches all ranks through the
        averaged gradients, so all of them must restore together (or their collectives fall out of step)."""
        return self._agree(all(math.isfinite(v) for v in losses.values()))

    def _checkpoint_due(self) -> bool:
        return (self.iteration % self.checkpoint_every == 0
                or time.time() - self._last_checkpoint_time > 60 * self.checkpoint_minutes)

    def after_checkpoint_window(self, mean_loss: float) -> None:
        """Keep ``backup.pt`` whenever the mean loss since the last checkpoint improved."""
        if mean_loss < self.best_loss:
            self.best_loss = mean_loss
            self.save_checkpoint(self.workdir / BACKUP)

    def after_step(self) -> None:
        """Hook for periodic work (previews, snapshots)."""

    def pop_events(self) -> dict:
        """Events to mark in the next log record (e.g. a data change); subclasses queue them."""
        return {}

    def _recover_from_nan(self, losses: dict) -> None:
        self.nan_restores += 1
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if self.nan_restores > self.max_nan_restores:
            raise ConfigError(f"training diverged {self.nan_restores} times (non-finite {bad}); lower the "
                              f"learning rate or check the data")
        scale, restores = self.schedule.scale * self.nan_lr_factor, self.nan_restores
        if self.checkpoint_path.is_file():
            self.load_state_dict(load_torch(self.checkpoint_path, map_location=self.device))
            if self.dist.is_main:
                self._truncate_log(self.iteration)       # steps after the checkpoint are being redone
        self.schedule.scale, self.nan_restores = scale, restores
        self.log({"iteration": self.iteration, "event": "nan_restore", "bad": list(bad), "lr_scale": scale,
                  "time": round(time.time(), 3)})


def _finite_grads(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every gradient the optimiser would apply is finite (the largest magnitude: no overflow, NaN kept)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return True
    if hasattr(torch.nn.utils, "get_total_norm"):         # torch >= 2.6; one device sync either way
        return bool(torch.isfinite(torch.nn.utils.get_total_norm(grads, norm_type=math.inf)))
    return bool(torch.isfinite(torch.stack([g.detach().abs().amax().float() for g in grads if g.numel()]
                                           or [torch.zeros(())])).all())

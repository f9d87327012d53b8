"""Device choice, mixed precision, memory layout, seeding and environment detection.

All torch work happens inside functions: importing this module touches no device.
"""
from __future__ import annotations

import contextlib
import os
import random
import sys
from typing import Iterator

import numpy as np
import torch

from facesynth.errors import ConfigError

__all__ = ["pick_device", "autocast", "amp_dtype", "inference_dtype", "HALF_PRECISIONS", "precision_name",
           "fp16_fallback", "cuda_has_native_bf16", "channels_last",
           "seed_everything", "memory_report", "reset_peak_memory", "in_colab", "cpu_has_native_bf16",
           "cpu_autocast_state", "cudnn_autotune", "COMPILE_MODES", "compile_mode", "compiled", "call_compiled",
           "compiling", "pad_batch"]


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """Resolve ``"auto"`` to the best available device: CUDA, then Apple MPS, then CPU.

    An explicit ``"cuda"``/``"cuda:1"``/``"mps"`` that is not available raises ConfigError rather than
    failing later inside a kernel.
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available; use device='auto' or 'cpu'")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {device!r} was asked for but MPS is not available; use device='auto' or 'cpu'")
    return dev


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype worth using on ``device``: bf16 where the GPU supports it, else fp16; None on CPU."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.bfloat16 if cuda_has_native_bf16(dev) else torch.float16
    if dev.type == "mps":
        return torch.float16
    return None


def inference_dtype(device: torch.device | str) -> torch.dtype:
    """The autocast dtype for inference (no gradients): fp16 on a GPU, bf16 on a CPU.

    Training wants bf16 where the GPU has it (``amp_dtype``: fp32's range, no loss scaling). Inference has no
    gradients to underflow and activations of ordinary size, and there fp16, with its 10-bit mantissa, rounds 8
    times finer than bf16's 7 bits at the same tensor-core speed: FOMM's animation moves 8 times less from fp32
    (README, "Reenactment"). On a CPU fp16 has no fast kernels: bf16.
    """
    return torch.bfloat16 if torch.device(device).type == "cpu" else torch.float16


# the half precisions by the names the CLI, the benches and Wav2Lip's ``precision`` use
HALF_PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}


def precision_name(dtype: torch.dtype | None) -> str:
    """``"fp32"`` for None (no autocast), ``"bf16"`` or ``"fp16"`` for those autocast dtypes."""
    return "fp32" if dtype is None else next(name for name, d in HALF_PRECISIONS.items() if d == dtype)


def fp16_fallback(device: torch.device | str) -> torch.dtype | None:
    """Where fp16 overflows: bf16 (fp32's range) on a GPU that computes it, else None (fp32)."""
    dev = torch.device(device)
    return torch.bfloat16 if dev.type == "cuda" and cuda_has_native_bf16(dev) else None


def cuda_has_native_bf16(device: torch.device | str = "cuda") -> bool:
    """True on GPUs that compute bf16 in hardware (compute capability 8.0 and up: A100, H100, RTX 30xx...).

    ``torch.cuda.is_bf16_supported()`` also says True where bf16 is only emulated (a Colab T4, a V100), which runs
    slower than fp32; there fp16 with a GradScaler is the mixed precision worth having.
    """
    dev = torch.device(device)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index)[0] >= 8


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX512-BF16 or AMX), so CPU autocast to bf16 is faster."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def cpu_autocast_state() -> tuple[bool, torch.dtype]:
    """(enabled, dtype) of CPU autocast in this thread (the per-device API of torch >= 2.4, else the older one)."""
    try:
        return torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    except (TypeError, AttributeError):                 # torch < 2.4
        return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()


@contextlib.contextmanager
def autocast(device: torch.device | str, enabled: bool = True, dtype: torch.dtype | None = None) -> Iterator[None]:
    """Mixed precision on GPU (bf16 or fp16), a no-op on CPU so numbers there stay exact fp32."""
    dev = torch.device(device)
    dtype = dtype or amp_dtype(dev)
    if not enabled or dtype is None:
        yield
        return
    with torch.autocast(device_type=dev.type, dtype=dtype):
        yield


def channels_last(module_or_tensor, device: torch.device | str | None = None):
    """Move a module or a 4-D tensor to channels_last memory format on CUDA (faster convolutions); unchanged elsewhere."""
    dev = torch.device(device) if device is not None else _device_of(module_or_tensor)
    if dev.type != "cuda":
        return module_or_tensor
    if isinstance(module_or_tensor, torch.Tensor):
        return module_or_tensor.contiguous(memory_format=torch.channels_last) if module_or_tensor.dim() == 4 \
            else module_or_tensor
    return module_or_tensor.to(memory_format=torch.channels_last)


def _device_of(obj) -> torch.device:
    if isinstance(obj, torch.Tensor):
        return obj.device
    for p in obj.parameters():
        return p.device
    return torch.device("cpu")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); ``deterministic`` also asks cuDNN for repeatable kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def cudnn_autotune(device: torch.device | str) -> Iterator[None]:
    """Inside, on a GPU, cuDNN times its convolution algorithms for each new shape and keeps the fastest
    (``cudnn.benchmark``), unless repeatable kernels were asked for (``seed_everything(deterministic=True)`` or
    ``torch.backends.cudnn.deterministic``); the caller's setting is restored after. Nothing elsewhere."""
    if torch.device(device).type != "cuda" or torch.backends.cudnn.deterministic:
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(compile: bool | str | None, device: torch.device | str) -> str | None:
    """The ``torch.compile`` mode that ``compile`` asks for on ``device``, None for none (False or None).

    ``True``: ``"reduce-overhead"`` on a GPU (inductor's fused kernels, replayed as CUDA graphs: one launch per
    batch instead of hundreds), ``"default"`` elsewhere (no CUDA graphs off a GPU); or one of ``COMPILE_MODES``.
    """
    if compile is None or compile is False:
        return None
    if compile is True:
        return "reduce-overhead" if torch.device(device).type == "cuda" else "default"
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile takes True, False or a torch.compile mode ({', '.join(COMPILE_MODES)}), "
                         f"got {compile!r}")
    return compile


def compiling() -> bool:
    """Whether ``torch.compile`` is tracing the calling code: fast paths it cannot trace (NNPACK through ctypes,
    worker threads, weight caches keyed on version counters) then take their plain form."""
    check = getattr(torch.compiler, "is_compiling", None)
    if check is None:                                   # torch < 2.3
        from torch._dynamo import is_compiling as check
    return bool(check())


_COMPILED: dict = {}


def compiled(fn, mode: str):
    """``torch.compile(fn, mode=mode, dynamic=False)``, made once per (fn, mode) in a process, so that later calls
    with the same shapes, dtypes and modules reuse its compiled code (and CUDA graphs) instead of compiling again.
    ``dynamic=False``: callers pad their last, smaller batch to the others' size (one shape, one compilation)."""
    key = (fn, mode)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(fn, mode=mode, dynamic=False)
    return _COMPILED[key]


def pad_batch(t: torch.Tensor, size: int) -> torch.Tensor:
    """A copy of ``t`` (B, ...) with copies of its last row appended up to ``size`` rows, for a network compiled
    for one batch size (``compiled``). Always a new tensor: made under the caller's inference mode as every other
    input of the compiled call is (a tensor from outside inference mode would compile it again)."""
    return torch.cat([t, t[-1:].expand(size - t.shape[0], *t.shape[1:])])


def call_compiled(fn, mode: str, *args):
    """``compiled(fn, mode)(*args)``. In the CUDA-graph modes a new step is marked first: the graphs may then
    overwrite their earlier outputs, so the caller copies each output out before the next call."""
    mark = getattr(torch.compiler, "cudagraph_mark_step_begin", None)
    if mode in ("reduce-overhead", "max-autotune") and mark is not None:
        mark()
    return compiled(fn, mode)(*args)


def reset_peak_memory(device: torch.device | str | None = None) -> None:
    dev = pick_device(device or "auto")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def memory_report(device: torch.device | str | None = None) -> dict:
    """Memory in MiB: the process's peak resident set, and on CUDA the allocated/reserved/peak GPU memory."""
    report: dict = {"device": str(pick_device(device or "auto"))}
    try:
        import resource
        rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report["cpu_peak_rss_mib"] = round(rss_kib / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
    except ImportError:  # Windows
        pass
    dev = torch.device(report["device"])
    if dev.type == "cuda":
        mib = 1024 * 1024
        report.update(
            gpu_name=torch.cuda.get_device_name(dev),
            gpu_allocated_mib=round(torch.cuda.memory_allocated(dev) / mib, 1),
            gpu_reserved_mib=round(torch.cuda.memory_reserved(dev) / mib, 1),
            gpu_peak_mib=round(torch.cuda.max_memory_allocated(dev) / mib, 1),
            gpu_total_mib=round(torch.cuda.get_device_properties(dev).total_memory / mib, 1),
        )
    return report


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ or "COLAB_GPU" in os.environ

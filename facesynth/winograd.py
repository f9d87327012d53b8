"""Winograd (Toom-Cook) convolutions as batched matrix products, for CPU inference.

A stride-1 convolution with an r x r kernel computes each m x m output tile from an a x a input tile, a = m + r - 1.
Winograd's minimal filtering F(m x m, r x r) does it with a² multiplications per input/output channel pair instead
of m²·r²: the input tile ``d`` and the kernel ``g`` are transformed (``V = Bᵀ d B``, ``U = G g Gᵀ``), multiplied
element by element and summed over input channels, and transformed back (``Y = Aᵀ M A``). Summed over channels,
the element-wise products become a² independent matrix products (Co x C) @ (C x tiles), which run near the
machine's matmul rate, while the transforms are two small matrix products over all tiles. F(4x4, 3x3) does 4x
fewer multiplications than the direct 3x3 convolution; F(4x4, 2x2) 2.56x fewer than a 2x2 one.

The matrices come from the interpolation points 0, ±1, ±2, ±1/2, ... and infinity (Lavin & Gray, "Fast
Algorithms for Convolutional Neural Networks", 2016): ``Aᵀ[i, j] = p_j^i``, ``G[j, k] = p_j^k / Π_{l≠j}(p_j − p_l)``
and ``Bᵀ`` solved from the identity itself, in float64. In float32 the result differs from the exact
convolution by about 1e-5 relative to the largest output (F(4x4, 3x3) over 256 channels: 1.0-1.2e-5 for three
seeds on an Intel Xeon; on an AMD EPYC under 1e-5 from oneDNN's for one; oneDNN's own: 3e-7);
tests/test_winograd.py measures it.

``conv2d(x, conv)`` picks the path, on a CPU in float32 without autograd or autocast, for stride-1 convolutions:

* NNPACK (compiled into PyTorch's Linux x86-64 builds; where it is missing, the paths below run), for 2x2 to
  7x7 kernels on NCHW inputs whose outputs have 576 pixels (24x24) or more: one call per frame on one thread,
  frames side by side on worker threads (``map_frames``). NNPACK runs 3x3 kernels by Winograd F(6x6, 3x3)
  (about 1e-5 relative to the largest output) and the others by FFT (about 3e-7). On one core of this project's
  2-core AMD EPYC it ran 1.4x to 4.9x faster than oneDNN's direct convolution at these sizes (2026-12-07). On a
  2-core Intel Xeon (Ice Lake), where oneDNN runs AVX-512 and NNPACK only AVX2, less: 8 frames on 2 threads,
  2.2x at 256→256 channels and 1.8x at 256→128 at 64x64, 1.0x at 64→32 at 256x256 (2026-12-07).
  ``tests/test_winograd.py`` checks its results; the README's speed section has the measurements.
  ``FACESYNTH_NNPACK=0`` turns it off.
* else Winograd F(4x4, r x r) written here, for 3x3 or 2x2 kernels with 256 or more input channels and at least
  128 tiles per matrix product (below that the transforms, written as PyTorch ops, cost more than the
  multiplications they save); frames go in chunks whose transformed tiles stay in the cache. The transformed
  kernels are cached on the module and rebuilt when its weight changes (in place or replaced).
* else the convolution as it would run (``F.conv2d``).

``FACESYNTH_WINOGRAD=0`` turns both fast paths off everywhere.

Shapes: x (N, C, H, W) → (N, Co, H + 2·pad − r + 1, W + 2·pad − r + 1).
"""
from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from facesynth.gpu import compiling, cpu_autocast_state

__all__ = ["winograd_matrices", "transform_kernel", "winograd_conv2d", "conv2d", "Conv2d", "cached", "version",
           "folded", "fold_batchnorm", "set_fast_inference", "map_frames", "nnpack_available", "nnpack_takes",
           "nnpack_conv2d", "nnpack_direct", "WINOGRAD_MIN_TILES", "NNPACK_MIN_PIXELS", "PROFILER_LABEL"]

# FACESYNTH_WINOGRAD=0 turns the Winograd path off (every convolution then runs as F.conv2d)
ENABLED = os.environ.get("FACESYNTH_WINOGRAD", "1").strip().lower() not in ("0", "false", "no", "off")
# below this many tiles per matrix product the transformed kernel (a²/r² times the kernel) costs more to read
# than the product saves
WINOGRAD_MIN_TILES = 128
# FACESYNTH_NNPACK=0 keeps convolutions off NNPACK (see nnpack_available)
NNPACK_ENABLED = os.environ.get("FACESYNTH_NNPACK", "1").strip().lower() not in ("0", "false", "no", "off")
# FACESYNTH_NNPACK_DIRECT=0 calls NNPACK through torch._nnpack_spatial_convolution only (see nnpack_direct)
NNPACK_DIRECT = os.environ.get("FACESYNTH_NNPACK_DIRECT", "1").strip().lower() not in ("0", "false", "no", "off")
# NNPACK only for outputs of at least this many pixels per frame (24x24): below it, per-frame calls lose to one
# batched oneDNN convolution (measured at 12x12 and 6x6, see conv2d)
NNPACK_MIN_PIXELS = 576
# transformed input tiles per call (float32 elements, 8 MiB): more goes in chunks of frames, so the memory-bound
# transforms work in the cache
CHUNK_ELEMENTS = 2 * 1024 ** 2


def _points(count: int) -> list[float]:
    """0, 1, −1, 2, −2, 1/2, −1/2, 3, −3, ...: small points first, as far as possible reciprocal pairs."""
    out = [0.0]
    for p in (1.0, 2.0, 0.5, 3.0, 1 / 3, 4.0, 0.25):
        out += [p, -p]
    return out[:count]


@lru_cache(maxsize=None)
def winograd_matrices(m: int, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Aᵀ (m x a), G (a x r), Bᵀ (a x a)) in float64 for F(m, r), a = m + r − 1, from the points 0, ±1, ±2,
    ±1/2, ... and infinity; ``y = Aᵀ[(G g) ⊙ (Bᵀ d)]`` is the valid correlation of d (length a) with g (length
    r)."""
    a = m + r - 1
    points = _points(a - 1)
    AT = torch.zeros(m, a, dtype=torch.float64)
    G = torch.zeros(a, r, dtype=torch.float64)
    for j, p in enumerate(points):
        AT[:, j] = torch.tensor([p ** i for i in range(m)], dtype=torch.float64)
        f = 1.0
        for i, q in enumerate(points):
            if i != j:
                f *= p - q
        G[j] = torch.tensor([p ** k / f for k in range(r)], dtype=torch.float64)
    AT[m - 1, a - 1] = 1.0
    G[a - 1, r - 1] = 1.0
    # Bᵀ from the identity: Σ_j Aᵀ[i, j]·G[j, k]·Bᵀ[j, t] = [t == i + k] for every i, k, t (a linear system)
    rows = (AT.unsqueeze(1) * G.t().unsqueeze(0)).reshape(m * r, a)               # row (i, k): Aᵀ[i, j]·G[j, k]
    target = torch.zeros(m * r, a, dtype=torch.float64)
    for i in range(m):
        for k in range(r):
            target[i * r + k, i + k] = 1.0
    BT = torch.linalg.lstsq(rows, target).solution
    if (rows @ BT - target).abs().max() > 1e-9:
        raise ArithmeticError(f"no Winograd transform F({m}, {r}) from points {points}")
    BT[BT.abs() < 1e-12] = 0.0
    return AT, G, BT


@lru_cache(maxsize=None)
def _transforms(m: int, r: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    AT, _, BT = winograd_matrices(m, r)
    return BT.to(dtype=dtype, device=device), AT.to(dtype=dtype, device=device)


def transform_kernel(weight: torch.Tensor, m: int) -> torch.Tensor:
    """U = G g Gᵀ for every (Co, C) kernel, computed in float64. Shape: (Co, C, r, r) → (a², Co, C)."""
    r = weight.shape[-1]
    _, G, _ = winograd_matrices(m, r)
    G = G.to(weight.device)
    u = torch.einsum("ai,ocij,bj->aboc", G, weight.double(), G)
    return u.reshape(-1, weight.shape[0], weight.shape[1]).to(weight.dtype).contiguous()


def winograd_conv2d(x: torch.Tensor, U: torch.Tensor, bias: torch.Tensor | None, m: int, r: int,
                    padding: int) -> torch.Tensor:
    """``F.conv2d(x, w, bias, padding=padding)`` for U = ``transform_kernel(w, m)``, by F(m x m, r x r)."""
    n, c, h, w = x.shape
    a = m + r - 1
    ho, wo = h + 2 * padding - r + 1, w + 2 * padding - r + 1
    th, tw = -(-ho // m), -(-wo // m)
    hp, wp = th * m + r - 1, tw * m + r - 1
    xp = F.pad(x, (padding, wp - w - padding, padding, hp - h - padding)).contiguous()
    BT, AT = _transforms(m, r, x.dtype, x.device)
    # a x a overlapping tiles, laid out (tile row i, tile column j, channel, frame, tile y, tile x): one copy
    d = xp.as_strided((a, a, c, n, th, tw), (wp, 1, hp * wp, c * hp * wp, m * wp, m)).reshape(a, -1)
    # V = Bᵀ d B for every tile and channel: Bᵀ on i, then on j (separable, fewer operations than one kron)
    v = torch.matmul(BT, torch.mm(BT, d).view(a, a, -1)).view(a * a, c, n * th * tw)
    mprod = torch.bmm(U, v)                                              # (a², Co, N·tiles): Σ_c U ⊙ V
    co = mprod.shape[1]
    if bias is not None:
        # the point 1 has Aᵀ column (1, ..., 1): a constant added at (1, 1) reaches every output of the tile once
        mprod[a + 1].add_(bias.to(mprod.dtype).view(-1, 1))
    y = torch.matmul(AT, mprod.view(a, a, -1))                           # Aᵀ on j ... (a, m, ·)
    y = torch.mm(AT, y.view(a, -1)).view(m, m, co, n, th, tw)            # ... then on i: Y = Aᵀ M A
    y = y.permute(3, 2, 4, 0, 5, 1).reshape(n, co, th * m, tw * m)
    return y[:, :, :ho, :wo] if th * m != ho or tw * m != wo else y


def cached(owner: nn.Module, key: str, sources: tuple, build):
    """``build()``, cached on ``owner`` under ``key`` until one of the ``sources`` tensors changes (in place, or
    replaced by another tensor: the entry keeps the sources themselves, so a new tensor at a reused address
    cannot pass for an old one). Built under ``torch.no_grad``. While ``torch.compile`` traces (``gpu.compiling``),
    built in the traced code instead, on every call: version counters cannot be traced, and the few small weight
    operations then run inside the compiled call (never a stale weight)."""
    if compiling():
        with torch.no_grad():
            return build()
    stamp = tuple(None if t is None else (version(t), t.dtype, t.device) for t in sources)
    cache = owner.__dict__.setdefault("_facesynth_cache", {})
    hit = cache.get(key)
    if (hit is None or len(hit[0]) != len(sources) or any(a is not b for a, b in zip(hit[0], sources))
            or hit[1] != stamp):
        with torch.no_grad():
            hit = (sources, stamp, build())
        cache[key] = hit
    return hit[2]


def set_fast_inference(module: nn.Module, enabled: bool) -> nn.Module:
    """Switch the inference paths of every block of ``module`` that has one (a class attribute ``fast``: the
    FOMM SameBlock/DownBlock/UpBlock, ResBlock, AntiAliasDownsample and DenseMotionNetwork, ``Conv2d`` below, the
    Wav2Lip ConvBlock) on or off. Off: the official op
    sequence, as autograd runs it. On by default, except in the FOMM key point detector (see ``KPDetector``)."""
    for m in module.modules():
        if hasattr(type(m), "fast"):
            m.fast = enabled
    return module


def _cached_kernel(conv: nn.Conv2d, weight: torch.Tensor, m: int, key: str) -> torch.Tensor:
    """The transformed kernel of ``weight``, cached on ``conv`` until the weight changes."""
    return cached(conv, f"winograd-{key}-{m}", (weight,), lambda: transform_kernel(weight.detach(), m))


def version(t: torch.Tensor) -> int | None:
    """``t._version``; None for an inference tensor (which has no version counter)."""
    return None if t.is_inference() else t._version


def conv2d(x: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
           key: str = "weight", m: int = 4, padding: int | None = None) -> torch.Tensor:
    """``conv``'s stride-1 convolution of ``x`` (or with ``weight``/``bias``/``padding`` derived from it, cached
    under ``key``) on a CPU in float32 without autograd: by NNPACK frame by frame where it pays
    (``nnpack_conv2d``), else by Winograd F(m x m, r x r) where that pays, else ``F.conv2d``."""
    weight = conv.weight if weight is None else weight
    bias = conv.bias if bias is None and key == "weight" else bias
    r = weight.shape[-1]
    pad = _padding(conv, padding)
    if not _eligible(x, conv, weight, pad):
        return _plain(x, conv, weight, bias, padding)
    if _nnpack_pays(x, r, pad):
        return nnpack_conv2d(x, weight, bias, pad, owner=conv, key=key)
    if r not in (2, 3) or x.shape[1] < 256:    # few input channels: the transforms cost more than they save
        return _plain(x, conv, weight, bias, padding)
    a = m + r - 1
    tiles = -(-(x.shape[2] + 2 * pad - r + 1) // m) * -(-(x.shape[3] + 2 * pad - r + 1) // m)
    # the transforms are memory-bound: frames go in chunks whose transformed tiles stay in the cache
    step = max(1, CHUNK_ELEMENTS // (a * a * x.shape[1] * tiles))
    if min(step, x.shape[0]) * tiles < WINOGRAD_MIN_TILES:
        # few tiles per product: the a²/r² times larger transformed kernel costs more to read than it saves
        return _plain(x, conv, weight, bias, padding)
    U = _cached_kernel(conv, weight, m, key)
    if x.shape[0] <= step:
        return winograd_conv2d(x, U, bias, m, r, pad)
    return torch.cat([winograd_conv2d(part, U, bias, m, r, pad) for part in x.split(step)])


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict keys) whose forward without autograd is ``conv2d`` above:
    NNPACK or Winograd where they pay. ``fast = False`` (``set_fast_inference``) keeps ``nn.Conv2d.forward``."""

    fast = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast and not torch.is_grad_enabled():
            return conv2d(x, self)
        return super().forward(x)


def _padding(conv: nn.Conv2d, padding: int | None) -> int | None:
    if padding is not None:
        return padding
    pads = conv.padding if isinstance(conv.padding, tuple) else (conv.padding, conv.padding)
    return pads[0] if isinstance(pads[0], int) and pads[0] == pads[1] else None


def _eligible(x: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor, pad: int | None) -> bool:
    """CPU, float32, no autograd or autocast, not under ``torch.compile``, a plain stride-1 convolution with square
    kernel and padding."""
    return not (not ENABLED or pad is None or compiling() or x.device.type != "cpu" or x.dtype != torch.float32
                or weight.dtype != torch.float32 or torch.is_grad_enabled() or x.dim() != 4
                or cpu_autocast_state()[0] or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1
                or weight.shape[-2] != weight.shape[-1] or conv.padding_mode != "zeros")


def nnpack_takes(x: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor, padding: int) -> bool:
    """Whether ``conv2d(x, conv, weight, padding=padding)`` runs by NNPACK."""
    return _eligible(x, conv, weight, padding) and _nnpack_pays(x, weight.shape[-1], padding)


def _nnpack_pays(x: torch.Tensor, r: int, pad: int) -> bool:
    """NNPACK for 2x2 to 7x7 kernels on outputs of NNPACK_MIN_PIXELS or more, when the frames keep at least half
    of the torch threads busy (one frame per thread; NNPACK itself runs on one thread, about twice as fast per
    core as oneDNN's direct convolution at these sizes), and for NCHW inputs only: NNPACK takes nothing else, and
    a channels-last network (Wav2Lip's ``InferenceWav2Lip``) is as fast on oneDNN as it would be with the layout
    changes around NNPACK (measured)."""
    if not (NNPACK_ENABLED and 2 <= r <= 7 and pad < r and x.is_contiguous()):
        return False
    if (x.shape[2] + 2 * pad - r + 1) * (x.shape[3] + 2 * pad - r + 1) < NNPACK_MIN_PIXELS:
        return False
    threads = torch.get_num_threads()
    return 2 * min(x.shape[0], threads) >= threads and nnpack_available()


_nnpack_lock = threading.Lock()
_nnpack_state: list[bool] = []          # [available] once checked


def nnpack_available() -> bool:
    """Whether ``torch._nnpack_spatial_convolution`` works here (NNPACK is compiled into PyTorch's Linux x86-64
    builds). The first call initialises NNPACK and runs one tiny convolution with one torch thread:
    PyTorch creates NNPACK's thread pool at its first convolution with the thread count of that moment, and a
    one-thread pool runs each call on the calling thread, so frames can run side by side (``map_frames``)."""
    if _nnpack_state:                   # checked already: no lock on the per-convolution path
        return _nnpack_state[0]
    with _nnpack_lock:
        if not _nnpack_state:
            ok = False
            if NNPACK_ENABLED and hasattr(torch, "_nnpack_spatial_convolution"):
                threads = torch.get_num_threads()
                try:
                    if torch.backends.nnpack.is_available():          # initialises NNPACK
                        torch.set_num_threads(1)
                        with torch.no_grad():
                            y = torch._nnpack_spatial_convolution(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3),
                                                                  None, [1, 1])
                        ok = y.shape == (1, 1, 4, 4) and float(y[0, 0, 1, 1]) == 9.0
                except RuntimeError:
                    ok = False
                finally:
                    torch.set_num_threads(threads)
            _nnpack_state.append(ok)
        return _nnpack_state[0]


def nnpack_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                  owner: nn.Module | None = None, key: str = "weight") -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1, float32, CPU) by NNPACK, one frame per call and
    frames side by side (``map_frames``). NNPACK runs 3x3 kernels by Winograd F(6x6, 3x3) (about 1e-5 relative to
    the largest output) and the others by FFT (about 3e-7).

    Where NNPACK's own entry point can be called (``nnpack_direct``), it is called on each frame's thread with a
    workspace kept per thread, and for 3x3 kernels with their Winograd transform computed once and cached on
    ``owner`` under ``key`` (until the weight changes): PyTorch's ``_nnpack_spatial_convolution`` allocates the
    workspace and transforms the kernel again on every call. Measured on one core (2026-12-07): 256→256 channels
    at 24x24 2.7 instead of 3.9 ms, at 64x64 13.7 instead of 15.0; 64→128 at 256x256 38.7 instead of 56.2.
    Otherwise ``_nnpack_spatial_convolution``; where NNPACK refuses a size, ``F.conv2d``."""
    weight = weight.contiguous()
    frames = x.contiguous().split(1)
    direct = nnpack_direct()
    if direct is not None:
        transformed = None
        if weight.shape[-1] == 3 and owner is not None:
            transformed = cached(owner, f"nnpack-{key}", (weight,), lambda: _nnpack_kernel(direct, weight))
        nnpack_bias = weight.new_zeros(weight.shape[0]) if bias is None else bias.contiguous()

        def one(frame: torch.Tensor) -> torch.Tensor:
            out = _nnpack_direct_conv(direct, frame, weight, transformed, nnpack_bias, padding)
            return torch._nnpack_spatial_convolution(frame, weight, bias, [padding, padding]) if out is None else out
    else:
        def one(frame: torch.Tensor) -> torch.Tensor:
            return torch._nnpack_spatial_convolution(frame, weight, bias, [padding, padding])

    try:
        return one(frames[0]) if len(frames) == 1 else torch.cat(map_frames(one, frames))
    except RuntimeError:
        return F.conv2d(x, weight, bias, padding=padding)


# --- NNPACK's nnp_convolution_inference, called directly --------------------------------------------------------
# The C API (Maratyszcza/NNPACK, include/nnpack.h): structs passed by value, enums as ints, status 0 = success.
class _Size(ctypes.Structure):
    _fields_ = [("width", ctypes.c_size_t), ("height", ctypes.c_size_t)]


class _Padding(ctypes.Structure):
    _fields_ = [("top", ctypes.c_size_t), ("right", ctypes.c_size_t), ("bottom", ctypes.c_size_t),
                ("left", ctypes.c_size_t)]


_ALGORITHM_AUTO, _ALGORITHM_WT8X8 = 0, 3
_STRATEGY_COMPUTE, _STRATEGY_PRECOMPUTE, _STRATEGY_REUSE = 1, 2, 3
_ALIGN = 64                             # NNPACK's workspace alignment
# a thread keeps its workspace up to this size (bytes); a larger one is allocated for the call
WORKSPACE_KEEP_BYTES = 128 * 1024 ** 2
# what torch.profiler shows for a direct call (a ctypes call records no aten op)
PROFILER_LABEL = "facesynth::nnpack_conv2d"
_direct_lock = threading.Lock()
_direct_state: list = []                # [the function, or None] once checked
_local = threading.local()


def nnpack_direct():
    """NNPACK's ``nnp_convolution_inference``, exported by PyTorch's ``libtorch_cpu`` where NNPACK is compiled in,
    bound with ctypes (which releases the GIL during the call), or None: NNPACK unavailable, the symbol missing,
    ``FACESYNTH_NNPACK_DIRECT=0``, or the check (a 3x3 and a 5x5 convolution against ``F.conv2d``) failed."""
    if _direct_state:
        return _direct_state[0]
    with _direct_lock:
        if not _direct_state:
            fn = None
            if NNPACK_DIRECT and nnpack_available():            # nnpack_available initialises NNPACK
                try:
                    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
                    fn = lib.nnp_convolution_inference
                    fn.restype = ctypes.c_int
                    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_size_t, _Size, _Padding,
                                   _Size, _Size, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_int, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.c_void_p]
                    if not _direct_works(fn):
                        fn = None
                except (OSError, AttributeError):
                    fn = None
            _direct_state.append(fn)
        return _direct_state[0]


def _direct_works(fn) -> bool:
    g = torch.Generator().manual_seed(0)
    for r, pad in ((3, 1), (5, 2)):
        x = torch.randn(1, 5, 9, 11, generator=g)
        w = torch.randn(4, 5, r, r, generator=g)
        b = torch.randn(4, generator=g)
        with torch.no_grad():
            expected = F.conv2d(x, w, b, padding=pad)
            transformed = _nnpack_kernel(fn, w) if r == 3 else None
            if r == 3 and transformed is None:
                return False
            out = _nnpack_direct_conv(fn, x, w, transformed, b, pad)
        if out is None or out.shape != expected.shape or not torch.allclose(out, expected, rtol=1e-4, atol=1e-4):
            return False
    return True


def _call(fn, algorithm, strategy, x_shape, cout, r, pad, x, kernel, bias, out, workspace, size) -> int:
    _, c, h, w = x_shape
    return fn(algorithm, strategy, c, cout, _Size(w, h), _Padding(pad, pad, pad, pad), _Size(r, r), _Size(1, 1),
              x, kernel, bias, out, workspace, size, 0, None, None, None)


def _nnpack_kernel(fn, weight: torch.Tensor) -> torch.Tensor | None:
    """The Winograd F(6x6, 3x3) transform of a (Co, C, 3, 3) float32 kernel in NNPACK's layout (a flat byte
    tensor, 64-byte aligned at ``data_ptr``), or None where NNPACK refuses."""
    weight = weight.detach().contiguous()
    cout, c = weight.shape[:2]
    size = ctypes.c_size_t(0)
    shape = (1, c, 8, 8)
    if _call(fn, _ALGORITHM_WT8X8, _STRATEGY_PRECOMPUTE, shape, cout, 3, 1, None, weight.data_ptr(), None, None,
             None, ctypes.byref(size)) != 0:
        return None
    buffer = torch.empty(size.value + _ALIGN, dtype=torch.uint8)
    offset = -buffer.data_ptr() % _ALIGN
    kernel = buffer[offset:offset + size.value]
    if _call(fn, _ALGORITHM_WT8X8, _STRATEGY_PRECOMPUTE, shape, cout, 3, 1, None, weight.data_ptr(), None, None,
             kernel.data_ptr(), ctypes.byref(size)) != 0:
        return None
    return kernel


def _nnpack_direct_conv(fn, x: torch.Tensor, weight: torch.Tensor, transformed: torch.Tensor | None,
                        bias: torch.Tensor, padding: int) -> torch.Tensor | None:
    """One frame (1, C, H, W), float32 and contiguous, on the calling thread; None where NNPACK refuses. Under
    torch.profiler each call shows as ``facesynth::nnpack_conv2d`` (a ctypes call is no aten op)."""
    if torch.autograd.profiler._is_profiler_enabled:
        with torch.profiler.record_function(PROFILER_LABEL):
            return _nnpack_direct_call(fn, x, weight, transformed, bias, padding)
    return _nnpack_direct_call(fn, x, weight, transformed, bias, padding)


def _nnpack_direct_call(fn, x: torch.Tensor, weight: torch.Tensor, transformed: torch.Tensor | None,
                        bias: torch.Tensor, padding: int) -> torch.Tensor | None:
    cout, _, r, _ = weight.shape
    out = x.new_empty(1, cout, x.shape[2] + 2 * padding - r + 1, x.shape[3] + 2 * padding - r + 1)
    if transformed is not None:
        algorithm, strategy, kernel = _ALGORITHM_WT8X8, _STRATEGY_REUSE, transformed.data_ptr()
    else:
        algorithm, strategy, kernel = _ALGORITHM_AUTO, _STRATEGY_COMPUTE, weight.data_ptr()
    size = ctypes.c_size_t(0)
    args = (fn, algorithm, strategy, x.shape, cout, r, padding, x.data_ptr(), kernel, bias.data_ptr(), out.data_ptr())
    if _call(*args, None, ctypes.byref(size)) != 0:
        return None
    buffer = getattr(_local, "workspace", None)
    if buffer is None or buffer.numel() < size.value + _ALIGN:
        buffer = torch.empty(size.value + _ALIGN, dtype=torch.uint8)
        if size.value <= WORKSPACE_KEEP_BYTES:
            _local.workspace = buffer
    workspace = buffer.data_ptr() + (-buffer.data_ptr() % _ALIGN)
    if _call(*args, workspace, ctypes.byref(size)) != 0:
        return None
    return out


_frame_pool: ThreadPoolExecutor | None = None
_frame_pool_workers = 0
_frame_pool_lock = threading.Lock()


def _worker_pool(workers: int) -> ThreadPoolExecutor:
    """The shared worker pool, grown (never shrunk) to at least ``workers`` threads. A pool that is replaced
    finishes what it was given and is collected; callers never depend on its size (``map_frames`` hands it
    exactly as many jobs as it wants threads)."""
    global _frame_pool, _frame_pool_workers
    with _frame_pool_lock:
        if _frame_pool is None or _frame_pool_workers < workers:
            _frame_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="facesynth-frames")
            _frame_pool_workers = workers
        return _frame_pool


def map_frames(fn, items) -> list:
    """``[fn(item) for item in items]``, side by side on up to ``torch.get_num_threads()`` worker threads, each
    with one torch thread and the caller's grad, inference and autocast modes; the caller's thread count is
    restored afterwards. The items go to the workers in contiguous runs, in order. With one torch thread (for
    instance inside a worker) or one item, in order here."""
    items = list(items)
    threads = torch.get_num_threads()
    if threads < 2 or len(items) < 2:
        return [fn(item) for item in items]
    workers = min(threads, len(items))
    bounds = [len(items) * i // workers for i in range(workers + 1)]
    runs = [items[bounds[i]:bounds[i + 1]] for i in range(workers)]
    grad = torch.is_grad_enabled()
    inference = torch.is_inference_mode_enabled()
    amp = cpu_autocast_state()

    def job(run: list) -> list:
        # grad, inference and autocast modes are per thread: carry the caller's over
        with torch.inference_mode(inference), torch.set_grad_enabled(grad), \
                torch.autocast("cpu", dtype=amp[1], enabled=amp[0]):
            return [fn(item) for item in run]

    pool = _worker_pool(workers)
    torch.set_num_threads(1)
    try:
        return [out for run in pool.map(job, runs) for out in run]
    finally:
        torch.set_num_threads(threads)


def _plain(x, conv, weight, bias, padding):
    if padding is None:
        return conv._conv_forward(x, weight, bias)
    return F.conv2d(x, weight, bias, conv.stride, padding, conv.dilation, conv.groups)


def fold_batchnorm(conv: nn.Conv2d | nn.ConvTranspose2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``conv`` followed by ``norm`` (its running statistics, i.e. eval mode) as one convolution's weight and
    bias, computed in float64, returned in the weight's dtype (a transposed conv's output channel is dim 1)."""
    with torch.no_grad():
        scale = norm.running_var.double().add(norm.eps).rsqrt()
        if norm.weight is not None:
            scale = scale * norm.weight.double()
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        bias = (bias - norm.running_mean.double()) * scale
        if norm.bias is not None:
            bias = bias + norm.bias.double()
        shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)
        weight = conv.weight.double() * scale.view(shape)
        return weight.to(conv.weight.dtype), bias.to(conv.weight.dtype)


def folded(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``fold_batchnorm(conv, norm)``, cached on ``conv`` until either's parameters or statistics change."""
    sources = (conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var)
    return cached(conv, f"folded-{norm.eps}", sources, lambda: fold_batchnorm(conv, norm))

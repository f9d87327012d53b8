"""Animate a source image with the motion of a driving video (the official FOMM ``demo.py`` loop, batched).

The maths is the official one (``animate.normalize_kp`` and ``demo.make_animation`` of
AliaksandrSiarohin/first-order-model): key points of the source and of every driving frame; in relative mode each
driving frame's motion is taken relative to an initial driving frame (its key point displacement, optionally
scaled by the ratio of the key points' convex-hull sizes, and its jacobian change) and applied to the source's key
points; the generator then moves the source to them. In absolute mode the driving key points are used as they are.

What differs is only how it runs: the source is encoded once (key points and the generator's encoder features),
the driving frames go through the key point detector and the generator in batches under ``torch.inference_mode``
(on a GPU with autocast, channels-last networks and cuDNN autotuning; on a CPU the decoder, from the bottleneck
on, runs one frame at a time so its large activations stay in the cache, frames side by side on one thread each,
with the inference paths of ``reenact.model.set_fast_inference``: NNPACK or Winograd convolutions, folded
BatchNorm and upsampling; the key point detector keeps the official op sequence apart from its downsampling, see
``KPDetector``), and a driving video may be any iterable of frames, so long videos stream through ``iter_animate``
in constant memory. Per frame, the numbers equal the official per-frame loop up to float rounding
(tests/test_reenact_animate.py; at vox-256 size tests/test_winograd.py).

Shapes: source (1, C, H, W) or (C, H, W) float in [0, 1]; driving (T, C, H, W) float in [0, 1] or an iterable of
frames ((C, H, W) or (B, C, H, W) tensors, or uint8 H x W x 3 RGB arrays); result (T, C, H, W) float in [0, 1].
"""
from __future__ import annotations

import math
import warnings
from typing import Iterable, Iterator, Union

import numpy as np
import torch
import torch.nn.functional as F

from facesynth import winograd
from facesynth.errors import NoFaceError
from facesynth.gpu import (call_compiled, compile_mode, compiling, cpu_has_native_bf16, cudnn_autotune,
                           fp16_fallback, inference_dtype, pad_batch, precision_name)
from facesynth.reenact.model import KP, OcclusionAwareGenerator

__all__ = ["normalize_kp", "animate", "iter_animate", "find_best_frame", "default_batch_size", "hull_area",
           "movement_scale", "normalized_landmarks"]

Frames = Union[torch.Tensor, Iterable[Union[torch.Tensor, np.ndarray]]]


# --- key point normalisation ----------------------------------------------------------------------------------

def hull_area(points: torch.Tensor | np.ndarray) -> float:
    """Area of the convex hull of 2-D points (K, 2), in float64 as scipy computes it (``ConvexHull(p).volume``)."""
    from scipy.spatial import ConvexHull, QhullError

    p = points.detach().float().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    try:
        return float(ConvexHull(p).volume)
    except (QhullError, ValueError) as e:
        raise ValueError(f"the convex hull of these {len(p)} key points has no area (need 3 or more points "
                         f"not on one line): {str(e).splitlines()[0]}") from None


def movement_scale(kp_source: KP, kp_driving_initial: KP) -> float:
    """sqrt(source hull area) / sqrt(initial driving hull area), from batch element 0 of each (as the official)."""
    return math.sqrt(hull_area(kp_source["value"][0])) / math.sqrt(hull_area(kp_driving_initial["value"][0]))


def normalize_kp(kp_source: KP, kp_driving: KP, kp_driving_initial: KP, adapt_movement_scale: bool = False,
                 use_relative_movement: bool = False, use_relative_jacobian: bool = False) -> KP:
    """The official ``normalize_kp``, batched over the N driving frames.

    Without ``use_relative_movement`` the result is ``kp_driving`` itself (the other flags then change nothing).
    With it: ``value = (v_d - v_init)·scale + v_s`` where scale is ``movement_scale`` when
    ``adapt_movement_scale`` else 1, and with ``use_relative_jacobian`` also
    ``jacobian = (J_d @ inv(J_init)) @ J_s`` (not scaled).

    Shape: kp_source and kp_driving_initial with 1 entry (or N), kp_driving with N → N entries.
    The scale comes from batch element 0 of kp_source and kp_driving_initial, as in the official code.
    """
    scale = movement_scale(kp_source, kp_driving_initial) if adapt_movement_scale else 1
    return _normalize(kp_source, kp_driving, kp_driving_initial, scale, use_relative_movement,
                      use_relative_jacobian)


def _normalize(kp_source: KP, kp_driving: KP, kp_initial: KP, scale: float, relative_movement: bool,
               relative_jacobian: bool, inverse_initial: torch.Tensor | None = None) -> KP:
    out = dict(kp_driving)
    if relative_movement:
        diff = kp_driving["value"] - kp_initial["value"]
        diff *= scale                     # in place on a float32 tensor with a Python scalar, as the official
        out["value"] = diff + kp_source["value"]
        if relative_jacobian and "jacobian" in kp_driving:
            if inverse_initial is None:
                inverse_initial = torch.inverse(kp_initial["jacobian"])
            out["jacobian"] = torch.matmul(torch.matmul(kp_driving["jacobian"], inverse_initial),
                                           kp_source["jacobian"])
    return out


# --- best frame -------------------------------------------------------------------------------------------------

def normalized_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """68 landmarks (68, 2) centred on their mean and divided by sqrt(convex-hull area), as the official demo."""
    kp = np.asarray(landmarks, dtype=np.float64)
    kp = kp - kp.mean(axis=0, keepdims=True)
    return kp / math.sqrt(hull_area(kp))


def _as_uint8_images(frames) -> Iterator[np.ndarray]:
    """uint8 H x W x 3 RGB images from an (N, 3, H, W) / (3, H, W) float tensor in [0, 1], arrays, or an iterable."""
    if isinstance(frames, torch.Tensor) or (isinstance(frames, np.ndarray) and frames.ndim in (3, 4)
                                            and frames.dtype != object):
        frames = frames[None] if frames.ndim == 3 else frames
    for f in frames:
        if isinstance(f, torch.Tensor):
            if f.dim() == 4:
                yield from _as_uint8_images(f)
                continue
            from facesynth.media import to_image
            yield to_image(f)
        else:
            a = np.asarray(f)
            if a.ndim == 4:
                yield from _as_uint8_images(a)
                continue
            if a.dtype != np.uint8:
                a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
            yield np.ascontiguousarray(a[..., :3])


def _largest_face_landmarks(faces) -> np.ndarray | None:
    if not faces:
        return None
    return max(faces, key=lambda f: f.area).landmarks


def find_best_frame(source_image, driving_frames, detector="auto", device: str = "auto") -> int:
    """Index of the driving frame whose face pose is closest to the source's (the official ``--find_best_frame``).

    Both faces' 68 landmarks (facesynth's own detector: ``create_backend(detector)``; the largest face of each
    image) are centred and divided by sqrt of their convex-hull area; the frame with the smallest sum of squared
    differences wins (the first on ties). Frames without a face are skipped (the official code crashes on them).

    ``source_image``: uint8 H x W x 3 RGB, or a (3, H, W) / (1, 3, H, W) float tensor in [0, 1];
    ``driving_frames``: a (T, 3, H, W) float tensor, uint8 (T, H, W, 3) array, or an iterable of such frames.

    Raises:
        NoFaceError: no face in the source image.
    """
    from facesynth.extract.backends import create_backend

    backend = create_backend(detector, device=device)
    src = next(_as_uint8_images(source_image), None)
    src_lm = _largest_face_landmarks(backend.detect([src])[0]) if src is not None else None
    if src_lm is None:
        raise NoFaceError("find_best_frame: no face found in the source image")
    target = normalized_landmarks(src_lm)
    best, best_norm, index = 0, math.inf, 0
    chunk: list[np.ndarray] = []

    def consume(images: list[np.ndarray], start: int) -> None:
        nonlocal best, best_norm
        for j, faces in enumerate(backend.detect(images)):
            lm = _largest_face_landmarks(faces)
            if lm is None:
                continue
            norm = float(((target - normalized_landmarks(lm)) ** 2).sum())
            if norm < best_norm:
                best, best_norm = start + j, norm

    step = max(1, int(getattr(backend, "batch_size", 1)))
    for image in _as_uint8_images(driving_frames):
        chunk.append(image)
        if len(chunk) == step:
            consume(chunk, index - len(chunk) + 1)
            chunk = []
        index += 1
    if chunk:
        consume(chunk, index - len(chunk))
    if best_norm == math.inf:
        warnings.warn("find_best_frame: no face found in any driving frame; using frame 0", stacklevel=2)
    return best


# --- animation ----------------------------------------------------------------------------------------------------

def default_batch_size(model, height: int, width: int) -> int:
    """Driving frames per batch: 8 on CPU; on GPU what about half the free memory holds (1 to 64)."""
    device = model.device
    if device.type != "cuda":
        return 8
    free, _ = torch.cuda.mem_get_info(device)
    g = model.config.generator_params
    # about 160 MiB of activations per 256 x 256 frame for vox-256 (block_expansion 64) in half precision
    per_frame = 160 * 2 ** 20 * (height * width / 256 ** 2) * (g.block_expansion / 64)
    return int(max(1, min(64, free * 0.5 // max(per_frame, 1))))


def _memory_format(device: torch.device) -> torch.memory_format:
    """The networks' layout for inference: channels-last on a GPU (cuDNN's half-precision tensor-core
    convolutions work in NHWC and would transpose NCHW tensors around every convolution), NCHW elsewhere (on a
    CPU NNPACK takes NCHW only)."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def _source_tensor(model, source) -> torch.Tensor:
    if isinstance(source, np.ndarray):
        from facesynth.media import to_tensor
        source = to_tensor(source) if source.dtype == np.uint8 else torch.from_numpy(
            np.ascontiguousarray(source[None] if source.ndim == 3 else source)).permute(0, 3, 1, 2)
    if not isinstance(source, torch.Tensor):
        raise ValueError(f"source must be a (1, 3, H, W) or (3, H, W) tensor in [0, 1], got {type(source).__name__}")
    if source.dim() == 3:
        source = source.unsqueeze(0)
    if source.dim() != 4 or source.shape[0] != 1:
        raise ValueError(f"source must be one image, (1, C, H, W) or (C, H, W); got {tuple(source.shape)}")
    return model._frames(source, "source")


def _frame_batches(driving: Frames, batch_size: int) -> Iterator[torch.Tensor]:
    """(b, C, H, W) float batches of at most batch_size frames, in order, from a tensor or an iterable."""
    if isinstance(driving, torch.Tensor):
        if driving.dim() != 4:
            raise ValueError(f"driving must be (T, C, H, W), got {tuple(driving.shape)}")
        for i in range(0, driving.shape[0], batch_size):
            yield driving[i:i + batch_size]
        return
    if isinstance(driving, np.ndarray) and driving.ndim == 4:
        driving = iter(driving)
    pending: list[torch.Tensor] = []
    count = 0
    for item in driving:
        if isinstance(item, np.ndarray):
            from facesynth.media import to_tensor
            item = to_tensor(item) if item.dtype == np.uint8 else torch.from_numpy(
                np.ascontiguousarray(item[None] if item.ndim == 3 else item)).permute(0, 3, 1, 2)
        if not isinstance(item, torch.Tensor) or item.dim() not in (3, 4):
            raise ValueError("driving frames must be (C, H, W) / (B, C, H, W) tensors or uint8 H x W x 3 arrays, "
                             f"got {tuple(item.shape) if hasattr(item, 'shape') else type(item).__name__}")
        item = item.unsqueeze(0) if item.dim() == 3 else item
        while item.shape[0]:
            take = item[:batch_size - count]
            item = item[take.shape[0]:]
            pending.append(take)
            count += take.shape[0]
            if count == batch_size:
                yield torch.cat(pending) if len(pending) > 1 else pending[0]
                pending, count = [], 0
    if pending:
        yield torch.cat(pending) if len(pending) > 1 else pending[0]


def _generate(generator: OcclusionAwareGenerator, source: torch.Tensor, features: torch.Tensor,
              kp_driving: KP, kp_source: KP) -> torch.Tensor:
    """``generator(source, kp_driving, kp_source)["prediction"]`` for N driving key point sets and one source
    whose encoder output ``features`` (``first`` then ``down_blocks``, batch 1) is computed once."""
    n = kp_driving["value"].shape[0]
    source = source.expand(n, *source.shape[1:])
    kp_source = {k: v.expand(n, *v.shape[1:]) for k, v in kp_source.items()}
    out = features.expand(n, *features.shape[1:])
    if generator.dense_motion_network is not None:
        motion = generator.dense_motion_network(source, kp_driving, kp_source)
        out = generator.warp(out, motion["deformation"])
        occlusion = motion.get("occlusion_map")
        if occlusion is not None:
            if occlusion.shape[2:] != out.shape[2:]:
                occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear")
            out = out * occlusion
    if out.device.type == "cpu" and n > 1 and not compiling():
        # from here on the activations are large and the weights small: one frame at a time stays in the cache
        return torch.cat(_decode_frames(generator, out.split(1)))
    return _decode(generator, out)


def _decode_frames(generator: OcclusionAwareGenerator, frames: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """``_decode`` of each (1, C, h, w) frame; with several torch threads, frames side by side with one torch
    thread each (``winograd.map_frames``): the per-frame convolutions (NNPACK, Winograd) run on one thread."""
    return winograd.map_frames(lambda frame: _decode(generator, frame), frames)


def _decode(generator: OcclusionAwareGenerator, out: torch.Tensor) -> torch.Tensor:
    out = generator.bottleneck(out)
    for block in generator.up_blocks:
        out = block(out)
    logits = generator.final(out)
    if logits.dtype == torch.float16:
        # an fp16 overflow reaches here as +-inf, which the sigmoid would hide as 0 or 1: make it NaN for ``run``
        return torch.sigmoid(logits).masked_fill_(logits.isinf(), float("nan"))
    return torch.sigmoid(logits)


def _detect(detector, frames: torch.Tensor) -> KP:
    """``detector(frames)``: the function ``torch.compile`` compiles for the key point detector."""
    return detector(frames)


def _encode(generator: OcclusionAwareGenerator, source: torch.Tensor) -> torch.Tensor:
    out = generator.first(source)
    for block in generator.down_blocks:
        out = block(out)
    return out


def iter_animate(model, source, driving: Frames, relative: bool = True, adapt_movement_scale: bool = True,
                 batch_size: int | None = None, best_frame: int | str | None = None,
                 autocast: bool | torch.dtype | None = None, detector="auto",
                 compile: bool | str = False) -> Iterator[torch.Tensor]:
    """Yield the animation in batches: (b, C, H, W) float32 in [0, 1] on the model's device, frames in order.

    ``model`` is a FOMM (``load_fomm``). ``relative``: relative movement and relative jacobian (the official
    ``--relative``); otherwise the driving key points are used as they are (absolute mode). ``adapt_movement_scale``
    (the official ``--adapt_scale``) matters only in relative mode. The initial driving frame is frame 0, or
    ``best_frame`` (an index, or ``"find"`` for ``find_best_frame``): the official demo then animates forward from
    it and backward to the start, each pass relative to that frame, which is the same as every frame relative to
    it, in order; ``detector`` is the landmark backend ``"find"`` uses. With ``"find"``, a one-shot iterator of
    frames is held in memory (the search needs them all first); a tensor, list or re-iterable clip is read twice.
    An index into a stream holds only the frames up to it. ``batch_size`` defaults to ``default_batch_size``.
    ``autocast`` (default: on a GPU only) runs the networks in mixed precision: ``True`` picks
    ``gpu.inference_dtype`` (fp16 on a GPU, bf16 on a CPU), or name ``torch.float16`` / ``torch.bfloat16``; key point
    normalisation stays float32. fp16 rounds 8 times finer than bf16 (README, "Reenactment"); where it overflows (a
    non-finite output) a warning says so and that batch and the rest run in bf16 (fp32 on GPUs without bf16). On a
    GPU the model's networks are converted to channels-last in place (same values), and cuDNN autotunes its
    convolutions during each step unless ``torch.backends.cudnn.deterministic`` is set. ``autocast=True`` on a CPU
    runs the generator in bf16 while the key point detector stays fp32: no faster than the fp32 default since the
    fp32 convolutions run by NNPACK (0.238 vs 0.203 s/frame on a 2-core AVX-512 EPYC with bf16 instructions,
    2026-12-07), and its results differ from fp32 by up to 2e-3 on bench/reenact.py's random network but by up to
    0.23 on one with BatchNorm statistics from real frames (README): check it on the released weights before relying
    on it; fp16 on a CPU has no fast kernels (hundreds of times slower).

    ``compile`` (off by default) runs the key point detector and the generator's per-frame part (dense motion,
    warping, decoder) through ``torch.compile`` (``gpu.compile_mode``: True is ``"reduce-overhead"`` on a GPU, i.e.
    inductor's kernels replayed as CUDA graphs; or name a mode). Every batch is padded to ``batch_size`` frames
    (the last one with copies of its last frame, cut off again) so there is one shape to compile. The first batch
    pays the compilation (about a minute for the small test network on one CPU core), later calls with the same
    model, batch size and precision reuse it. It is for the GPU, where ``make gpu-check`` measures it against the
    eager path (bench/reenact.py); on a CPU it gives up NNPACK and the per-frame threads of the default path.
    Arguments are checked when the first batch is asked for (this is a generator).
    """
    device = model.device
    src = _source_tensor(model, source)
    dtype = _autocast_dtype(autocast, device)
    mode = compile_mode(compile, device)
    if mode is not None and device.type == "cpu":
        warnings.warn("compile on a CPU runs plain convolutions instead of NNPACK, frames in one batch instead of "
                      "side by side: slower than the default, and a minute or more to compile; it is meant for a "
                      "GPU", stacklevel=2)
    if dtype is not None and device.type == "cpu":
        if dtype == torch.float16:
            warnings.warn("fp16 autocast on a CPU has no fast kernels (hundreds of times slower than fp32): use "
                          "autocast=torch.bfloat16 or the fp32 default", stacklevel=2)
        elif not cpu_has_native_bf16():
            warnings.warn("this CPU has no bf16 instructions: autocast=True will be slower than fp32", stacklevel=2)
    if batch_size is None:
        batch_size = default_batch_size(model, src.shape[2], src.shape[3])
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(best_frame, str):
        if best_frame not in ("find", "auto"):
            raise ValueError(f"best_frame must be an index, 'find' or None, got {best_frame!r}")
        if not isinstance(driving, torch.Tensor) and iter(driving) is driving:
            # a one-shot iterator: the search and the animation both need the frames, so keep them
            driving = torch.cat(list(_frame_batches(driving, batch_size)))
        # a tensor, list or re-iterable clip (e.g. prepare.DrivingClip) is read twice instead
        best_frame = find_best_frame(src, driving, detector=detector)
    initial_index = int(best_frame or 0)
    if initial_index < 0:
        raise ValueError(f"best_frame must be >= 0, got {initial_index}")

    from facesynth.gpu import autocast as amp

    layout = _memory_format(device)
    if layout is not torch.contiguous_format:     # both networks' 4-D weights, in place (same values)
        model.kp_detector.to(memory_format=layout)
        model.generator.to(memory_format=layout)
    src = src.contiguous(memory_format=layout)

    # inference_mode (and cuDNN autotuning) around each step only: a generator must not leave them switched on
    # while its caller runs
    @torch.inference_mode()
    def kp_of(frames: torch.Tensor, dtype: torch.dtype | None, driving: bool = False) -> KP:
        # autocast only on a GPU: cheap on a CPU, and its precision moves every pixel
        with cudnn_autotune(device), amp(device, enabled=dtype is not None and device.type != "cpu", dtype=dtype):
            if mode is None or not driving:     # the source's key points (once per video) run eagerly
                return {k: v.float() for k, v in model.kp_detector(frames).items()}
            n = frames.shape[0]
            kp = call_compiled(_detect, mode, model.kp_detector,
                               pad_batch(frames, batch_size).contiguous(memory_format=layout))
        # copies: a CUDA graph's outputs are overwritten by its next replay
        return {k: v[:n].to(torch.float32, copy=True) for k, v in kp.items()}

    @torch.inference_mode()
    def encode(dtype: torch.dtype | None) -> torch.Tensor:
        with cudnn_autotune(device), amp(device, enabled=dtype is not None, dtype=dtype):
            return _encode(model.generator, src)

    # what every frame needs, in the precision ``dtype`` (None: fp32), recomputed if fp16 overflows
    state: dict = {"dtype": dtype, "features": encode(dtype), "kp_source": kp_of(src, dtype)}

    def set_initial(kp_initial: KP) -> None:
        state["kp_initial"] = kp_initial
        state["scale"] = movement_scale(state["kp_source"], kp_initial) if (relative and adapt_movement_scale) else 1
        with torch.inference_mode():
            state["inverse_initial"] = (torch.inverse(kp_initial["jacobian"])
                                        if relative and "jacobian" in kp_initial else None)

    batches = _frame_batches(driving, batch_size)
    # the initial frame's key points are needed before the first output: buffer the frames up to it; its batch's
    # key points are computed once, for it and for that batch's frames
    buffered: list[tuple[torch.Tensor, KP | None]] = []     # a batch, and its key points if computed (in ``dtype``)
    seen = 0
    initial_at: int | None = None      # the initial frame's index in its batch
    for batch in batches:
        batch = model._frames(batch, "driving").contiguous(memory_format=layout)
        if seen + batch.shape[0] > initial_index:
            kp_batch = kp_of(batch, dtype, driving=True)
            initial_at = initial_index - seen
            if dtype == torch.float16:
                state["initial_batch"] = batch      # for a fallback to recompute its key points
            set_initial({k: v[initial_at:initial_at + 1] for k, v in kp_batch.items()})
            buffered.append((batch, kp_batch))
            break
        buffered.append((batch, None))
        seen += batch.shape[0]
    if initial_at is None:
        if seen == 0:
            return
        raise ValueError(f"best_frame {initial_index} is past the driving video's {seen} frames")

    @torch.inference_mode()
    def step(frames: torch.Tensor, kp_driving: KP | None) -> torch.Tensor:
        dtype = state["dtype"]
        if kp_driving is None:
            kp_driving = kp_of(frames, dtype, driving=True)
        kp_norm = _normalize(state["kp_source"], kp_driving, state["kp_initial"], state["scale"], relative, relative,
                             state["inverse_initial"])
        with cudnn_autotune(device), amp(device, enabled=dtype is not None, dtype=dtype):
            if mode is None:
                return _generate(model.generator, src, state["features"], kp_norm,
                                 state["kp_source"]).float().contiguous()
            prediction = call_compiled(_generate, mode, model.generator, src, state["features"],
                                       {k: pad_batch(v, batch_size) for k, v in kp_norm.items()}, state["kp_source"])
        # a copy: a CUDA graph's output is overwritten by its next replay
        return prediction[:frames.shape[0]].to(torch.float32, copy=True).contiguous()

    def run(frames: torch.Tensor, kp_driving: KP | None = None) -> torch.Tensor:
        if state["dtype"] != dtype:
            kp_driving = None       # buffered key points in the precision before a fallback: computed again
        prediction = step(frames, kp_driving)
        if state["dtype"] == torch.float16 and not bool(torch.isfinite(prediction).all()):
            # fp16 tops out at 65504: an activation went past it. bf16 has fp32's range (fp32 where it is slow)
            fallback = fp16_fallback(device)
            warnings.warn("fp16 overflowed in the networks (non-finite output): this batch and the rest run in "
                          f"{precision_name(fallback)}; pass autocast=False for fp32 from the start",
                          stacklevel=2)
            state.update(dtype=fallback, features=encode(fallback), kp_source=kp_of(src, fallback))
            # the initial frame's key points from its batch, as in a run in that precision from the start
            set_initial({k: v[initial_at:initial_at + 1]
                         for k, v in kp_of(state.pop("initial_batch"), fallback, driving=True).items()})
            prediction = step(frames, None)
        return prediction

    while buffered:
        yield run(*buffered.pop(0))
    for batch in batches:
        yield run(model._frames(batch, "driving").contiguous(memory_format=layout))


def _autocast_dtype(autocast: bool | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """The dtype ``iter_animate`` runs the networks in under autocast, None for fp32."""
    if isinstance(autocast, torch.dtype):
        if autocast not in (torch.float16, torch.bfloat16):
            raise ValueError(f"autocast takes True, False, None, torch.float16 or torch.bfloat16, got {autocast}")
        return autocast
    if autocast is None:
        autocast = device.type == "cuda"
    return inference_dtype(device) if autocast else None


def animate(model, source, driving: Frames, relative: bool = True, adapt_movement_scale: bool = True,
            batch_size: int | None = None, best_frame: int | str | None = None,
            autocast: bool | torch.dtype | None = None, detector="auto", compile: bool | str = False) -> torch.Tensor:
    """The whole animation as one (T, C, H, W) float32 tensor in [0, 1] on the CPU (see ``iter_animate``)."""
    parts = [p.cpu() for p in iter_animate(model, source, driving, relative=relative,
                                           adapt_movement_scale=adapt_movement_scale, batch_size=batch_size,
                                           best_frame=best_frame, autocast=autocast, detector=detector,
                                           compile=compile)]
    if not parts:
        raise ValueError("the driving video has no frames")
    return torch.cat(parts)

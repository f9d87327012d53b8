"""FOMM animation (normalize_kp, animate, find_best_frame) against the official code.

Reference data in tests/data/fomm/animate.pt (see tests/data/fomm/README.md): six driving frames, the official
key points, the official ``normalize_kp`` for every flag combination, and the official per-frame
``make_animation`` output (relative + adapt scale, absolute, and the demo's best-frame forward/backward passes),
for the small config and checkpoint that tests/test_reenact_model.py uses.
"""
from __future__ import annotations

import importlib
import itertools

import numpy as np
import pytest
import torch

from fomm_reference import DATA, as_frames

from facesynth.reenact import animate, find_best_frame, iter_animate, load_fomm, normalize_kp
from facesynth.reenact.animate import hull_area, movement_scale



@pytest.fixture(scope="module")
def ref() -> dict:
    return torch.load(DATA / "animate.pt", weights_only=True)


@pytest.fixture(scope="module")
def source() -> torch.Tensor:
    return as_frames(torch.load(DATA / "reference.pt", weights_only=True)["source"])


@pytest.fixture(scope="module")
def driving(ref) -> torch.Tensor:
    return as_frames(ref["driving"])


@pytest.fixture(scope="module")
def model():
    return load_fomm(DATA / "small-cpk.pt", config=DATA / "small.yaml", device="cpu")


def first(kp: dict, i: int = 0) -> dict:
    return {k: v[i:i + 1] for k, v in kp.items()}


def assert_close_to_official(ours: torch.Tensor, official: torch.Tensor, max_tol=5e-4, mean_tol=2e-5):
    diff = (ours - official).abs()
    assert diff.max().item() <= max_tol and diff.mean().item() <= mean_tol, \
        f"max {diff.max().item():.3g}, mean {diff.mean().item():.3g}"


# --- normalize_kp --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("initial", [0, 3])
@pytest.mark.parametrize("adapt,movement,jacobian", list(itertools.product((False, True), repeat=3)))
def test_normalize_kp_equals_official_for_every_flag(ref, initial, adapt, movement, jacobian):
    expected = ref[f"norm_init{initial}_a{int(adapt)}_m{int(movement)}_j{int(jacobian)}"]
    # batched over the six driving frames; the official function was called once per frame
    ours = normalize_kp(ref["kp_source"], ref["kp_driving"], first(ref["kp_driving"], initial),
                        adapt_movement_scale=adapt, use_relative_movement=movement, use_relative_jacobian=jacobian)
    for key in ("value", "jacobian"):
        torch.testing.assert_close(ours[key], expected[key], rtol=0, atol=1e-6)
    if not movement:   # absolute: the driving key points themselves
        assert ours["value"] is ref["kp_driving"]["value"]


def test_movement_scale_is_the_ratio_of_hull_sizes(ref):
    from scipy.spatial import ConvexHull
    src, init = ref["kp_source"]["value"][0].numpy(), ref["kp_driving"]["value"][0].numpy()
    expected = np.sqrt(ConvexHull(src).volume) / np.sqrt(ConvexHull(init).volume)
    assert movement_scale(ref["kp_source"], first(ref["kp_driving"])) == pytest.approx(expected, rel=1e-12)
    assert hull_area(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.5, 0.2]])) == pytest.approx(1.0)


def test_degenerate_key_points_give_a_clear_error(ref):
    flat = {"value": torch.tensor([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]]), "jacobian": torch.eye(2).repeat(1, 3, 1, 1)}
    with pytest.raises(ValueError, match="convex hull"):
        normalize_kp(flat, flat, flat, adapt_movement_scale=True, use_relative_movement=True)


# --- animate ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,relative,adapt", [("relative", True, True), ("absolute", False, False)])
def test_animate_equals_official_make_animation(model, ref, source, driving, mode, relative, adapt):
    video = animate(model, source, driving, relative=relative, adapt_movement_scale=adapt, batch_size=4)
    assert video.shape == driving.shape and video.dtype == torch.float32
    s = ref["prediction_stride"]   # the fixture keeps every s-th row and column (size)
    assert_close_to_official(video[:, :, ::s, ::s], ref["predictions"][mode])


def test_channels_last_layout_as_on_a_gpu_equals_official_make_animation(ref, source, driving, monkeypatch):
    """On a GPU the networks run channels-last; forced here on the CPU: same official numbers, NCHW output."""
    animate_module = importlib.import_module("facesynth.reenact.animate")     # the package exports the function
    monkeypatch.setattr(animate_module, "_memory_format", lambda device: torch.channels_last)
    fresh = load_fomm(DATA / "small-cpk.pt", config=DATA / "small.yaml", device="cpu")
    video = animate(fresh, source, driving, batch_size=4)
    assert video.is_contiguous()
    convs = [m for m in fresh.generator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    s = ref["prediction_stride"]
    assert_close_to_official(video[:, :, ::s, ::s], ref["predictions"]["relative"])


def test_best_frame_equals_the_official_forward_and_backward_passes(model, ref, source, driving):
    i = ref["best_frame"]
    video = model.animate(source[0], driving, best_frame=i, batch_size=4)
    s = ref["prediction_stride"]
    assert_close_to_official(video[:, :, ::s, ::s], ref["predictions"]["best3"])


def per_frame(model, source, driving, relative=True, adapt=True, initial=0):
    """The official demo loop, frame by frame, with our key point detector and generator."""
    kp_source = model.keypoints(source)
    kp_initial = model.keypoints(driving[initial:initial + 1])
    out = []
    for t in range(driving.shape[0]):
        kp = normalize_kp(kp_source, model.keypoints(driving[t:t + 1]), kp_initial, adapt_movement_scale=adapt,
                          use_relative_movement=relative, use_relative_jacobian=relative)
        out.append(model.generate(source, kp_source, kp)["prediction"])
    return torch.cat(out)


@pytest.mark.parametrize("relative", [True, False])
def test_batched_equals_frame_by_frame(model, source, driving, relative):
    expected = per_frame(model, source, driving, relative=relative, adapt=relative)
    video = animate(model, source, driving, relative=relative, adapt_movement_scale=relative,
                    batch_size=driving.shape[0])
    assert (video - expected).abs().max().item() <= 1e-5


def test_batch_size_does_not_change_the_result(model, source, driving):
    videos = [animate(model, source, driving, batch_size=b) for b in (1, 2, 4, 6, 16)]
    for v in videos[1:]:
        assert (v - videos[0]).abs().max().item() <= 1e-5
    assert (animate(model, source, driving) - videos[0]).abs().max().item() <= 1e-5   # default batch size


def test_streamed_frames_equal_the_tensor(model, source, driving):
    expected = animate(model, source, driving, batch_size=4)
    as_tensors = animate(model, source, (f for f in driving), batch_size=4)
    as_uint8 = animate(model, source, (f.permute(1, 2, 0).mul(255).round().byte().numpy() for f in driving),
                       batch_size=4)
    chunks = animate(model, source, iter([driving[:1], driving[1:4], driving[4:]]), batch_size=4)
    for video in (as_tensors, as_uint8, chunks):
        assert (video - expected).abs().max().item() <= 1e-5
    # best frame from a stream: frames are buffered until the initial one arrives
    torch.testing.assert_close(animate(model, source, iter(list(driving)), best_frame=3, batch_size=2),
                               animate(model, source, driving, best_frame=3, batch_size=2), rtol=0, atol=1e-5)


def test_iter_animate_yields_batches_and_leaves_inference_mode_off(model, source, driving):
    batches = iter_animate(model, source, (f for f in driving), batch_size=4)
    first_batch = next(batches)
    assert not torch.is_inference_mode_enabled()
    assert first_batch.shape == (4, *driving.shape[1:])
    rest = list(batches)
    assert [b.shape[0] for b in rest] == [2]
    assert 0 <= first_batch.min().item() and first_batch.max().item() <= 1


def test_animate_rejects_bad_input(model, source, driving):
    with pytest.raises(ValueError, match="one image"):
        animate(model, source.repeat(2, 1, 1, 1), driving)
    with pytest.raises(ValueError, match="past the driving"):
        animate(model, source, driving, best_frame=6)
    with pytest.raises(ValueError, match="no frames"):
        animate(model, source, iter([]))
    with pytest.raises(ValueError):
        animate(model, source, driving[0])


# --- find_best_frame -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dlib_ready():
    pytest.importorskip("dlib")
    from facesynth.extract.backends import available_backends
    if "dlib" not in available_backends():
        pytest.skip("dlib's landmark model is not installed")


@pytest.mark.slow
def test_find_best_frame_picks_the_source_among_other_faces(ref, dlib_ready):
    frames = list(ref["driving"].numpy())          # uint8 RGB, a talking head
    portrait = torch.load(DATA / "reference.pt", weights_only=True)["source"][0].numpy()
    assert find_best_frame(portrait, frames[:4] + [portrait] + frames[4:], detector="dlib") == 4
    # a driving frame as the source: that frame is the closest (distance 0)
    assert find_best_frame(frames[2], frames, detector="dlib") == 2
    # float tensors work too
    assert find_best_frame(as_frames(ref["driving"][2:3]), as_frames(ref["driving"]), detector="dlib") == 2


@pytest.mark.slow
def test_frames_without_a_face_are_skipped(ref, dlib_ready):
    frames = list(ref["driving"].numpy())
    blank = np.zeros_like(frames[0])
    assert find_best_frame(frames[3], [blank, frames[0], blank, frames[3]], detector="dlib") == 3
    from facesynth.errors import NoFaceError
    with pytest.raises(NoFaceError):
        find_best_frame(blank, frames, detector="dlib")


def test_animate_finds_the_best_frame(model, source, driving, monkeypatch):
    import sys
    module = sys.modules["facesynth.reenact.animate"]   # the package's ``animate`` attribute is the function
    calls = []
    monkeypatch.setattr(module, "find_best_frame", lambda s, d, detector: calls.append((d, detector)) or 3)
    expected = animate(model, source, driving, best_frame=3, batch_size=4)
    # a one-shot stream is gathered first; a list (re-iterable) is read twice
    video = animate(model, source, (f for f in driving), best_frame="find", batch_size=4, detector="dlib")
    assert isinstance(calls[0][0], torch.Tensor) and calls[0][0].shape[0] == 6 and calls[0][1] == "dlib"
    torch.testing.assert_close(video, expected, rtol=0, atol=1e-5)
    frames = list(driving)
    torch.testing.assert_close(animate(model, source, frames, best_frame="find", batch_size=4), expected,
                               rtol=0, atol=1e-5)
    assert calls[1][0] is frames


def test_cpu_autocast_runs_the_generator_in_bf16_close_to_fp32(model, ref, source, driving):
    fp32 = animate(model, source, driving, batch_size=3)
    bf16 = animate(model, source, driving, batch_size=3, autocast=True)
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    diff = (bf16 - fp32).abs()
    assert 0 < diff.max() < 0.05 and diff.mean() < 5e-3, f"max {diff.max():.3g}, mean {diff.mean():.3g}"
    s = ref["prediction_stride"]
    assert_close_to_official(fp32[:, :, ::s, ::s], ref["predictions"]["relative"])   # the default: official fp32


def test_fp16_autocast_rounds_finer_than_bf16(model, ref, source, driving):
    """The GPU default is fp16 (``gpu.inference_dtype``); on this CPU fp16 has no fast kernels but the same
    rounding, so its distance to the official fp32 output can be measured here: max 5.7e-4 against bf16's 4.9e-3."""
    s = ref["prediction_stride"]
    official = ref["predictions"]["relative"]
    with pytest.warns(UserWarning, match="fp16 autocast on a CPU"):
        fp16 = animate(model, source, driving, batch_size=3, autocast=torch.float16)
    bf16 = animate(model, source, driving, batch_size=3, autocast=torch.bfloat16)
    d16, d_bf = (fp16[:, :, ::s, ::s] - official).abs(), (bf16[:, :, ::s, ::s] - official).abs()
    assert fp16.dtype == torch.float32 and fp16.shape == driving.shape
    assert 0 < d16.max() <= 2e-3 and d16.mean() <= 3e-4, f"fp16: max {d16.max():.3g}, mean {d16.mean():.3g}"
    assert d16.max() * 4 <= d_bf.max() and d16.mean() * 4 <= d_bf.mean(), \
        f"fp16 max {d16.max():.3g} mean {d16.mean():.3g}; bf16 max {d_bf.max():.3g} mean {d_bf.mean():.3g}"


def test_fp16_overflow_warns_and_the_rest_runs_as_a_run_in_the_fallback_precision(source, driving):
    """Weights scaled so that activations pass fp16's 65504 (2.6e6 in fp32): the first batch's output is not
    finite, so it and the next one run again in fp32 (a CPU; bf16 on GPUs with bf16), equal to a fp32 run."""
    model = load_fomm(DATA / "small-cpk.pt", config=DATA / "small.yaml", device="cpu")
    with torch.no_grad():
        model.generator.bottleneck[2].conv2.weight.mul_(1e7)
    for best_frame in (None, 4):         # 4: the initial frame in the second batch, buffered with its key points
        fp32 = animate(model, source, driving, batch_size=3, autocast=False, best_frame=best_frame)
        with pytest.warns(UserWarning) as caught:
            fp16 = animate(model, source, driving, batch_size=3, autocast=torch.float16, best_frame=best_frame)
        messages = [str(w.message) for w in caught]
        assert sum("fp16 overflowed" in m and "run in fp32" in m for m in messages) == 1, messages
        assert torch.isfinite(fp16).all() and torch.equal(fp16, fp32)


@pytest.mark.parametrize("device, autocast, dtype", [
    ("cpu", None, None), ("cpu", False, None), ("cpu", True, torch.bfloat16), ("cuda", None, torch.float16),
    ("cuda", True, torch.float16), ("cuda", False, None), ("cuda", torch.bfloat16, torch.bfloat16),
    ("cpu", torch.float16, torch.float16)])
def test_autocast_argument_picks_the_inference_dtype(device, autocast, dtype):
    from facesynth.reenact.animate import _autocast_dtype

    assert _autocast_dtype(autocast, torch.device(device)) == dtype


def test_autocast_rejects_other_dtypes(model, source, driving):
    with pytest.raises(ValueError, match="torch.float16 or torch.bfloat16"):
        animate(model, source, driving, autocast=torch.float64)


def test_the_frames_decoded_side_by_side_keep_the_callers_modes(model, source, driving, monkeypatch):
    """On a CPU with 2+ torch threads the decoder runs frames in worker threads with one torch thread each: the
    workers see the caller's inference and autocast modes, and the thread count is restored afterwards."""
    import importlib
    import threading

    from facesynth.gpu import cpu_autocast_state

    animate_module = importlib.import_module("facesynth.reenact.animate")   # the package exports animate()

    seen = []
    real = animate_module._decode

    def spy(generator, frame):
        seen.append((threading.current_thread().name, torch.is_inference_mode_enabled(),
                     cpu_autocast_state(), torch.get_num_threads()))
        return real(generator, frame)

    monkeypatch.setattr(animate_module, "_decode", spy)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for autocast, dtype in ((False, torch.float32), (True, torch.bfloat16)):
            seen.clear()
            video = animate(model, source, driving, batch_size=3, autocast=autocast)
            assert video.dtype == torch.float32 and video.shape == driving.shape
            assert len(seen) == driving.shape[0]
            assert all(name.startswith("facesynth-frames") for name, *_ in seen)
            assert all(inference and amp[0] == autocast and n == 1 for _, inference, amp, n in seen)
            assert all(amp[1] == dtype for _, _, amp, _ in seen) if autocast else True
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_compile_traces_each_network_whole_once_and_gives_the_official_numbers(ref, source, driving, monkeypatch):
    """``compile=True`` (torch.compile; on a GPU with CUDA graphs, which a graph break would split), with the
    GPU's channels-last layout forced on this CPU: one graph for the key point detector and one for the generator,
    no graph break, nothing compiled again for the padded last batch (6 frames in batches of 4) or a second video
    with another initial frame; the official outputs as the eager path gives them. About a minute on 2 cores."""
    from torch._dynamo.utils import counters

    animate_module = importlib.import_module("facesynth.reenact.animate")
    monkeypatch.setattr(animate_module, "_memory_format", lambda device: torch.channels_last)
    fresh = load_fomm(DATA / "small-cpk.pt", config=DATA / "small.yaml", device="cpu")
    torch._dynamo.reset()
    counters.clear()
    with pytest.warns(UserWarning, match="compile on a CPU"):
        video = animate(fresh, source, driving, batch_size=4, compile=True)
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 2
    s = ref["prediction_stride"]
    assert_close_to_official(video[:, :, ::s, ::s], ref["predictions"]["relative"])
    eager = animate(fresh, source, driving, batch_size=4)
    assert (video - eager).abs().max() <= 1e-5
    with pytest.warns(UserWarning, match="compile on a CPU"):
        best = animate(fresh, source, driving, batch_size=4, compile=True, best_frame=ref["best_frame"])
    assert counters["stats"]["unique_graphs"] == 2 and dict(counters["graph_break"]) == {}
    assert_close_to_official(best[:, :, ::s, ::s], ref["predictions"]["best3"])
    with pytest.raises(ValueError, match="compile takes"):
        animate(fresh, source, driving, compile="fastest")

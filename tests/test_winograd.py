"""Winograd convolutions (facesynth.winograd) and the FOMM blocks' inference paths that use them."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facesynth import winograd


@pytest.mark.parametrize("m,r", [(4, 3), (2, 3), (4, 2), (3, 2), (6, 3)])
def test_matrices_compute_the_1d_correlation(m, r):
    AT, G, BT = winograd.winograd_matrices(m, r)
    assert AT.shape == (m, m + r - 1) and G.shape == (m + r - 1, r) and BT.shape == (m + r - 1, m + r - 1)
    gen = torch.Generator().manual_seed(m * 10 + r)
    d = torch.randn(m + r - 1, dtype=torch.float64, generator=gen)
    g = torch.randn(r, dtype=torch.float64, generator=gen)
    y = AT @ ((G @ g) * (BT @ d))
    expected = torch.stack([(d[i:i + r] * g).sum() for i in range(m)])
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n,c,co,h,w,r,pad", [
    (1, 8, 5, 13, 9, 3, 1),        # sizes that are not multiples of the tile
    (2, 16, 7, 12, 12, 3, 0),      # no padding, two frames
    (3, 6, 4, 9, 11, 2, 1),        # a 2x2 kernel (the phase convolutions)
    (1, 4, 3, 5, 4, 2, 0),
])
def test_winograd_conv2d_equals_conv2d(n, c, co, h, w, r, pad):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=gen)
    weight = torch.randn(co, c, r, r, generator=gen)
    bias = torch.randn(co, generator=gen)
    expected = F.conv2d(x.double(), weight.double(), bias.double(), padding=pad)
    for m in (2, 4):
        y = winograd.winograd_conv2d(x, winograd.transform_kernel(weight, m), bias, m, r, pad)
        assert y.shape == expected.shape and y.dtype == torch.float32
        err = (y.double() - expected).abs().max() / expected.abs().max()
        assert err < 1e-5, (m, err)
    # float64 through the same transforms: exact up to float64 rounding
    y64 = winograd.winograd_conv2d(x.double(), winograd.transform_kernel(weight.double(), 4), bias.double(), 4, r, pad)
    torch.testing.assert_close(y64, expected, rtol=1e-10, atol=1e-10)


def _big_conv(c=256, co=64, seed=1):
    torch.manual_seed(seed)
    conv = nn.Conv2d(c, co, 3, padding=1)
    x = torch.randn(2, c, 40, 36)
    return conv, x


def test_conv2d_uses_winograd_only_where_it_pays(monkeypatch):
    monkeypatch.setattr(winograd, "NNPACK_ENABLED", False)       # NNPACK would take these sizes first
    conv, x = _big_conv()
    calls = []
    real = winograd.winograd_conv2d
    monkeypatch.setattr(winograd, "winograd_conv2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    expected = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    with torch.inference_mode():
        y = winograd.conv2d(x, conv)
    assert calls == [1]
    # F(4x4, 3x3) over 256 channels: about 1e-5 of the largest output from the exact result (0.98-1.24e-5 for
    # seeds 1-3 on an Intel Xeon, under 1e-5 from oneDNN's for seed 1 on an AMD EPYC: the sums run in another order)
    assert (y.double() - expected).abs().max() / expected.abs().max() < 2e-5
    # with autograd, under autocast, with few channels or few tiles: the plain convolution
    y = winograd.conv2d(x, conv)
    assert y.requires_grad and calls == [1]
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert winograd.conv2d(x, conv).dtype == torch.bfloat16
        winograd.conv2d(x[:, :128], nn.Conv2d(128, 8, 3, padding=1))
        winograd.conv2d(x[:, :, :8, :8], conv)
    assert calls == [1]


needs_nnpack = pytest.mark.skipif(not winograd.nnpack_available(), reason="this PyTorch build has no NNPACK")


needs_direct = pytest.mark.skipif(winograd.nnpack_direct() is None,
                                  reason="NNPACK's nnp_convolution_inference is not exported by this PyTorch build")


def _spy_on_nnpack(monkeypatch, direct: bool) -> list:
    """Record the input shape of every per-frame NNPACK call, by the direct binding or by PyTorch's op."""
    calls = []
    if direct:
        real = winograd._nnpack_direct_conv
        monkeypatch.setattr(winograd, "_nnpack_direct_conv", lambda fn, x, *a: calls.append(x.shape) or real(fn, x, *a))
    else:
        monkeypatch.setattr(winograd, "_direct_state", [None])          # as if the symbol were missing
    real_op = torch._nnpack_spatial_convolution
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", lambda *a: calls.append(a[0].shape) or real_op(*a))
    return calls


@needs_nnpack
@pytest.mark.parametrize("direct", [False, pytest.param(True, marks=needs_direct)])
@pytest.mark.parametrize("r, pad, tol", [(3, 1, 5e-5), (7, 3, 1e-6), (2, 0, 1e-6), (7, 0, 1e-6)])
def test_conv2d_uses_nnpack_frame_by_frame_where_it_pays(monkeypatch, r, pad, tol, direct):
    """3x3 kernels by NNPACK's Winograd F(6x6, 3x3), the others by its FFT: within ``tol`` of the direct
    convolution relative to the largest output, one call per frame, with the caller's thread count restored;
    by the direct binding (a 3x3 kernel's transform cached on the module) or by PyTorch's op."""
    torch.manual_seed(r)
    conv = nn.Conv2d(24, 10, r, padding=pad)
    x = torch.randn(3, 24, 34, 31)
    calls = _spy_on_nnpack(monkeypatch, direct)
    expected = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=pad)
    threads = torch.get_num_threads()
    with torch.inference_mode():
        y = winograd.conv2d(x, conv)
    assert torch.get_num_threads() == threads
    assert calls == [(1, 24, 34, 31)] * 3
    assert y.shape == expected.shape and y.dtype == torch.float32
    assert (y.double() - expected).abs().max() / expected.abs().max() < tol
    assert ("nnpack-weight" in conv.__dict__.get("_facesynth_cache", {})) == (direct and r == 3)


@needs_nnpack
@needs_direct
def test_direct_nnpack_rebuilds_the_kernel_transform_when_the_weight_changes(monkeypatch):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 3, padding=1, bias=False)
    x = torch.randn(2, 8, 30, 30)
    with torch.inference_mode():
        first = winograd.conv2d(x, conv)
    cached = conv.__dict__["_facesynth_cache"]["nnpack-weight"][2]
    with torch.no_grad():
        conv.weight.mul_(-2.0)                                           # in place: same tensor, new version
    with torch.inference_mode():
        second = winograd.conv2d(x, conv)
    assert conv.__dict__["_facesynth_cache"]["nnpack-weight"][2] is not cached
    torch.testing.assert_close(second, -2.0 * first, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(second, F.conv2d(x, conv.weight, None, padding=1), rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(winograd._local, "workspace", None, raising=False)
    with torch.inference_mode():
        winograd.conv2d(x[:1], conv)                                      # one frame: on this thread
    kept = winograd._local.workspace
    with torch.inference_mode():
        winograd.conv2d(x[1:], conv)
    assert kept.numel() > 0 and winograd._local.workspace is kept          # the thread keeps its workspace


@needs_nnpack
@needs_direct
def test_direct_nnpack_calls_show_in_the_profiler():
    """A ctypes call is no aten op: without its label the profile (bench/reenact.py) would lose most of its time."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 3, padding=1)
    x = torch.randn(2, 8, 30, 30)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                              # frames on this thread
    try:
        with torch.inference_mode():
            winograd.conv2d(x, conv)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                winograd.conv2d(x, conv)
    finally:
        torch.set_num_threads(threads)
    calls = {e.key: e.count for e in prof.key_averages()}
    assert calls.get(winograd.PROFILER_LABEL) == 2


@needs_nnpack
def test_conv2d_keeps_nnpack_for_what_it_does_well(monkeypatch):
    calls = _spy_on_nnpack(monkeypatch, direct=winograd.nnpack_direct() is not None)
    conv = nn.Conv2d(16, 8, 3, padding=1)
    x = torch.randn(2, 16, 32, 32)
    y = winograd.conv2d(x, conv)                                        # autograd: the plain convolution
    assert y.requires_grad and calls == []
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert winograd.conv2d(x, conv).dtype == torch.bfloat16
        winograd.conv2d(x[:, :, :20, :20], conv)                          # 400 output pixels: batched oneDNN
        winograd.conv2d(x, nn.Conv2d(16, 8, 1))                           # 1x1: a matrix product already
        winograd.conv2d(x.double(), nn.Conv2d(16, 8, 3, padding=1).double())
        assert calls == []
        monkeypatch.setattr(winograd, "NNPACK_ENABLED", False)
        winograd.conv2d(x, conv)
        assert calls == []


@needs_nnpack
def test_conv2d_falls_back_when_nnpack_refuses(monkeypatch):
    def refuse(*args):
        raise RuntimeError("NNPACK SpatialConvolution_updateOutput failed")

    monkeypatch.setattr(winograd, "_nnpack_direct_conv", lambda *a: None)     # the direct call refuses ...
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", refuse)         # ... and so does PyTorch's op
    conv = nn.Conv2d(16, 8, 3, padding=1)
    x = torch.randn(2, 16, 32, 32)
    with torch.inference_mode():
        y = winograd.conv2d(x, conv)
    torch.testing.assert_close(y, F.conv2d(x, conv.weight, conv.bias, padding=1), rtol=1e-4, atol=1e-5)


def test_map_frames_runs_side_by_side_in_order_with_the_callers_modes():
    import threading

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            seen = winograd.map_frames(lambda i: (i, threading.current_thread().name, torch.get_num_threads(),
                                                  torch.is_inference_mode_enabled()), range(5))
        assert [s[0] for s in seen] == list(range(5))
        assert all(name.startswith("facesynth-frames") and n == 1 and inference for _, name, n, inference in seen)
        assert torch.get_num_threads() == 2
        # callers on several threads at once, with different frame counts, share the pool safely
        from concurrent.futures import ThreadPoolExecutor

        def call(n):
            torch.set_num_threads(2)
            return winograd.map_frames(lambda i: i * i, range(n))

        with ThreadPoolExecutor(3) as callers:
            results = list(callers.map(call, [2, 7, 3, 5, 2, 9]))
        assert results == [[i * i for i in range(n)] for n in [2, 7, 3, 5, 2, 9]]
        torch.set_num_threads(1)
        seen = winograd.map_frames(lambda i: threading.current_thread().name, range(3))
        assert seen == [threading.current_thread().name] * 3                 # one thread: in order, here
    finally:
        torch.set_num_threads(threads)


def test_transformed_kernel_follows_the_weight():
    conv, x = _big_conv()

    def check():
        with torch.inference_mode():
            y = winograd.conv2d(x, conv)
        expected = F.conv2d(x, conv.weight, conv.bias, padding=1)
        assert (y - expected).abs().max() <= 3e-5 * expected.abs().max()

    check()
    check()                                                 # from the cache
    with torch.no_grad():
        conv.weight.mul_(2)                                 # in place: the version counter moves
        conv.bias.zero_()
    check()
    conv.weight = nn.Parameter(torch.randn_like(conv.weight))   # replaced by a new tensor
    check()


def test_resblock_inference_equals_the_training_graph():
    from facesynth.reenact.model import ResBlock

    torch.manual_seed(0)
    block = ResBlock(256)
    with torch.no_grad():
        for norm in (block.norm1, block.norm2):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.2, 0.2)
    block.eval()
    x = torch.randn(1, 256, 32, 32)
    expected = block(x)                                     # autograd on: the official op sequence
    with torch.inference_mode():
        y = block(x)
    assert "_facesynth_cache" in block.conv1.__dict__      # the fast path ran
    assert (y - expected).abs().max() / expected.abs().max() < 1e-5


@pytest.mark.parametrize("nnpack", [True, False])
def test_upblock_inference_equals_upsampling_then_conv(monkeypatch, nnpack):
    """BatchNorm folded into the four phase kernels, run by NNPACK (FFT) or by Winograd F(4x4, 2x2)."""
    from facesynth.reenact.model import UpBlock

    monkeypatch.setattr(winograd, "NNPACK_ENABLED", nnpack)
    torch.manual_seed(0)
    block = UpBlock(256, 32).eval()
    with torch.no_grad():
        block.norm.running_mean.uniform_(-0.5, 0.5)
        block.norm.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 256, 48, 48)
    expected = block(x)
    with torch.inference_mode():
        y = block(x)
    cache = block.conv.__dict__["_facesynth_cache"]
    by_nnpack = nnpack and winograd.nnpack_available()
    assert "phases-folded" in cache and ("winograd-phases-folded-4" in cache) != by_nnpack
    assert ("phases-folded-3x3" in cache) == by_nnpack
    assert ("nnpack-phases-folded-3x3" in cache) == (by_nnpack and winograd.nnpack_direct() is not None)
    # NNPACK's F(6x6, 3x3) (about 1e-5 per conv), or Winograd F(4x4, 2x2)
    assert (y - expected).abs().max() / expected.abs().max() < (3e-5 if by_nnpack else 1e-5)


def _calibrated_vox256(frames):
    """vox-256 networks with random weights whose BatchNorm statistics are those of real frames and whose output
    spans [0, 1] (default statistics give an almost flat picture, which would hide any difference)."""
    from facesynth.reenact import FOMMConfig, build_generator, build_kp_detector, load_fomm

    torch.manual_seed(0)
    cfg = FOMMConfig.named("vox-256")
    kp, gen = build_kp_detector(cfg), build_generator(cfg)
    with torch.no_grad():
        for net in (kp, gen):
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.momentum = None                  # a cumulative average: one pass sets the batch statistics
            net.train()
        points = kp(frames)
        source_points = {k: v[:1].expand_as(v) for k, v in points.items()}
        gen(frames, points, source_points)
        kp.eval(), gen.eval()
        logits = torch.logit(gen(frames, points, source_points)["prediction"].clamp(1e-6, 1 - 1e-6))
        gen.final.weight.mul_(1.5 / logits.std())
        gen.final.bias.sub_(logits.mean()).mul_(1.5 / logits.std())
    return load_fomm({"kp_detector": kp.state_dict(), "generator": gen.state_dict()}, cfg, device="cpu")


@pytest.mark.slow
def test_fast_animate_equals_the_official_op_sequence_at_vox256():
    """The default CPU path (NNPACK or Winograd bottleneck and phase convolutions, folded BatchNorm, batched key
    points by the official op sequence, decoder per frame) against the official op sequence frame by frame, on a
    vox-256-sized model. (1.1e-4 max and 4.9e-6 mean on 2026-12-07; 3.2e-4 and 8.6e-6 with the key point
    detector's fast paths on as well.)"""
    from facesynth.media import iter_frames, read_image, to_tensor
    from facesynth.reenact import animate
    from facesynth.reenact.model import set_fast_inference
    from facesynth.samples import ensure_samples

    samples = ensure_samples()

    def square(image):
        return F.interpolate(to_tensor(image[:, :image.shape[0]]), size=(256, 256), mode="bilinear")

    source = square(read_image(samples.astronaut))
    driving = torch.cat([square(f) for i, (_, f) in zip(range(40), iter_frames(samples.talking_head))][::13])
    model = _calibrated_vox256(torch.cat([source, driving]))
    fast = animate(model, source, driving)
    assert fast.shape == (4, 3, 256, 256) and fast.std() > 0.1       # not a flat picture
    for net in (model.kp_detector, model.generator):
        set_fast_inference(net, False)                   # every inference path off: the official op sequence
    official = animate(model, source, driving, batch_size=1)
    diff = (fast - official).abs()
    assert diff.max() < 2.5e-4 and diff.mean() < 1e-5, (diff.max().item(), diff.mean().item())

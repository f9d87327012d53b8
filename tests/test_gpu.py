"""The CUDA paths, checked against the CPU in float32: what no CPU test reaches (``make gpu-check`` runs these).

Every test is marked ``gpu`` and skips where ``torch.cuda.is_available()`` is False. Comparisons in float32 run
with TF32 off (cuDNN convolutions use TF32 by default on Ampere and later, about 1e-3 relative per layer);
mixed-precision results are compared with tolerances measured for bf16 on the CPU (see each test).

``FACESYNTH_GPU_CHECK_DEVICE=cpu`` runs the same tests on the CPU instead, which rehearses the calls (not the
CUDA numbers) on a machine without a GPU; ``scripts/gpu_check.py`` passes it on.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

DEVICE = os.environ.get("FACESYNTH_GPU_CHECK_DEVICE", "cuda")
ON_CUDA = torch.device(DEVICE).type == "cuda"

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(),
                       reason="needs a CUDA GPU: torch.cuda.is_available() is False (make gpu-check runs these)"),
]


@contextlib.contextmanager
def exact_fp32():
    """cuDNN and cuBLAS in true float32 (TF32 off) for the duration, then as they were."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def max_mean_abs(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    diff = (a.detach().float().cpu() - b.detach().float().cpu()).abs()
    return diff.max().item(), diff.mean().item()


# --- environment ------------------------------------------------------------------------------------------------------

def test_pick_device_and_memory_report_see_the_gpu():
    from facesynth.gpu import memory_report, pick_device

    if not ON_CUDA:
        pytest.skip("rehearsal on the CPU: nothing GPU-specific to report")
    assert pick_device("auto").type == "cuda"
    x = torch.ones(1024, 1024, device="cuda")
    report = memory_report("cuda")
    assert report["gpu_allocated_mib"] >= 4.0 and report["gpu_total_mib"] > 1000
    assert report["gpu_name"] == torch.cuda.get_device_name()
    del x


# --- face swap: AMP, GradScaler, channels_last, one-rank nccl ---------------------------------------------------------

@pytest.fixture(scope="module")
def facesets(samples, tmp_path_factory) -> tuple[Path, Path]:
    from facesynth.extract import extract_faces

    root = tmp_path_factory.mktemp("faces")
    extract_faces(samples.talking_head, root / "A", fps=10, size=64, detector="dlib", progress=False)
    extract_faces(samples.portraits, root / "B", size=64, detector="dlib", progress=False)
    return root / "A", root / "B"


def quick(**overrides):
    from facesynth.swap import SwapConfig
    return SwapConfig.preset("quick", **{"preview_every": 0, "snapshot_every": 0, "checkpoint_every": 1000,
                                         **overrides})


def first_conv(trainer) -> nn.Conv2d:
    return next(m for m in trainer.model.modules() if isinstance(m, nn.Conv2d))


def train_and_watch(trainer, iterations: int) -> tuple[list[dict], list[torch.dtype]]:
    """Train to ``iterations``; the log records and the dtypes the first convolution produced."""
    from facesynth.training import read_log

    dtypes: list[torch.dtype] = []
    hook = first_conv(trainer).register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    try:
        trainer.train(iterations=iterations)
    finally:
        hook.remove()
    return [r for r in read_log(trainer.workdir) if "loss_a" in r], dtypes


def test_swap_training_runs_under_autocast_in_channels_last(facesets, tmp_path):
    from facesynth.gpu import amp_dtype
    from facesynth.swap import SwapTrainer

    a, b = facesets
    trainer = SwapTrainer(quick(), faces_a=a, faces_b=b, workdir=tmp_path / "m", device=DEVICE, progress=False)
    before = first_conv(trainer).weight.detach().clone()
    log, dtypes = train_and_watch(trainer, 12)
    assert [r["iteration"] for r in log] == list(range(1, 13))
    assert all(np.isfinite([r["loss_a"], r["loss_b"]]).all() for r in log)
    assert not torch.equal(first_conv(trainer).weight.detach(), before)
    if ON_CUDA:
        assert trainer.device.type == "cuda"
        assert first_conv(trainer).weight.is_contiguous(memory_format=torch.channels_last)
        # the dtype the trainer's autocast picks, and the GradScaler only where that is fp16
        assert set(dtypes) == {amp_dtype("cuda")}
        assert trainer.scaler.is_enabled() == (amp_dtype("cuda") == torch.float16)
    else:
        assert set(dtypes) == {torch.float32}


def test_swap_training_in_fp16_uses_the_grad_scaler(facesets, tmp_path, monkeypatch):
    """The path of GPUs without bf16 (a T4 or older): fp16 autocast with a GradScaler that adapts its scale."""
    from facesynth.swap import SwapTrainer

    if not ON_CUDA:
        pytest.skip("fp16 autocast with a GradScaler is a CUDA path")
    # both facesynth.gpu.amp_dtype and SwapTrainer ask torch.cuda.is_bf16_supported()
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    a, b = facesets
    trainer = SwapTrainer(quick(), faces_a=a, faces_b=b, workdir=tmp_path / "m", device=DEVICE, progress=False)
    assert trainer.scaler.is_enabled()
    log, dtypes = train_and_watch(trainer, 12)
    assert set(dtypes) == {torch.float16}
    assert [r["iteration"] for r in log] == list(range(1, 13))
    assert all(np.isfinite([r["loss_a"], r["loss_b"]]).all() for r in log)
    assert 1.0 <= trainer.scaler.get_scale() <= 2.0 ** 24


def test_swap_fp32_steps_in_channels_last_match_the_cpu(facesets, tmp_path):
    """Without autocast the CUDA trainer (channels_last on) draws the same batches as the CPU one and computes the
    same losses: the augmentation draws on the CPU, the weights start from the same seed."""
    from facesynth.swap import SwapTrainer

    a, b = facesets
    runs = {}
    with exact_fp32():
        for device in ("cpu", DEVICE):
            trainer = SwapTrainer(quick(amp=False), faces_a=a, faces_b=b, workdir=tmp_path / device, device=device,
                                  progress=False)
            runs[device], _ = train_and_watch(trainer, 3)
    cpu = np.array([[r["loss_a"], r["loss_b"]] for r in runs["cpu"]])
    gpu = np.array([[r["loss_a"], r["loss_b"]] for r in runs[DEVICE]])
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3)


NCCL_WORKER = r'''
import json
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

import facesynth.swap.train as swap_train
from facesynth.swap import SwapConfig, SwapTrainer
from facesynth.training import DistributedContext, read_log, setup_distributed

device, faces_a, faces_b, workdir = torch.device(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
backend = "nccl" if device.type == "cuda" else "gloo"
library = setup_distributed(device)       # RANK=0, WORLD_SIZE=1: the library keeps to one process, no group
report = {"library_enabled": library.enabled, "library_backend": library.backend,
          "library_initialized_a_group": dist.is_initialized()}
dist.init_process_group(backend, timeout=timedelta(seconds=60))    # env://: MASTER_ADDR/PORT, RANK, WORLD_SIZE
try:
    x = torch.full((4,), 3.0, device=device)
    dist.all_reduce(x)
    report["backend"] = dist.get_backend()
    report["all_reduce"] = x.tolist()

    class OneRank(DistributedContext):
        @property
        def enabled(self) -> bool:       # a one-rank group the trainer treats as distributed (DDP, rank-wide NaN check)
            return True

    swap_train.distributed_device = lambda _: (device, OneRank(rank=0, world_size=1, local_rank=0, backend=backend))
    cfg = SwapConfig.preset("quick", preview_every=0, snapshot_every=0, checkpoint_every=1000)
    trainer = SwapTrainer(cfg, faces_a=faces_a, faces_b=faces_b, workdir=workdir, progress=False)
    report["wrapper"] = type(trainer.pair).__name__
    trainer.train(iterations=3)
    report["losses"] = [[r["loss_a"], r["loss_b"]] for r in read_log(workdir) if "loss_a" in r]
finally:
    dist.destroy_process_group()
print("REPORT " + json.dumps(report))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_rank_nccl_group_trains_the_swap_model_under_ddp(facesets, tmp_path):
    a, b = facesets
    script = tmp_path / "worker.py"
    script.write_text(NCCL_WORKER)
    device = "cuda:0" if ON_CUDA else "cpu"
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    # a process of its own: a hung collective times out here instead of stalling the test session
    proc = subprocess.run([sys.executable, str(script), device, str(a), str(b), str(tmp_path / "m")], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("REPORT "))[7:])
    assert report["library_enabled"] is False and report["library_initialized_a_group"] is False
    assert report["backend"] == ("nccl" if ON_CUDA else "gloo")
    assert report["all_reduce"] == [3.0] * 4
    assert report["wrapper"] == "DistributedDataParallel"
    assert len(report["losses"]) == 3 and np.isfinite(report["losses"]).all()


# --- reenactment (FOMM) -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fomm_small():
    """The reduced vox-256 and six driving frames of tests/data/fomm, with the official fp32 predictions."""
    from fomm_reference import DATA, as_frames

    ref = torch.load(DATA / "animate.pt", weights_only=True)
    return {"ckpt": DATA / "small-cpk.pt", "config": DATA / "small.yaml", "ref": ref,
            "source": as_frames(torch.load(DATA / "reference.pt", weights_only=True)["source"]),
            "driving": as_frames(ref["driving"])}


def _official_diff(video: torch.Tensor, fomm_small: dict) -> tuple[float, float]:
    s = fomm_small["ref"]["prediction_stride"]      # the reference keeps every s-th row and column
    return max_mean_abs(video[:, :, ::s, ::s], fomm_small["ref"]["predictions"]["relative"])


def test_fomm_batched_animate_in_fp32_equals_the_official_output(fomm_small):
    from facesynth.reenact import animate, load_fomm

    model = load_fomm(fomm_small["ckpt"], config=fomm_small["config"], device=DEVICE)
    with exact_fp32():
        video = animate(model, fomm_small["source"], fomm_small["driving"], batch_size=4, autocast=False)
    assert video.device.type == "cpu" and video.shape == fomm_small["driving"].shape
    worst, mean = _official_diff(video, fomm_small)
    assert worst <= 1e-3 and mean <= 5e-5, f"max {worst:.3g}, mean {mean:.3g}"   # CPU: max 3e-7


def test_fomm_autocast_stays_close_to_the_official_output(fomm_small):
    """The GPU default: autocast on, key points and generator in fp16 (``gpu.inference_dtype``). On the CPU, fp16
    autocast of both (same rounding, no fast kernels) moved pixels by at most 5.6e-4, mean 1.2e-4 on these frames;
    bf16 by 4.9e-3, mean 9.1e-4, which the mean bound below rejects."""
    from facesynth.reenact import animate, load_fomm

    model = load_fomm(fomm_small["ckpt"], config=fomm_small["config"], device=DEVICE)
    video = animate(model, fomm_small["source"], fomm_small["driving"], batch_size=4)
    assert video.dtype == torch.float32 and torch.isfinite(video).all()
    worst, mean = _official_diff(video, fomm_small)
    assert 0 < worst <= 3e-3 and mean <= 4e-4, f"max {worst:.3g}, mean {mean:.3g}"


def test_fomm_compiled_with_cuda_graphs_stays_as_close_to_the_official_output(fomm_small):
    """``compile=True``: torch.compile, on a GPU in mode "reduce-overhead" (CUDA graphs), in the default fp16: the
    same bounds as the eager fp16 path above, and a second video reuses the compiled networks (on the CPU, where
    this runs without CUDA graphs, tests/test_reenact_animate.py checks the graphs and the fp32 numbers)."""
    from torch._dynamo.utils import counters

    from facesynth.reenact import animate, load_fomm

    model = load_fomm(fomm_small["ckpt"], config=fomm_small["config"], device=DEVICE)
    counters.clear()
    video = animate(model, fomm_small["source"], fomm_small["driving"], batch_size=4, compile=True)
    graphs = counters["stats"]["unique_graphs"]
    again = animate(model, fomm_small["source"], fomm_small["driving"], batch_size=4, compile=True)
    assert graphs >= 2 and counters["stats"]["unique_graphs"] == graphs, dict(counters["graph_break"])
    assert video.dtype == torch.float32 and torch.isfinite(video).all() and max_mean_abs(video, again)[0] <= 1e-3
    worst, mean = _official_diff(video, fomm_small)
    assert worst <= 3e-3 and mean <= 4e-4, f"max {worst:.3g}, mean {mean:.3g}"


def test_fomm_vox256_batched_animate_matches_the_cpu(samples):
    """vox-256 at 256x256 with random weights, loaded from an official-layout checkpoint dict: batches of 4 on the
    device against frame-by-frame batches on the CPU. Random weights give nearly flat frames (std about 1e-3), so
    this checks the full-size batched path and 2e-4 is tight; the reduced model above checks the numbers."""
    from PIL import Image

    from facesynth.media import iter_frames, read_image, to_tensor
    from facesynth.reenact import FOMMConfig, animate, build_generator, build_kp_detector, load_fomm

    def square_256(image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        s = min(h, w)
        y, x = (h - s) // 2, (w - s) // 2
        return np.asarray(Image.fromarray(image[y:y + s, x:x + s]).resize((256, 256), Image.BICUBIC))

    torch.manual_seed(0)
    cfg = FOMMConfig.named("vox-256")
    ckpt = {"kp_detector": build_kp_detector(cfg).state_dict(), "generator": build_generator(cfg).state_dict()}
    source = to_tensor(square_256(read_image(samples.astronaut)))
    driving = to_tensor(np.stack([square_256(f) for _, f in itertools.islice(iter_frames(samples.talking_head), 0,
                                                                                60, 10)]))
    cpu = animate(load_fomm(ckpt, cfg, device="cpu"), source, driving, batch_size=1)
    with exact_fp32():
        gpu = animate(load_fomm(ckpt, cfg, device=DEVICE), source, driving, batch_size=4, autocast=False)
    assert gpu.shape == cpu.shape == (6, 3, 256, 256)
    worst, _ = max_mean_abs(gpu, cpu)
    assert worst <= 2e-4, f"max {worst:.3g}"


# --- generation (StyleGAN) --------------------------------------------------------------------------------------------

def test_stylegan_fp32_matches_the_cpu_and_bf16_stays_close():
    """256x256, random weights (values up to about 11, std 1.5). CPU bf16 autocast: relative RMS error 0.074,
    correlation 0.997 with fp32."""
    from facesynth.generate import StyleGAN, StyleGANConfig
    from facesynth.gpu import autocast

    torch.manual_seed(0)
    G = StyleGAN(StyleGANConfig(resolution=256)).eval().requires_grad_(False)
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(1))
    kwargs = dict(truncation_psi=0.7, truncation_cutoff=8, noise_mode="const")
    with torch.no_grad():
        cpu = G(z, **kwargs)
        G = G.to(DEVICE)
        with exact_fp32():
            fp32 = G(z.to(DEVICE), **kwargs)
        with autocast(DEVICE, dtype=torch.bfloat16):
            bf16 = G(z.to(DEVICE), **kwargs)
    assert fp32.dtype == torch.float32
    scale = cpu.std().item()
    worst, _ = max_mean_abs(fp32, cpu)
    assert worst <= 1e-3 * scale, f"fp32: max {worst:.3g} (image std {scale:.3g})"
    low = bf16.float().cpu()
    assert torch.isfinite(low).all()
    rel_rms = ((low - cpu) ** 2).mean().sqrt().item() / scale
    corr = np.corrcoef(low.flatten().numpy(), cpu.flatten().numpy())[0, 1]
    # above 0: autocast took effect (the output's dtype depends on the last op's autocast policy)
    assert 1e-4 < rel_rms <= 0.15 and corr >= 0.99, f"bf16: relative RMS {rel_rms:.3g}, correlation {corr:.4f}"


# --- lip sync (Wav2Lip) -----------------------------------------------------------------------------------------------

def wav2lip_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eight random mel windows and face inputs, and the seeded random network's fp32 output for them on the CPU."""
    from facesynth.lipsync import random_wav2lip

    g = torch.Generator().manual_seed(0)
    mel = torch.randn(8, 1, 80, 16, generator=g)
    faces = torch.rand(8, 6, 96, 96, generator=g)
    with torch.no_grad():
        return mel, faces, random_wav2lip(0, device="cpu")(mel, faces)


def test_wav2lip_fp32_matches_the_cpu_and_bf16_stays_close():
    """The official network and InferenceWav2Lip (BatchNorm folded, channels_last); on the CPU bf16 was max 0.020,
    mean 2.0e-3 from fp32 and fp16 (emulated: same rounding, no fast kernels) max 2.7e-3, mean 2.9e-4."""
    from facesynth.lipsync import InferenceWav2Lip, random_wav2lip

    mel, faces, cpu = wav2lip_inputs()
    with torch.no_grad():
        net = random_wav2lip(0, device=DEVICE)
        with exact_fp32():
            plain = net(mel.to(DEVICE), faces.to(DEVICE))
            folded = InferenceWav2Lip(net, device=DEVICE)(mel, faces)
    bf16 = InferenceWav2Lip(net, device=DEVICE, precision="bf16")(mel, faces)
    for name, out, tol in (("plain fp32", plain, 1e-4), ("folded fp32", folded, 1e-4)):
        worst, _ = max_mean_abs(out, cpu)
        assert worst <= tol, f"{name}: max {worst:.3g}"
    worst, mean = max_mean_abs(bf16, cpu)
    assert bf16.dtype == torch.float32 and worst <= 5e-2 and mean <= 1e-2, f"bf16: max {worst:.3g}, mean {mean:.3g}"
    if ON_CUDA:       # a CPU rehearsal skips fp16: no fast kernels there
        fp16 = InferenceWav2Lip(net, device=DEVICE, precision="fp16")(mel, faces)
        worst, mean = max_mean_abs(fp16, cpu)
        assert fp16.dtype == torch.float32 and 0 < worst <= 1e-2 and mean <= 1e-3, \
            f"fp16: max {worst:.3g}, mean {mean:.3g}"


def test_wav2lip_compiled_with_cuda_graphs_stays_as_close():
    """``compile=True`` (on a GPU torch.compile with CUDA graphs) in fp16 on a GPU (fp32 in a CPU rehearsal): the
    bounds of the eager fp16 path above, batches 8 then 5 (padded to 8: nothing compiled again)."""
    from torch._dynamo.utils import counters

    from facesynth.lipsync import InferenceWav2Lip, random_wav2lip

    mel, faces, cpu = wav2lip_inputs()
    net = random_wav2lip(0, device=DEVICE)
    counters.clear()
    fused = InferenceWav2Lip(net, device=DEVICE, precision="fp16" if ON_CUDA else "fp32", compile=True)
    out, tail = fused(mel, faces), fused(mel[3:], faces[3:])
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["graph_break"])
    assert out.shape == (8, 3, 96, 96) and tail.shape == (5, 3, 96, 96)
    for got, want in ((out, cpu), (tail, cpu[3:])):
        worst, mean = max_mean_abs(got, want)
        assert torch.isfinite(got).all() and worst <= 1e-2 and mean <= 1e-3, f"max {worst:.3g}, mean {mean:.3g}"


# --- extraction: the FAN backend --------------------------------------------------------------------------------------

def test_fan_backend_on_the_device_matches_the_cpu(samples, tmp_path, monkeypatch):
    """S3FD + 2DFAN4 with the random stand-in weights of test_fan_backend.py (the official files cannot be fetched
    offline). Random heatmaps have near-equal peaks: a relative change of 1e-4 moves 3% of the argmax points, so
    points are compared loosely and the heatmaps closely."""
    from test_fan_backend import FAN_FILE, S3FD_FILE, _fake_fan, _fake_s3fd

    from facesynth.extract.backends.fan_backend import FanBackend
    from facesynth.media import iter_frames, read_image

    torch.manual_seed(0)
    home = tmp_path / "torch_home"
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(_fake_s3fd(), checkpoints / S3FD_FILE)
    torch.save(_fake_fan(), checkpoints / FAN_FILE)
    monkeypatch.setenv("TORCH_HOME", str(home))
    video = [f for _, f in itertools.islice(iter_frames(samples.talking_head), 0, 31, 30)]
    frames = [video[0], read_image(samples.astronaut)[:256, 128:384], video[1]]

    cpu = FanBackend(device="cpu", batch_size=4)
    gpu = FanBackend(device=DEVICE, batch_size=4)
    assert next(gpu.fan.parameters()).device.type == torch.device(DEVICE).type
    with exact_fp32():
        boxes = gpu.detect_boxes(frames)
        expected = cpu.detect_boxes(frames)
        assert [len(b) for b in boxes] == [len(b) for b in expected] and sum(len(b) for b in boxes) > 0
        for got, want in zip(boxes, expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
        crops = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            hm_cpu = cpu.fan(crops)[-1]
            hm_gpu = gpu.fan(crops.to(DEVICE))[-1]
        worst, _ = max_mean_abs(hm_gpu, hm_cpu)
        assert worst <= 1e-3 * hm_cpu.abs().max().item(), f"heatmaps: max {worst:.3g}"
        points = np.concatenate(gpu.landmarks(frames, [b[:, :4] for b in boxes]))
        points_cpu = np.concatenate(cpu.landmarks(frames, [b[:, :4] for b in expected]))
    assert points.shape == points_cpu.shape and np.isfinite(points).all()
    close = np.linalg.norm(points - points_cpu, axis=-1) <= 0.5
    assert close.mean() >= 0.9, f"only {close.mean():.1%} of the points within 0.5 px of the CPU's"

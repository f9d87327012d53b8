"""facesynth.errors, gpu, fileio and samples."""
from __future__ import annotations

import json
import math
import random
import sys

import numpy as np
import pytest
import torch

import facesynth
from facesynth import errors, fileio, gpu, samples as samples_mod
from facesynth.errors import (CheckpointError, ConfigError, FacesynthError, MediaError, NoFaceError,
                              UnsafeCheckpointError, WeightsNotFoundError)

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


# ------------------------------------------------------------------------------------------------ errors

def test_error_hierarchy():
    classes = [MediaError, NoFaceError, CheckpointError, UnsafeCheckpointError, WeightsNotFoundError, ConfigError]
    for cls in classes:
        assert issubclass(cls, FacesynthError) and issubclass(cls, Exception)
        assert cls.__doc__
    assert issubclass(UnsafeCheckpointError, CheckpointError)
    for cls in (MediaError, NoFaceError, WeightsNotFoundError, ConfigError):
        assert not issubclass(cls, CheckpointError)
    assert not issubclass(FacesynthError, (ValueError, OSError, RuntimeError))
    assert sorted(errors.__all__) == sorted(["FacesynthError", *[c.__name__ for c in classes]])
    for name in errors.__all__:
        assert getattr(facesynth, name) is getattr(errors, name)
    with pytest.raises(CheckpointError, match="bad"):
        raise UnsafeCheckpointError("bad file")


# ------------------------------------------------------------------------------------------------ gpu

@pytest.mark.skipif(HAS_CUDA or HAS_MPS, reason="an accelerator is present")
def test_pick_device_auto_is_cpu_here():
    assert gpu.pick_device("auto") == torch.device("cpu")
    assert gpu.pick_device(None) == torch.device("cpu")
    assert gpu.pick_device() == torch.device("cpu")
    assert gpu.amp_dtype("cpu") is None


def test_pick_device_explicit_cpu():
    assert gpu.pick_device("cpu") == torch.device("cpu")
    assert gpu.pick_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available")
@pytest.mark.parametrize("name", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_pick_device_cuda_without_cuda(name):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        gpu.pick_device(name)


@pytest.mark.skipif(HAS_MPS, reason="MPS is available")
def test_pick_device_mps_without_mps():
    with pytest.raises(ConfigError, match="MPS"):
        gpu.pick_device("mps")


def test_seed_everything_repeatable():
    def draw():
        return random.random(), np.random.rand(4).tolist(), torch.rand(4).tolist(), torch.randint(0, 10**6, (3,)).tolist()

    gpu.seed_everything(1234)
    a = draw()
    gpu.seed_everything(1234)
    b = draw()
    gpu.seed_everything(1235)
    c = draw()
    assert a == b
    for x, y in zip(a, c):
        assert x != y
    gpu.seed_everything(2**40 + 7)                             # seeds beyond numpy's 32 bits are folded, not refused
    d = draw()
    gpu.seed_everything(2**40 + 7)
    assert draw() == d


def test_autocast_cpu_keeps_fp32_exact():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 96, generator=g), torch.randn(96, 48, generator=g)
    conv = torch.nn.Conv2d(3, 8, 3)
    x = torch.randn(2, 3, 16, 16, generator=g)
    ref, ref_conv = a @ b, conv(x)
    with gpu.autocast("cpu"):
        out, out_conv = a @ b, conv(x)
    assert out.dtype == torch.float32 and out_conv.dtype == torch.float32
    assert torch.equal(out, ref) and torch.equal(out_conv, ref_conv)
    # torch's own CPU autocast would change the numbers: the no-op is what keeps them exact
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
    with gpu.autocast("cpu", enabled=False):
        assert torch.equal(a @ b, ref)


def test_autocast_explicit_dtype_on_cpu_is_applied():
    a = torch.randn(8, 8)
    with gpu.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16


def test_channels_last_noop_on_cpu():
    t = torch.randn(2, 3, 8, 8)
    assert gpu.channels_last(t) is t
    assert t.is_contiguous()
    m = torch.nn.Conv2d(3, 4, 3)
    w_before = m.weight.data_ptr()
    assert gpu.channels_last(m) is m
    assert m.weight.data_ptr() == w_before and m.weight.is_contiguous()
    relu = torch.nn.ReLU()
    assert gpu.channels_last(relu) is relu                     # a module without parameters counts as CPU
    # asked for CUDA explicitly, a 4-D tensor is converted and a 3-D one left as is
    cl = gpu.channels_last(t, device="cuda")
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, t)
    t3 = torch.randn(3, 8, 8)
    assert gpu.channels_last(t3, device="cuda") is t3


@pytest.mark.parametrize("deterministic", [False, True])
def test_cudnn_autotune_is_scoped_and_respects_deterministic(monkeypatch, deterministic):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", deterministic)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    with gpu.cudnn_autotune(torch.device("cuda")):
        assert torch.backends.cudnn.benchmark is (not deterministic)
    assert torch.backends.cudnn.benchmark is False
    with gpu.cudnn_autotune(torch.device("cpu")):
        assert torch.backends.cudnn.benchmark is False


def test_memory_report_cpu():
    _ = np.ones((1024, 1024), np.float64).sum()               # touch some memory
    rep = gpu.memory_report("cpu")
    assert rep["device"] == "cpu"
    assert rep["cpu_peak_rss_mib"] > 10                         # a process that imported torch uses far more
    assert not any(k.startswith("gpu_") for k in rep)
    gpu.reset_peak_memory("cpu")                               # a no-op on CPU; must not raise


def test_in_colab(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    monkeypatch.delenv("COLAB_GPU", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert gpu.in_colab() is False
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20250101-060000_RC00")
    assert gpu.in_colab() is True


@pytest.mark.slow
def test_gpu_import_touches_no_device():
    import importlib
    import subprocess
    code = ("import facesynth.gpu, facesynth.media, facesynth.weights, facesynth.safe_load, torch; "
            "print(torch.cuda.is_initialized())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert importlib.import_module("facesynth.gpu") is gpu


# ------------------------------------------------------------------------------------------------ fileio

def test_atomic_write_json(tmp_path):
    obj = {"iteration": 12, "loss": 0.25, "nan": float("nan"), "list": [1, 2, 3], "name": "é"}
    out = fileio.atomic_write_json(tmp_path / "sub" / "state.json", obj, indent=2)
    assert out == tmp_path / "sub" / "state.json"
    back = json.loads(out.read_text())
    assert back["iteration"] == 12 and back["loss"] == 0.25 and back["list"] == [1, 2, 3] and back["name"] == "é"
    assert math.isnan(back["nan"])
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["state.json"]
    fileio.atomic_write_json(out, {"iteration": 13})
    assert json.loads(out.read_text()) == {"iteration": 13}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["state.json"]


def test_atomic_write_failure_keeps_previous_file(tmp_path):
    target = fileio.atomic_write_bytes(tmp_path / "ckpt.bin", b"version 1")

    def broken(f):
        f.write(b"half a checkp")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        fileio.atomic_write(target, broken)
    assert target.read_bytes() == b"version 1"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]

    with pytest.raises(TypeError):                              # not JSON-serialisable: nothing written
        fileio.atomic_write_json(target, {"x": object()})
    assert target.read_bytes() == b"version 1"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]


def test_atomic_write_failure_on_new_file_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write(tmp_path / "new.bin", lambda f: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def umask():
    """Set the process umask for one test and put the previous one back."""
    import os

    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_gives_the_mode_the_umask_allows(tmp_path, umask, mask, mode):
    umask(mask)
    assert fileio.current_umask() == mask
    new = fileio.atomic_write_bytes(tmp_path / "video.mp4", b"frames")
    assert new.stat().st_mode & 0o777 == mode
    replaced = fileio.atomic_write_json(new, {"iteration": 1})      # a rewrite gets the same mode
    assert replaced.stat().st_mode & 0o777 == mode


def test_project_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("FACESYNTH_HOME", raising=False)
    root = fileio.project_dir()
    assert (root / "pyproject.toml").is_file() and (root / "facesynth" / "__init__.py").is_file()
    assert fileio.data_dir() == root / "data"
    monkeypatch.setenv("FACESYNTH_HOME", str(tmp_path))
    assert fileio.project_dir() == tmp_path
    assert fileio.data_dir() == tmp_path / "data"


# ------------------------------------------------------------------------------------------------ samples

def test_ensure_samples_copies_and_is_idempotent(tmp_path):
    s = samples_mod.ensure_samples(tmp_path / "s")
    assert isinstance(s, samples_mod.Samples) and s.root == tmp_path / "s"
    files = [s.talking_head, s.astronaut, s.grace_hopper]
    assert len(samples_mod.SAMPLE_FILES) == 3
    for sf in samples_mod.SAMPLE_FILES:
        src = samples_mod.package_file(sf.package, sf.resource)
        dst = s.root / sf.dest
        assert dst in files
        assert dst.stat().st_size == src.stat().st_size > 1000
        assert dst.read_bytes() == src.read_bytes()
    assert s.portraits.is_dir() and s.talking_head.suffix == ".mp4"
    all_files = sorted(str(p.relative_to(s.root)) for p in s.root.rglob("*") if p.is_file())
    assert all_files == ["portraits/astronaut.png", "portraits/grace_hopper.jpg", "talking_head.mp4"]

    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    again = samples_mod.ensure_samples(tmp_path / "s")
    assert again == s
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files} == stamps   # nothing re-copied


def test_ensure_samples_repairs_a_damaged_copy(tmp_path):
    s = samples_mod.ensure_samples(tmp_path)
    size = s.astronaut.stat().st_size
    s.astronaut.write_bytes(b"half")
    samples_mod.ensure_samples(tmp_path)
    assert s.astronaut.stat().st_size == size
    assert sorted(p.name for p in s.portraits.iterdir()) == ["astronaut.png", "grace_hopper.jpg"]


def test_package_file_errors():
    with pytest.raises(MediaError, match="pip package"):
        samples_mod.package_file("no_such_package_xyz", "a.txt")
    with pytest.raises(MediaError, match="missing"):
        samples_mod.package_file("skimage", "data/no_such_file.png")


def test_session_samples_fixture(samples):
    assert samples.talking_head.is_file() and samples.astronaut.is_file() and samples.grace_hopper.is_file()
    assert samples.root != fileio.data_dir() / "samples"       # tests never write into the checkout


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((7, 0), torch.float16),
                                               ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_amp_dtype_uses_bf16_only_where_the_gpu_computes_it(monkeypatch, capability, dtype):
    """A Colab T4 (7.5) or V100 (7.0) emulates bf16 (torch.cuda.is_bf16_supported() still says True): fp16 there."""
    from facesynth import gpu

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    assert gpu.amp_dtype("cuda:0") == dtype and gpu.amp_dtype("cpu") is None
    # inference has no gradients to scale: fp16 (8 times finer rounding than bf16) on every GPU, bf16 on a CPU
    assert gpu.inference_dtype("cuda:0") == torch.float16 and gpu.inference_dtype("cpu") == torch.bfloat16


def test_compile_mode_is_off_by_default_cuda_graphs_on_a_gpu_and_checked(monkeypatch):
    assert gpu.compile_mode(False, "cuda") is None and gpu.compile_mode(None, "cpu") is None
    assert gpu.compile_mode(True, "cuda:0") == "reduce-overhead" and gpu.compile_mode(True, "cpu") == "default"
    assert gpu.compile_mode("max-autotune", "cpu") == "max-autotune"
    with pytest.raises(ValueError, match="reduce-overhead"):
        gpu.compile_mode("fast", "cuda")
    assert gpu.compiling() is False
    # made once per process and mode (torch.compile itself, which imports dynamo, is replaced: 4 s saved)
    made = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: made.append(kw) or (lambda *a: fn(*a)))
    monkeypatch.setattr(gpu, "_COMPILED", {})
    assert gpu.compiled(torch.sin, "default") is gpu.compiled(torch.sin, "default")
    gpu.compiled(torch.sin, "reduce-overhead")
    assert made == [{"mode": "default", "dynamic": False}, {"mode": "reduce-overhead", "dynamic": False}]
    x = torch.arange(3.0)
    assert torch.equal(gpu.pad_batch(x, 5), torch.tensor([0.0, 1, 2, 2, 2])) and gpu.pad_batch(x, 3) is not x

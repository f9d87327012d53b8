#!/usr/bin/env python
"""Benchmark face-swap training: iterations/s, images/s, FLOPs and peak memory of each preset.

    python bench/swap_train.py [--quick] [--presets quick,paper,dfl-df,dfl-liae] [--batch N]
                               [--iterations N] [--device auto|cpu|cuda] [--threads N]
                               [--out bench/results/swap_train.json]

What is timed is ``SwapTrainer.train_step``: one optimisation step on a batch of person A *and* a batch of
person B (2 x batch images: sampling from the face sets, augmentation, both reconstructions, the masked losses,
backward, Adam), after warm-up, on the device ``pick_device()`` chooses (AMP/bf16 and channels_last on CUDA,
as the trainer does). Logging, checkpoints and previews are not part of it. The face sets are small real
ones, extracted once from the sample media at each preset's resolution.

Each preset runs in a fresh child process (this script re-invoked with ``--child``), so that its peak
resident set (``ru_maxrss``) and, on CUDA, its peak GPU memory belong to that measurement alone.

* FLOPs per iteration: ``torch.utils.flop_counter.FlopCounterMode`` over one real ``train_step`` (the first,
  which is also the first warm-up step). It counts convolutions and matrix products, forward and backward;
  element-wise work, the augmentation's grid sampling and the Adam update are not counted (they are a small
  share of the arithmetic, not necessarily of the time). Achieved FLOP/s = FLOPs per iteration x iterations/s.
* Memory: peak RSS of the child; on CUDA the peak allocated and reserved GPU memory; everywhere the model
  state (fp32 parameters + gradients + two Adam moments = 16 bytes per parameter) and the activations
  saved for backward in one step (every tensor autograd keeps, counted once per storage, parameters
  excluded), measured with ``torch.autograd.graph.saved_tensors_hooks``.

On CPU the larger presets take from tens of seconds to minutes per iteration at their own batch size:
the default run measures them with few iterations (about 8 minutes on 2 idle cores, far longer
when other work shares them); ``--quick`` (about
3 minutes) also lowers their batch size (paper 2, dfl-* 1) and says so in each record (``batch_reduced``);
FLOPs and saved activations grow linearly with the batch, so both are also given at the preset's batch.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from _common import current_rss_mib as _current_rss_mib, peak_rss_mib as _peak_rss_mib, run_child as _run_child, git_commit, write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "swap_train.json"
PRESET_ORDER = ("quick", "paper", "dfl-df", "dfl-liae")
GIB = 1024 ** 3
MIB = 1024 ** 2

# the target: the study's 400,000 iterations at batch 12 in under an hour on one H100
TARGET = {"preset": "paper", "batch": 12, "device": "one NVIDIA H100", "iterations_per_s": 111.0,
          "why": "the study's 400,000 iterations at batch 12 (54 h on a GTX 1050) in under an hour: "
                 "400000 / 3600 s = 111.1 it/s",
          "memory": "the paper preset trains at batch 12 within the 4 GB of a GTX 1050-class card, as the study did"}
CONTEXT_ALLOWANCE_BYTES = 512 * MIB      # CUDA context + cuDNN/cuBLAS workspaces, outside the caching allocator
GPU_4GB_BYTES = 4 * 10 ** 9              # "4 GB" as the card is sold (a GTX 1050 reports about 3.9-4.0 GiB)

# batch used by --quick on CPU (the preset's own batch takes 25 s to minutes per iteration there)
QUICK_CPU_BATCH = {"paper": 2, "dfl-df": 1, "dfl-liae": 1}

# timing plans: extra warm-up steps after the counted first step; timed steps until min_iters AND min_s,
# or until max_s (0: no cap) has passed (at least one timed step always runs)
PLANS = {
    ("cpu", "quick"): {"quick": dict(warmup=2, min_iters=5, min_s=8.0, max_s=15.0),
                       "*": dict(warmup=0, min_iters=1, min_s=0.0, max_s=0.0)},
    ("cpu", "default"): {"quick": dict(warmup=3, min_iters=20, min_s=20.0, max_s=60.0),
                         "paper": dict(warmup=1, min_iters=3, min_s=30.0, max_s=120.0),
                         "*": dict(warmup=0, min_iters=2, min_s=0.0, max_s=0.0)},
    ("cuda", "quick"): {"*": dict(warmup=10, min_iters=30, min_s=3.0, max_s=30.0)},
    ("cuda", "default"): {"*": dict(warmup=30, min_iters=100, min_s=10.0, max_s=60.0)},
}


def log(msg: str) -> None:
    print(f"[bench/swap_train] {msg}", file=sys.stderr, flush=True)






def _plan(device_type: str, mode: str, preset: str) -> dict:
    plans = PLANS[("cuda" if device_type == "cuda" else "cpu", mode)]
    return dict(plans.get(preset, plans["*"]))


# ---------------------------------------------------------------------------------------------- child side

def child_run(spec: dict) -> dict:
    rss_start = _current_rss_mib()

    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from facesynth.gpu import pick_device
    from facesynth.swap import SwapConfig, SwapTrainer

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = pick_device(spec["device"])
    cuda = device.type == "cuda"
    sync = (torch.cuda.synchronize if cuda else torch.mps.synchronize if device.type == "mps" else (lambda: None))
    cfg = SwapConfig.preset(spec["preset"], **{**spec["overrides"], "batch_size": spec["batch"],
                                                "checkpoint_every": 10 ** 9, "checkpoint_minutes": 1e9,
                                                "preview_every": 0, "snapshot_every": 0, "log_every": 10 ** 9})
    t = time.perf_counter()
    trainer = SwapTrainer(cfg, faces_a=spec["faces_a"], faces_b=spec["faces_b"], workdir=Path(spec["tmp"]) / "work",
                          device=str(device), progress=False)
    build_s = time.perf_counter() - t
    params = list(trainer.model.parameters())
    n_params = sum(p.numel() for p in params)
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    rss_built = _current_rss_mib()

    # first step: FLOPs and the activations autograd saves for backward (also the first warm-up step)
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    saved: dict[int, int] = {}

    def pack(x):
        try:
            storage = x.untyped_storage()
            ptr = storage.data_ptr()
            if ptr and ptr not in param_ptrs:
                saved.setdefault(ptr, storage.nbytes())
        except (RuntimeError, NotImplementedError):
            pass
        return x

    counter = FlopCounterMode(display=False)
    sync()
    t = time.perf_counter()
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        trainer.train_step(0)
    sync()
    first_step_s = time.perf_counter() - t
    flops = int(counter.get_total_flops())
    by_op = {str(k).replace("aten.", ""): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    saved_bytes = int(sum(saved.values()))
    state_allocated = torch.cuda.memory_allocated(device) if cuda else None   # params, grads, Adam moments

    # warm-up, then timed steps
    plan = spec["plan"]
    it = 1
    t = time.perf_counter()
    for _ in range(plan["warmup"]):
        trainer.train_step(it)
        it += 1
    sync()
    warmup_s = time.perf_counter() - t
    times: list[float] = []
    last: dict = {}
    start, cpu_start = time.perf_counter(), time.process_time()
    while True:
        t = time.perf_counter()
        last = trainer.train_step(it)          # returns floats: on CUDA this waits for the step to finish
        times.append(time.perf_counter() - t)
        it += 1
        elapsed = time.perf_counter() - start
        if len(times) >= plan["min_iters"] and elapsed >= plan["min_s"]:
            break
        if plan["max_s"] and elapsed >= plan["max_s"]:
            break
    sync()
    total = time.perf_counter() - start
    cpu_used = time.process_time() - cpu_start

    # how much of a step is drawing and augmenting the two batches (CPU decode + resize + grid sampling)
    n_sample = max(1, min(len(times), 20 if cuda else 5))
    sync()
    t = time.perf_counter()
    for _ in range(n_sample):
        trainer._sample("a")
        trainer._sample("b")
    sync()
    sample_s = (time.perf_counter() - t) / n_sample

    its = len(times) / total
    rec = {
        "device": str(device), "batch": cfg.batch_size, "images_per_iteration": 2 * cfg.batch_size,
        "resolution": cfg.resolution, "architecture": cfg.architecture,
        "amp": bool(cfg.amp and cuda), "channels_last": bool(cfg.channels_last and cuda),
        "parameters": n_params,
        "warmup_iterations": 1 + plan["warmup"], "timed_iterations": len(times), "timed_seconds": round(total, 3),
        "iterations_per_s": round(its, 4), "images_per_s": round(its * 2 * cfg.batch_size, 3),
        "step_seconds_median": round(float(np.median(times)), 5), "step_seconds_min": round(min(times), 5),
        "step_seconds_max": round(max(times), 5),
        "cpu_utilisation": round(cpu_used / total, 2),
        "sample_seconds_per_iteration": round(sample_s, 5),
        "sample_share_of_step": round(min(1.0, sample_s * its), 3),
        "first_step_seconds": round(first_step_s, 3), "warmup_seconds": round(warmup_s, 3),
        "build_seconds": round(build_s, 3),
        "flops_per_iteration": flops, "gflops_per_iteration": round(flops / 1e9, 3), "flops_by_op": by_op,
        "achieved_flops_per_s": round(flops * its), "achieved_tflops_per_s": round(flops * its / 1e12, 4),
        "model_state_bytes": 4 * param_bytes,            # fp32 parameters + gradients + Adam exp_avg, exp_avg_sq
        "param_bytes": param_bytes,
        "saved_for_backward_bytes": saved_bytes,
        "losses_last_step": {k: round(float(v), 5) for k, v in last.items()},
        "losses_finite": all(math.isfinite(float(v)) for v in last.values()),
        "rss_at_start_mib": rss_start, "rss_after_build_mib": rss_built, "peak_rss_mib": _peak_rss_mib(),
        "torch_threads": torch.get_num_threads(),
    }
    if cuda:
        rec.update(
            gpu_name=torch.cuda.get_device_name(device),
            cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
            gpu_state_allocated_mib=round(state_allocated / MIB, 1),
            gpu_peak_allocated_mib=round(torch.cuda.max_memory_allocated(device) / MIB, 1),
            gpu_peak_reserved_mib=round(torch.cuda.max_memory_reserved(device) / MIB, 1),
            gpu_total_mib=round(torch.cuda.get_device_properties(device).total_memory / MIB, 1),
            autocast_dtype=str(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16).replace(
                "torch.", ""),
        )
    return rec


def child_main(spec_json: str) -> int:
    import warnings
    warnings.simplefilter("ignore")
    spec = json.loads(spec_json)
    rec = child_run(spec)
    Path(spec["result"]).write_text(json.dumps(rec))
    return 0


# --------------------------------------------------------------------------------------------- parent side

def run_child(spec: dict, tmp: Path, name: str) -> dict:
    return _run_child(__file__, spec, tmp, name, log)


def machine_info(device: str) -> dict:
    import numpy
    import torch
    import facesynth

    info = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor() or None,
        "python": platform.python_version(), "numpy": numpy.__version__, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "facesynth": facesynth.__version__, "device": device,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    info["git_commit"] = git_commit(HERE)
    return info


def paper_memory(rec: dict) -> dict:
    """The paper preset's training memory at batch 12: measured on CUDA, else estimated from the CPU run."""
    batch = TARGET["batch"]
    out: dict = {"batch": batch, "parameters": rec["parameters"], "param_bytes": rec["param_bytes"],
                 "model_state_bytes": rec["model_state_bytes"],
                 "model_state_note": "fp32 parameters + gradients + Adam exp_avg and exp_avg_sq (16 bytes/parameter)"}
    per_sample = rec["saved_for_backward_bytes"] / rec["batch"]
    saved = rec["saved_for_backward_bytes"] if rec["batch"] == batch else round(per_sample * batch)
    out["saved_for_backward_bytes"] = saved
    out["saved_for_backward_from"] = (f"measured at batch {rec['batch']} on {rec['device']}" if rec["batch"] == batch
                                      else f"measured at batch {rec['batch']} on {rec['device']}, scaled linearly "
                                           f"to batch {batch}")
    if rec.get("amp"):
        out["saved_for_backward_note"] = "with autocast: bf16/fp16 copies, about half the fp32 bytes"
    estimate = rec["model_state_bytes"] + saved
    out["estimate_bytes"] = estimate
    out["estimate_gib"] = round(estimate / GIB, 3)
    out["estimate_note"] = ("model state + activations saved for backward; the transient gradient buffers of "
                            "backward, the allocator's fragmentation and the CUDA context "
                            f"(~{CONTEXT_ALLOWANCE_BYTES // MIB} MiB allowed below) come on top")
    out["estimate_fits_4gb"] = bool(estimate + CONTEXT_ALLOWANCE_BYTES < GPU_4GB_BYTES)
    if rec["device"].startswith("cuda") and rec["batch"] == batch:
        out["gpu_peak_allocated_mib"] = rec["gpu_peak_allocated_mib"]
        out["gpu_peak_reserved_mib"] = rec["gpu_peak_reserved_mib"]
        out["measured_fits_4gb"] = bool(rec["gpu_peak_reserved_mib"] * MIB + CONTEXT_ALLOWANCE_BYTES < GPU_4GB_BYTES)
        out["measured_on"] = f"{rec.get('gpu_name')} (amp={rec['amp']})"
    else:
        out["measured_fits_4gb"] = None
        out["measured_note"] = "GPU peak memory needs a CUDA device; none was used in this run"
    return out


def extract_facesets(tmp: Path, sizes: list[int]) -> dict[int, tuple[str, str, int, int]]:
    from facesynth.extract import extract_faces
    from facesynth.samples import ensure_samples

    samples = ensure_samples(tmp / "samples")
    sets = {}
    for size in sizes:
        t = time.perf_counter()
        a = extract_faces(samples.talking_head, tmp / f"A{size}", fps=5, size=size, detector="dlib", progress=False)
        b = extract_faces(samples.portraits, tmp / f"B{size}", size=size, detector="dlib", progress=False)
        log(f"face sets at {size} px: A {len(a)} faces (talking head at 5 fps), B {len(b)} (portraits) "
            f"in {time.perf_counter() - t:.1f} s")
        sets[size] = (str(a.root), str(b.root), len(a), len(b))
    return sets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file to write (default {DEFAULT_OUT})")
    ap.add_argument("--quick", action="store_true",
                    help="few iterations; on CPU also smaller batches for paper/dfl-* (about 3 min on 2 cores)")
    ap.add_argument("--presets", default=",".join(PRESET_ORDER), help="comma-separated presets (default: all)")
    ap.add_argument("--batch", type=int, help="batch size per person for every preset (default: the preset's)")
    ap.add_argument("--iterations", type=int, help="exactly this many timed iterations per preset")
    ap.add_argument("--device", default="auto", help="auto (pick_device: cuda, mps, cpu), cpu, cuda, ...")
    ap.add_argument("--threads", type=int, help="torch CPU threads in each child (default: torch's choice); 1 "
                                                "avoids OpenMP spin-waits when other jobs share the cores")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        return child_main(args.child)

    from facesynth.gpu import pick_device
    from facesynth.swap import PRESETS, SwapConfig

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        ap.error(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    device = pick_device(args.device)
    dtype = "cuda" if device.type == "cuda" else "cpu"
    mode = "quick" if args.quick else "default"
    started = time.perf_counter()
    result: dict = {
        "benchmark": "swap_train", "mode": mode,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(str(device)),
        "target": {**TARGET, "flops_per_s_needed": None, "met": None},
        "notes": [
            "timed: SwapTrainer.train_step (sample + augment both batches, both reconstructions, masked losses, "
            "backward, Adam) after warm-up; one iteration = 2 x batch images (a batch of A and a batch of B)",
            "flops_per_iteration: FlopCounterMode over the first real train_step (convolutions and matrix "
            "products, forward and backward); element-wise ops, grid sampling and the Adam update are not counted",
            "peak_rss_mib: ru_maxrss of a fresh child process per preset (interpreter, torch, face sets, model, "
            "optimiser, activations); rss_at_start_mib: the child before it imports torch; rss_after_build_mib: "
            "with the trainer built (model, face sets opened), before the first step",
            "saved_for_backward_bytes: every tensor autograd keeps for backward in one step, counted once per "
            "storage, parameters excluded (saved_tensors_hooks)",
            "cpu_utilisation: CPU seconds of the child per wall second while timed (at most torch_threads); "
            "well below it means other work on the machine took the cores and the rates are low",
            "face sets: real faces extracted once from the sample media (dlib) at each preset's resolution; they "
            "are read lazily through the trainer's bounded cache, so the first steps also decode PNGs",
        ],
        "configs": [],
    }
    tmp = Path(tempfile.mkdtemp(prefix="facesynth-bench-swap-"))
    failed = False
    try:
        sizes = sorted({SwapConfig.preset(p).resolution for p in presets})
        sets = extract_facesets(tmp, sizes)
        runs = [(p, {}) for p in presets]
        if dtype == "cuda" and "paper" in presets:        # the study's card had no fast bf16/fp16: fp32 too
            runs.insert(presets.index("paper") + 1, ("paper", {"amp": False}))
        for preset, overrides in runs:
            cfg = SwapConfig.preset(preset, **overrides)
            label = preset + ("-fp32" if overrides.get("amp") is False else "")
            batch = args.batch or cfg.batch_size
            reduced = None
            if args.batch is None and mode == "quick" and dtype == "cpu" and preset in QUICK_CPU_BATCH:
                batch = QUICK_CPU_BATCH[preset]
                reduced = (f"--quick on CPU: batch {batch} instead of the preset's {cfg.batch_size} (one step at "
                           f"the preset's batch takes from tens of seconds to minutes on this CPU)")
            plan = _plan(dtype, mode, preset)
            if args.iterations:
                plan.update(min_iters=args.iterations, min_s=0.0, max_s=0.0)
            a, b, n_a, n_b = sets[cfg.resolution]
            log(f"{label}: batch {batch} at {cfg.resolution} px on {device} in a child process ...")
            spec = {"preset": preset, "overrides": overrides, "batch": batch, "device": str(device),
                    "faces_a": a, "faces_b": b, "plan": plan, "threads": args.threads}
            rec = {"config": label, "preset": preset, "overrides": overrides, "preset_batch": cfg.batch_size,
                   "faces_a": n_a, "faces_b": n_b, "plan": plan,
                   **run_child(spec, tmp, label)}
            if reduced:
                rec["batch_reduced"] = reduced
            if "error" in rec:
                failed = True
            else:
                if rec["timed_iterations"] < 5:
                    rec["limited"] = (f"only {rec['timed_iterations']} timed iteration(s) after "
                                      f"{rec['warmup_iterations']} warm-up: slow on this device; treat the rate "
                                      f"as rough")
                scale = cfg.batch_size / rec["batch"]
                rec["flops_per_iteration_at_preset_batch"] = round(rec["flops_per_iteration"] * scale)
                rec["saved_for_backward_bytes_at_preset_batch"] = round(rec["saved_for_backward_bytes"] * scale)
                failed |= not rec["losses_finite"]
                log(f"{label}: {rec['iterations_per_s']} it/s, {rec['images_per_s']} img/s, "
                    f"{rec['gflops_per_iteration']} GFLOP/it, {rec['achieved_tflops_per_s']} TFLOP/s, "
                    f"peak RSS {rec['peak_rss_mib']} MiB"
                    + (f", GPU peak {rec['gpu_peak_allocated_mib']} MiB" if "gpu_peak_allocated_mib" in rec else "")
                    + (f" ({rec['timed_iterations']} timed)" if "limited" in rec else ""))
            result["configs"].append(rec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    paper = next((r for r in result["configs"] if r["config"] == "paper" and "error" not in r), None)
    if paper is not None:
        flops_12 = paper["flops_per_iteration"] * TARGET["batch"] / paper["batch"]
        result["target"]["flops_per_iteration"] = round(flops_12)
        result["target"]["flops_per_s_needed"] = round(flops_12 * TARGET["iterations_per_s"])
        result["target"]["tflops_per_s_needed"] = round(flops_12 * TARGET["iterations_per_s"] / 1e12, 2)
        on_h100 = "H100" in (paper.get("gpu_name") or "")
        if on_h100 and paper["batch"] == TARGET["batch"]:
            result["target"]["measured_iterations_per_s"] = paper["iterations_per_s"]
            result["target"]["met"] = bool(paper["iterations_per_s"] > TARGET["iterations_per_s"])
        else:
            result["target"]["not_checked"] = (f"measured on {paper.get('gpu_name') or paper['device']} at batch "
                                               f"{paper['batch']}: the target needs one H100 at batch 12")
        result["paper_memory_at_batch_12"] = paper_memory(paper)

    write_result(result, started, args.out, log)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

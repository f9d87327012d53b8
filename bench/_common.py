"""What the benchmarks share: peak memory of this process, and one measurement per fresh child process."""
from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def peak_rss_mib() -> float:
    """Peak resident set of this process, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def current_rss_mib() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def run_child(script: str, spec: dict, tmp: Path, name: str, log: Callable[[str], None]) -> dict:
    """Run ``script --child SPEC`` in a fresh process (so its peak memory is its own) and return its JSON result."""
    work = tmp / name
    work.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "tmp": str(work), "result": str(work / "result.json")}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(script).resolve()), "--child", json.dumps(spec)],
                          capture_output=True, text=True)
    wall = round(time.perf_counter() - t, 2)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        log(f"{name}: FAILED (exit {proc.returncode})")
        return {"error": f"child exited {proc.returncode}", "stderr_tail": tail, "child_wall_s": wall}
    rec = json.loads((work / "result.json").read_text())
    rec["child_wall_s"] = wall
    shutil.rmtree(work, ignore_errors=True)
    return rec


def write_result(result: dict, started: float, out: Path, log: Callable[[str], None]) -> None:
    """Stamp the run time and the load average (other work skews timings), print the JSON and write it to ``out``."""
    import os

    result["total_seconds"] = round(time.perf_counter() - started, 1)
    if hasattr(os, "getloadavg"):
        result.setdefault("machine", {})["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=2)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    log(f"wrote {out} in {result['total_seconds']} s")


def git_commit(folder: Path) -> str | None:
    """The short commit the benchmark ran at, so results can be matched to code (None outside a checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def top_ops(run: Callable[[], object], top: int = 12) -> list[dict]:
    """torch.profiler's ops with the most self CPU time over one ``run()``: op, share of all self time, calls."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "self_share": round(e.self_cpu_time_total / total, 3), "calls": e.count}
            for e in events[:top]]


def matmul_gflops(device=None, size: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of a size x size float32 matmul on these threads: the achievable peak to compare a network with."""
    import torch

    a = torch.randn(size, size, device=device)
    a @ a
    if a.device.type == "cuda":
        torch.cuda.synchronize(a.device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ a
    if a.device.type == "cuda":
        torch.cuda.synchronize(a.device)
    return round(reps * 2 * size ** 3 / (time.perf_counter() - t) / 1e9, 1)


def format_top_ops(ops: list[dict], count: int = 6) -> str:
    return ", ".join(f"{o['op']} {100 * o['self_share']:.0f} %" for o in ops[:count])

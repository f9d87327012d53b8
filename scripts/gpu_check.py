#!/usr/bin/env python
"""One-shot GPU check: the CUDA-only tests and every benchmark's quick mode on the GPU, in one JSON summary.

    python scripts/gpu_check.py [--out build/gpu-check.json] [--budget 480] [--steps tests,reenact,...]

``make gpu-check`` runs it; a session with a GPU runs it first. The steps run one after another, each in a
process of its own with its own time limit, within a total budget (default 8 minutes):

1. ``environment``: torch, CUDA and cuDNN versions, the device's name, memory, compute capability, bf16
   support (in a child process, so this one never holds a CUDA context while the benchmarks measure memory);
2. ``tests``: ``pytest -m gpu -k "not compiled" tests/test_gpu.py`` with a JUnit XML, read into pass/fail counts;
3. the benchmarks, most telling first: ``bench/NAME.py --quick --device cuda --out DIR/NAME.json`` for reenact,
   lipsync, reenact_compile (``bench/reenact.py --compile-only``: FOMM eager against ``torch.compile`` with CUDA
   graphs), then ``tests_compile`` (the ``compiled`` GPU tests, apart: each compiles a network first), then
   generate, swap_train and extract; evaluate (dlib only, no torch) runs without ``--device``.

A step that fails or runs past its limit is recorded with the tail of its log (status failed / timeout) and the
next one runs; a step the budget has no time left for is skipped, one the budget runs out on is stopped
(``--steps`` runs either alone later). Logs, the JUnit XML and each benchmark's JSON go into the folder beside
``--out`` (``build/gpu-check/``). ``targets`` holds the issue's GPU targets with ``met``: true, false, or null
where the run cannot tell (not measured, not the GPU or the size the target names). The summary is rewritten
after every step, so a cut-off run still leaves one.

Exit status: 0 without a CUDA GPU ("no CUDA GPU: nothing to check"); on a GPU 0 when no step failed or timed
out (skipped and stopped steps and targets not met are reported, not failures), else 1.

``FACESYNTH_GPU_CHECK_DEVICE=cpu`` rehearses the whole check on the CPU (same JSON shape, ``"cuda": false``,
``"rehearsal": true``, three times the step limits); the tests then run their CPU variants (tests/test_gpu.py).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVICE_ENV = "FACESYNTH_GPU_CHECK_DEVICE"
SCHEMA = "facesynth-gpu-check/1"
DEFAULT_BUDGET_S = 480.0
MIN_STEP_S = 20.0              # a step is not started with less time than this left in the budget
TAIL_LINES = 20
# each step's own limit (the budget's remainder when that is less); measured on no GPU yet: generous guesses
STEP_LIMITS_S = {"environment": 120, "tests": 240, "reenact": 180, "lipsync": 210, "reenact_compile": 240,
                 "tests_compile": 240, "generate": 120, "swap_train": 180, "extract": 120, "evaluate": 180}
REHEARSAL_SLOWDOWN = 3.0      # the step limits are for a GPU; a CPU rehearsal gets this many times longer
# steps that run a benchmark script with extra arguments: step -> (script under bench/, arguments)
BENCH_VARIANTS = {"reenact_compile": ("reenact", ["--compile-only"])}
# the test steps: pytest's -k expression of each (the torch.compile tests apart: their compilation takes time)
TEST_STEPS = {"tests": "not compiled", "tests_compile": "compiled"}
DEFAULT_STEPS = ("tests", "reenact", "lipsync", "reenact_compile", "tests_compile", "generate", "swap_train",
                 "extract", "evaluate")
CPU_ONLY_BENCHES = {"evaluate": "dlib only (torch is not loaded): runs on the CPU whatever the device"}
REAL_TIME_FPS = 25.0           # the video rate Wav2Lip's pipeline writes
WAV2LIP_WELL_ABOVE = 10.0      # "well above real time" (issue 15 gives no number): 10x the video rate


def log(msg: str) -> None:
    print(f"[gpu-check] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-check.json", help="the JSON summary")
    ap.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for all steps together")
    ap.add_argument("--steps", default=",".join(DEFAULT_STEPS),
                    help=f"comma-separated steps after the environment (default: {','.join(DEFAULT_STEPS)})")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        print(json.dumps(probe_environment()))
        return 0
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEP_LIMITS_S or s == "environment"]
    if unknown:
        ap.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(DEFAULT_STEPS)}")
    return run_check(args.out.resolve(), steps, args.budget)      # absolute: the steps run from the project root


def run_check(out: Path, steps: list[str], budget: float) -> int:
    started = time.monotonic()
    device = os.environ.get(DEVICE_ENV, "cuda")
    rehearsal = device.split(":")[0] == "cpu"
    work = out.parent / out.stem
    work.mkdir(parents=True, exist_ok=True)
    limits = {k: v * (REHEARSAL_SLOWDOWN if rehearsal else 1.0) for k, v in STEP_LIMITS_S.items()}
    summary: dict = {
        "schema": SCHEMA, "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(), "cuda": False, "device": device, "rehearsal": rehearsal,
        "budget_s": budget, "elapsed_s": None, "environment": None, "steps": [], "tests": None,
        "tests_compile": None,
        "benchmarks": {}, "targets": [], "ok": None, "exit_code": None, "files": str(work),
    }

    def left() -> float:
        return budget - (time.monotonic() - started)

    def save() -> None:
        summary["elapsed_s"] = round(time.monotonic() - started, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2) + "\n")

    env_step = run_step("environment", [sys.executable, str(Path(__file__).resolve()), "--probe"],
                        min(limits["environment"], max(left(), MIN_STEP_S)), work)
    summary["steps"].append(env_step)
    environment = _json_from(work / "environment.out") if env_step["status"] == "passed" else None
    summary["environment"] = environment
    if environment is None:
        log("could not read the environment (torch does not import?): see " + env_step["log"])
        return finish(summary, save, out, 1)
    summary["cuda"] = bool(environment.get("cuda_available")) and not rehearsal
    if not summary["cuda"] and not rehearsal:
        print("no CUDA GPU: nothing to check")
        summary["device"] = None
        return finish(summary, save, out, 0)
    save()

    gpu_name = environment.get("device_name") if summary["cuda"] else None
    for name in steps:
        limit = min(limits[name], left())
        if limit < MIN_STEP_S:
            summary["steps"].append({"name": name, "status": "skipped", "seconds": 0.0,
                                     "reason": f"the {budget:g} s budget was spent; run it alone with --steps {name}"})
            log(f"{name}: skipped (budget spent)")
            continue
        if name in TEST_STEPS:
            xml = work / f"{name}.xml"
            xml.unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-k", TEST_STEPS[name], "-q", "-rs", "-p",
                   "no:cacheprovider", "tests/test_gpu.py", f"--junitxml={xml}"]
            step = run_step(name, cmd, limit, work)
            summary[name] = parse_junit(xml) if xml.is_file() else None
            if summary[name] is not None:
                t = summary[name]
                if step["status"] == "passed" and (t["failed"] or t["errors"] or not t["passed"]):
                    step["status"] = "failed"
                step["detail"] = (f"{t['passed']} passed, {t['failed']} failed, {t['errors']} errors, "
                                  f"{t['skipped']} skipped")
        else:
            result = work / f"{name}.json"
            result.unlink(missing_ok=True)
            script, extra = BENCH_VARIANTS.get(name, (name, []))
            cmd = [sys.executable, f"bench/{script}.py", "--quick", *extra, "--out", str(result)]
            if name not in CPU_ONLY_BENCHES:
                cmd[3:3] = ["--device", device]
            step = run_step(name, cmd, limit, work)
            data = _json_from(result)
            summary["benchmarks"][name] = bench_figures(name, data) if data is not None else None
            if data is not None:
                step["result"] = str(result)
                failures = list(_error_records(data))
                if failures:
                    step["failed_records"] = failures
            if name in CPU_ONLY_BENCHES:
                step["note"] = CPU_ONLY_BENCHES[name]
        if limit < limits[name]:
            step["limit_note"] = f"limit cut from {limits[name]:.0f} s to the budget's remaining {limit:.0f} s"
            if step["status"] == "timeout":     # the budget ran out, not the step's own limit: like a skip
                step["status"] = "stopped"
                step["reason"] = f"the {budget:g} s budget ran out while it ran; run it alone with --steps {name}"
        summary["steps"].append(step)
        summary["targets"] = evaluate_targets(summary["benchmarks"], gpu_name, summary["cuda"])
        save()
    ok = all(s["status"] in ("passed", "skipped", "stopped") for s in summary["steps"])
    return finish(summary, save, out, 0 if ok else 1)


def finish(summary: dict, save, out: Path, code: int) -> int:
    if not summary["targets"]:         # nothing measured: every target listed, met null
        summary["targets"] = evaluate_targets(summary["benchmarks"], None, summary["cuda"])
    summary["ok"] = code == 0
    summary["exit_code"] = code
    save()
    print(format_table(summary))
    print(f"wrote {out}")
    return code


# --------------------------------------------------------------------------------------------------- the steps

def run_step(name: str, cmd: list[str], limit: float, work: Path) -> dict:
    """Run ``cmd`` from the project root in a session of its own, stdout and stderr into ``work/NAME.out|.err``.

    Past ``limit`` seconds the whole session is stopped (SIGTERM, then SIGKILL): the benchmarks' child processes
    go with it. Returns the step's record: status passed / failed / timeout, the return code, seconds, and on
    failure the last lines of its stderr (of stdout when stderr is empty).
    """
    out_path, err_path = work / f"{name}.out", work / f"{name}.err"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log(f"{name}: {shlex.join(cmd)} (limit {limit:.0f} s)")
    t = time.monotonic()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, env=env, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            _stop(proc)
            code = None
    seconds = round(time.monotonic() - t, 1)
    status = "timeout" if code is None else "passed" if code == 0 else "failed"
    rec = {"name": name, "status": status, "returncode": code, "seconds": seconds, "limit_s": round(limit),
           "command": shlex.join(cmd), "log": str(err_path)}
    if status != "passed":
        rec["error_tail"] = _tail(err_path) or _tail(out_path)
    log(f"{name}: {status} in {seconds} s")
    return rec


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    try:
        return path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return []


def _json_from(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def probe_environment() -> dict:
    """What the check runs on: versions, and for CUDA the device's name, memory, capability and precisions."""
    import platform

    import torch

    import facesynth
    from facesynth.gpu import amp_dtype, in_colab

    info: dict = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
                  "torch": torch.__version__, "torch_cuda_build": torch.version.cuda,
                  "facesynth": facesynth.__version__, "colab": in_colab(), "cuda_available": torch.cuda.is_available()}
    if not info["cuda_available"]:
        return info
    props = torch.cuda.get_device_properties(0)
    info.update(device_count=torch.cuda.device_count(), device_name=props.name,
                capability=f"{props.major}.{props.minor}", total_memory_mib=round(props.total_memory / 2**20),
                cudnn=torch.backends.cudnn.version(), bf16_supported=torch.cuda.is_bf16_supported(),
                bf16_native=props.major >= 8, amp_dtype=str(amp_dtype("cuda")).replace("torch.", ""),
                cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                nccl_available=torch.distributed.is_available() and torch.distributed.is_nccl_available())
    try:
        info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    except Exception as e:     # noqa: BLE001  (a build without NCCL: say so, keep the rest)
        info["nccl"] = f"unknown ({type(e).__name__})"
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        info["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        info["driver"] = None
    return info


def parse_junit(path: Path) -> dict:
    """pytest's JUnit XML → counts and one record per test (name, outcome, seconds, first line of the message)."""
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for tag, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None:
                outcome = name
                message = (node.get("message") or node.text or "").strip().splitlines()[:1]
                message = message[0][:300] if message else None
                break
        tests.append({"name": case.get("name"), "outcome": outcome, "seconds": round(float(case.get("time", 0)), 2),
                      **({"message": message} if message else {})})
    count = lambda o: sum(t["outcome"] == o for t in tests)  # noqa: E731
    return {"passed": count("passed"), "failed": count("failed"), "errors": count("error"),
            "skipped": count("skipped"), "tests": tests}


# ------------------------------------------------------------------------------------------ benchmark results

def bench_figures(name: str, data: dict) -> dict:
    """The figures of one benchmark's JSON that the summary keeps (the whole file stays in the check's folder)."""
    if name == "swap_train":
        return {"target": data.get("target"),
                "configs": [{k: c.get(k) for k in ("config", "batch", "iterations_per_s", "images_per_s",
                                                   "gpu_peak_allocated_mib", "error") if k in c}
                            for c in data.get("configs", [])]}
    if name == "generate":
        return {"summary": data.get("summary"), "resolution": (data.get("config") or {}).get("resolution"),
                "speed": [{k: r.get(k) for k in ("batch", "dtype", "images_per_s", "gpu_peak_allocated_mib", "error")
                           if k in r} for r in data.get("speed", [])]}
    if name == "extract":
        return {"configs": [{k: c.get(k) for k in ("config", "fps", "detect_fps", "skipped", "reason", "error")
                             if k in c} for c in data.get("configs", [])],
                "memory_flat": (data.get("streaming") or {}).get("memory_flat")}
    return {"summary": data.get("summary")}


def _error_records(obj, where: str = ""):
    """Every record in a benchmark's JSON that holds an ``error`` (a child process that failed)."""
    if isinstance(obj, dict):
        if "error" in obj:
            yield {"where": where or "/", "error": obj["error"], "stderr_tail": obj.get("stderr_tail", [])[-5:]}
            return
        for key, value in obj.items():
            yield from _error_records(value, f"{where}/{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _error_records(value, f"{where}/{i}")


def evaluate_targets(benchmarks: dict, gpu_name: str | None, cuda: bool) -> list[dict]:
    """The issue's GPU targets against what the benchmarks measured.

    ``benchmarks`` maps a benchmark's name to ``bench_figures`` of its JSON (None or absent: not measured).
    ``met`` is True/False, or None where this run cannot tell: not measured, not on CUDA, or not on the GPU
    model (H100) or at the size (1024x1024) the target names.
    """
    def gpu_is(model: str) -> bool:
        return cuda and model in (gpu_name or "")

    def target(name, what, threshold, unit, source, measured, met, note=None) -> dict:
        if measured is None:
            met, note = None, f"not measured (bench/{source}.py did not report it)"
        elif not cuda:
            met, note = None, "measured on the CPU: a GPU target"
        rec = {"name": name, "what": what, "threshold": threshold, "unit": unit, "measured": measured, "met": met,
               "source": f"bench/{source}.py"}
        if note:
            rec["note"] = note
        return rec

    out = []
    # the eager benchmark's best batch, or the compiled one's (reenact_compile) where faster
    fomm = [((benchmarks.get(k) or {}).get("summary") or {}).get("best_batched") or {}
            for k in ("reenact", "reenact_compile")]
    fps = max((b["fps"] for b in fomm if b.get("fps")), default=None)
    out.append(target("fomm_fps_h100", "FOMM animate at 256x256 on one H100 (issue 15)", 1000.0, "frames/s",
                      "reenact", fps, bool(fps >= 1000.0) if fps is not None and gpu_is("H100") else None,
                      None if gpu_is("H100") or not cuda else f"on {gpu_name}, not an H100: met left unset"))

    lipsync = (benchmarks.get("lipsync") or {}).get("summary") or {}
    network = [v for k, v in (lipsync.get("fps") or {}).items() if k.startswith("network-") and v]
    best = max(network, default=None)
    need = WAV2LIP_WELL_ABOVE * REAL_TIME_FPS
    out.append(target("wav2lip_network_well_above_real_time",
                      f"Wav2Lip well above real time on the GPU (issue 15): the network step (InferenceWav2Lip, "
                      f"batch building and paste) at {WAV2LIP_WELL_ABOVE:g}x the {REAL_TIME_FPS:g} frames/s video "
                      f"rate (the issue gives no number)", need, "frames/s", "lipsync", best,
                      bool(best >= need) if best is not None else None))
    pipeline = lipsync.get("pipeline_fps")
    out.append(target("wav2lip_pipeline_real_time",
                      f"lipsync() end to end (detection, mel, network, paste, H.264 + AAC) at least the "
                      f"{REAL_TIME_FPS:g} frames/s it writes", REAL_TIME_FPS, "frames/s", "lipsync", pipeline,
                      bool(pipeline >= REAL_TIME_FPS) if pipeline is not None else None,
                      "quick mode: a 2 s sound (50 frames), so start-up and detection weigh in"
                      if pipeline is not None else None))

    generate = benchmarks.get("generate") or {}
    g_summary = generate.get("summary") or {}
    images = g_summary.get("best_bf16_images_per_s")
    res = generate.get("resolution")
    out.append(target("stylegan_images_per_s_h100", "StyleGAN at 1024x1024 in bf16 on one H100", 300.0, "images/s",
                      "generate", images, g_summary.get("met"),
                      f"measured at {res}x{res} (quick mode): the target is at 1024x1024" if res and res != 1024
                      else None))

    swap = (benchmarks.get("swap_train") or {}).get("target") or {}
    paper = next((c for c in (benchmarks.get("swap_train") or {}).get("configs", []) if c.get("config") == "paper"),
                 {})
    its = swap.get("measured_iterations_per_s", paper.get("iterations_per_s"))
    out.append(target("swap_paper_iterations_per_s_h100",
                      "face-swap 'paper' preset at batch 12 on one H100: the study's 400k iterations in an hour",
                      111.0, "iterations/s", "swap_train", its, swap.get("met"), swap.get("not_checked")))
    return out


def format_table(summary: dict) -> str:
    env = summary.get("environment") or {}
    where = (env.get("device_name") or ("CPU (rehearsal)" if summary.get("rehearsal") else "no CUDA GPU"))
    lines = [f"gpu-check on {where}: torch {env.get('torch')}, CUDA build {env.get('torch_cuda_build')}, "
             f"{summary.get('elapsed_s')} s of a {summary.get('budget_s'):g} s budget",
             f"{'step':<12} {'status':<8} {'seconds':>8}  detail"]
    for s in summary["steps"]:
        detail = s.get("detail") or s.get("reason") or ""
        if s.get("failed_records"):
            detail = f"{len(s['failed_records'])} measurement(s) failed, first {s['failed_records'][0]['where']}"
        elif s["status"] in ("failed", "timeout") and not detail:
            detail = (s.get("error_tail") or [""])[-1][:100]
        lines.append(f"{s['name']:<12} {s['status']:<8} {s['seconds']:>8.1f}  {detail}")
    if summary.get("targets"):
        lines.append(f"{'target':<38} {'measured':>10} {'needed':>8}  met")
        for t in summary["targets"]:
            measured = "-" if t["measured"] is None else f"{t['measured']:.1f}"
            lines.append(f"{t['name']:<38} {measured:>10} {t['threshold']:>8g}  "
                         f"{'null' if t['met'] is None else str(t['met']).lower()}")
    return "\n".join(lines)


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None


if __name__ == "__main__":
    sys.exit(main())

"""scripts/gpu_check.py on the CPU: without a GPU it says so and exits 0; its step runner and its reading of the
benchmarks' results (targets met, not met, not measurable) on made-up results."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"
H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the script runs the whole check")
def test_without_a_gpu_it_says_so_writes_its_summary_and_exits_0(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FACESYNTH_GPU_CHECK_DEVICE"}
    out = tmp_path / "gpu-check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no CUDA GPU: nothing to check" in proc.stdout
    summary = json.loads(out.read_text())
    assert summary["cuda"] is False and summary["ok"] is True and summary["exit_code"] == 0
    assert summary["environment"]["cuda_available"] is False
    assert summary["environment"]["torch"] == torch.__version__
    assert [s["name"] for s in summary["steps"]] == ["environment"] and summary["steps"][0]["status"] == "passed"
    assert summary["tests"] is None and summary["benchmarks"] == {}
    assert summary["targets"] and all(t["met"] is None for t in summary["targets"])


# --- targets ----------------------------------------------------------------------------------------------------------

def reenact_json(best_fps: float) -> dict:
    """The parts of bench/reenact.py's JSON the check reads."""
    return {"benchmark": "reenact",
            "summary": {"per_frame_fps": 40.0, "batched_fps": {"8": best_fps / 2, "64": best_fps},
                        "best_batched": {"batch": 64, "fps": best_fps}}}


def lipsync_json(network_fps: float, pipeline_fps: float) -> dict:
    return {"benchmark": "lipsync",
            "summary": {"fps": {"official_loop": 90.0, "network-b16": network_fps / 2, "network-b128": network_fps},
                        "pipeline_fps": pipeline_fps}}


def targets_of(gpu_check, results: dict, gpu_name: str | None, cuda: bool = True) -> dict:
    figures = {name: None if data is None else gpu_check.bench_figures(name, data) for name, data in results.items()}
    return {t["name"]: t for t in gpu_check.evaluate_targets(figures, gpu_name, cuda)}


@pytest.mark.parametrize("fps,met", [(1500.0, True), (999.0, False)])
def test_fomm_target_is_judged_on_an_h100(gpu_check, fps, met):
    t = targets_of(gpu_check, {"reenact": reenact_json(fps)}, H100)["fomm_fps_h100"]
    assert t["measured"] == fps and t["threshold"] == 1000.0 and t["met"] is met


def test_fomm_target_is_left_null_off_an_h100_on_the_cpu_and_when_not_measured(gpu_check):
    t4 = targets_of(gpu_check, {"reenact": reenact_json(1500.0)}, "Tesla T4")["fomm_fps_h100"]
    assert t4["measured"] == 1500.0 and t4["met"] is None and "not an H100" in t4["note"]
    cpu = targets_of(gpu_check, {"reenact": reenact_json(30.0)}, None, cuda=False)["fomm_fps_h100"]
    assert cpu["met"] is None and "CPU" in cpu["note"]
    missing = targets_of(gpu_check, {"reenact": None}, H100)["fomm_fps_h100"]
    assert missing["measured"] is None and missing["met"] is None and "not measured" in missing["note"]


def test_fomm_target_takes_the_compiled_step_where_it_is_faster(gpu_check):
    compiled = {"benchmark": "reenact", "mode": "compile",
                "summary": {"eager_fps": 900.0, "compiled_fps": 1200.0,
                            "best_batched": {"batch": 64, "fps": 1200.0, "compiled": True}}}
    t = targets_of(gpu_check, {"reenact": reenact_json(900.0), "reenact_compile": compiled}, H100)["fomm_fps_h100"]
    assert t["measured"] == 1200.0 and t["met"] is True
    slower = targets_of(gpu_check, {"reenact": reenact_json(1100.0), "reenact_compile": compiled | {
        "summary": {"best_batched": {"batch": 64, "fps": 800.0}}}}, H100)["fomm_fps_h100"]
    assert slower["measured"] == 1100.0 and slower["met"] is True
    alone = targets_of(gpu_check, {"reenact_compile": compiled}, H100)["fomm_fps_h100"]
    assert alone["measured"] == 1200.0
    assert "reenact_compile" in gpu_check.DEFAULT_STEPS and gpu_check.BENCH_VARIANTS["reenact_compile"] == (
        "reenact", ["--compile-only"])


def test_wav2lip_targets_take_the_best_network_rate_and_the_pipeline_rate(gpu_check):
    fast = targets_of(gpu_check, {"lipsync": lipsync_json(900.0, 60.0)}, "Tesla T4")
    assert fast["wav2lip_network_well_above_real_time"]["measured"] == 900.0
    assert fast["wav2lip_network_well_above_real_time"]["threshold"] == 250.0
    assert fast["wav2lip_network_well_above_real_time"]["met"] is True
    assert fast["wav2lip_pipeline_real_time"]["met"] is True
    slow = targets_of(gpu_check, {"lipsync": lipsync_json(200.0, 20.0)}, H100)
    assert slow["wav2lip_network_well_above_real_time"]["met"] is False
    assert slow["wav2lip_pipeline_real_time"]["met"] is False
    cpu = targets_of(gpu_check, {"lipsync": lipsync_json(900.0, 60.0)}, None, cuda=False)
    assert cpu["wav2lip_network_well_above_real_time"]["met"] is None


def test_stylegan_and_swap_targets_keep_the_benchmarks_own_verdicts(gpu_check):
    results = {
        "generate": {"config": {"resolution": 256},
                     "speed": [{"batch": 32, "dtype": "bf16", "images_per_s": 900.0}],
                     "summary": {"best_bf16_images_per_s": 900.0, "met": None}},
        "swap_train": {"target": {"iterations_per_s": 111.0, "measured_iterations_per_s": 150.0, "met": True},
                       "configs": [{"config": "paper", "batch": 12, "iterations_per_s": 150.0}]},
    }
    t = targets_of(gpu_check, results, H100)
    assert t["stylegan_images_per_s_h100"]["measured"] == 900.0 and t["stylegan_images_per_s_h100"]["met"] is None
    assert "256x256" in t["stylegan_images_per_s_h100"]["note"]
    assert t["swap_paper_iterations_per_s_h100"]["measured"] == 150.0
    assert t["swap_paper_iterations_per_s_h100"]["met"] is True


def test_failed_measurements_are_found_anywhere_in_a_result(gpu_check):
    data = {"configs": [{"config": "ok", "fps": 3.0},
                        {"config": "bad", "error": "child exited 1", "stderr_tail": ["a", "RuntimeError: CUDA"]}],
            "streaming": {"short": {"error": "child exited -9"}, "long": {"peak_rss_mib": 10.0}}}
    found = list(gpu_check._error_records(data))
    assert [f["where"] for f in found] == ["/configs/1", "/streaming/short"]
    assert found[0]["stderr_tail"][-1] == "RuntimeError: CUDA"


# --- steps ------------------------------------------------------------------------------------------------------------

def test_junit_results_become_counts_and_one_record_per_test(gpu_check, tmp_path):
    xml = tmp_path / "tests.xml"
    xml.write_text('<testsuites><testsuite name="pytest" tests="4">'
                   '<testcase classname="tests.test_gpu" name="test_a" time="1.5"/>'
                   '<testcase classname="tests.test_gpu" name="test_b" time="2">'
                   '<failure message="assert 0.2 &lt;= 0.05">long traceback</failure></testcase>'
                   '<testcase classname="tests.test_gpu" name="test_c" time="0">'
                   '<skipped message="needs a CUDA GPU"/></testcase>'
                   '<testcase classname="tests.test_gpu" name="test_d" time="0"><error message="fixture failed"/>'
                   '</testcase></testsuite></testsuites>')
    result = gpu_check.parse_junit(xml)
    assert (result["passed"], result["failed"], result["errors"], result["skipped"]) == (1, 1, 1, 1)
    assert result["tests"][1] == {"name": "test_b", "outcome": "failed", "seconds": 2.0,
                                  "message": "assert 0.2 <= 0.05"}


def test_a_failing_step_is_recorded_with_its_error_tail(gpu_check, tmp_path):
    step = gpu_check.run_step("boom", [sys.executable, "-c", "import sys; print('working'); sys.exit('it broke')"],
                              30, tmp_path)
    assert step["status"] == "failed" and step["returncode"] == 1
    assert step["error_tail"] == ["it broke"]
    assert (tmp_path / "boom.out").read_text() == "working\n"


@pytest.mark.slow
def test_a_step_past_its_limit_is_stopped_with_its_children(gpu_check, tmp_path):
    pid_file = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; "
            f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
            f"open({str(pid_file)!r}, 'w').write(str(c.pid)); print('waiting', flush=True); time.sleep(120)")
    t = time.monotonic()
    step = gpu_check.run_step("slow", [sys.executable, "-c", code], 3, tmp_path)
    assert step["status"] == "timeout" and step["returncode"] is None
    assert time.monotonic() - t < 30
    assert step["error_tail"] == ["waiting"]          # stdout's tail when stderr is empty
    child = Path(f"/proc/{pid_file.read_text()}/stat")
    for _ in range(50):                               # stopped: gone, or a zombie waiting to be reaped
        if not child.exists() or child.read_text().split(")")[-1].split()[0] in ("Z", "X"):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the step's child process still runs")


def test_the_summary_table_names_every_step_and_target(gpu_check):
    reenact = gpu_check.bench_figures("reenact", reenact_json(1500.0))
    summary = {"environment": {"device_name": H100, "torch": "2.14.1", "torch_cuda_build": "13.0"},
               "elapsed_s": 400.0, "budget_s": 480.0, "rehearsal": False,
               "steps": [{"name": "environment", "status": "passed", "seconds": 5.0},
                         {"name": "tests", "status": "passed", "seconds": 80.0, "detail": "11 passed, 0 failed"},
                         {"name": "lipsync", "status": "timeout", "seconds": 150.0, "error_tail": ["network-b128 ..."]},
                         {"name": "evaluate", "status": "skipped", "seconds": 0.0, "reason": "the budget was spent"}],
               "targets": gpu_check.evaluate_targets({"reenact": reenact}, H100, True)}
    table = gpu_check.format_table(summary)
    for text in ("environment", "11 passed", "network-b128", "the budget was spent", "fomm_fps_h100", "1500.0",
                 "true", "null"):
        assert text in table

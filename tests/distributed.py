"""torchrun for the distributed tests: launch a worker script on N CPU ranks (gloo) and compare their weights."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCH_TIMEOUT_S = 240          # ranks out of step hang in a collective; fail instead of waiting forever


def launch(script: Path, args: list[str], cwd: Path, world: int = 2, pythonpath: bool = False
           ) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node world script args`` in ``cwd``, output captured; the test fails
    (and torchrun's whole process group is killed) after LAUNCH_TIMEOUT_S. ``pythonpath``: put this checkout on
    the workers' PYTHONPATH."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--standalone",
           str(script), *args]
    env = dict(os.environ)                       # the test's FACESYNTH_OFFLINE, weights, TORCH_HOME, cache
    env.setdefault("OMP_NUM_THREADS", "1")       # the ranks share this machine's cores
    env["PYTHONUNBUFFERED"] = "1"
    if pythonpath:
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)      # torchrun and its workers: the group this test started
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {LAUNCH_TIMEOUT_S} s (ranks out of step?):\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def max_diff(a: dict, b: dict) -> float:
    """Largest absolute difference between two state dicts with the same keys."""
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)

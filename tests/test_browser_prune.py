"""Pruning by hand as a person does it: notebook 01 in JupyterLab, in a headless browser, two faces clicked.

JupyterLab runs on a local port; Debian's chromium opens a small copy of ``notebooks/01_face_swap.ipynb``, runs
its cells from JupyterLab's Run menu, clicks two face tiles of the ``PruneWidget`` and its "apply" button, then
runs the rest. What counts is on disk afterwards: the face set, and the training log going on without them.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

import pytest
from browser import chromium_driver, require_chromium

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_face_swap.ipynb"
PRUNE_AT, ITERATIONS = 20, 40          # the quick preset on 20 faces of A (5 fps): well under a minute of training
T = TypeVar("T")


@pytest.mark.slow
def test_two_faces_clicked_in_the_prune_widget_are_excluded_and_training_goes_on_without_them(tmp_path, samples):
    """Train to PRUNE_AT, click the two worst-ranked tiles and "apply", reload, train on to ITERATIONS."""
    require_chromium()
    pytest.importorskip("jupyterlab")
    from facesynth.extract import FaceSet
    from facesynth.training import read_log

    out = tmp_path / "nb01"
    cells = _small_copy(tmp_path / "prune_by_hand.ipynb", QUICK=False, PRESET="quick", ITERATIONS=ITERATIONS,
                        PRUNE_AT=PRUNE_AT, PRUNE_BY_HAND=True, SIZE=64, FPS=5, DETECTOR="dlib", DEVICE="cpu",
                        OUT=str(out), SOURCE_A=str(samples.talking_head), SOURCE_B=str(samples.astronaut))
    with _jupyter_lab(tmp_path) as (base, token), chromium_driver() as driver:
        lab = _Lab(driver, tmp_path)
        lab.open(f"{base}/lab/tree/prune_by_hand.ipynb?token={token}")
        lab.run(cells["widget"], "notebook:run-all-above", until=cells["above"], timeout=300)
        lab.run(cells["widget"], "notebook:run-cell", until=cells["widget"], timeout=60)

        tiles = lab.wait(lambda: lab.toggles() or None, 60, "the prune widget's face tiles")
        clicked = [int(t.get_attribute("title").removeprefix("face ")) for t in tiles[:2]]   # the two worst-ranked
        for tile in tiles[:2]:
            tile.click()
        lab.wait(lambda: [t.text for t in lab.toggles()[:2]] == ["excluded", "excluded"] or None, 30,
                 "both clicked tiles to show 'excluded'")
        lab.button("apply").click()
        lab.wait(lambda: "excluded 2, included 0" in lab.output_text(cells["widget"]) or None, 30,
                 "the widget to report the applied exclusions")

        lab.run(cells["reload"], "notebook:run-all-below", until=cells["train"], timeout=300)
        reload_text = lab.output_text(cells["reload"])
        last_output = lab.output_text(cells["train"])

    total = len(FaceSet.open(out / "A"))
    excluded = sorted(f.id for f in FaceSet.open(out / "A") if f.excluded)
    assert excluded == sorted(clicked), f"clicked {clicked}; the reload cell printed: {reload_text}"
    assert f"active faces after pruning: {{'a': {total - 2}, 'b': 1}}" in reload_text, reload_text
    log = read_log(out / "model")
    assert log[-1]["iteration"] == ITERATIONS, last_output
    changes = [r for r in log if r.get("event") == "data_changed"]
    assert [(r["iteration"], r["faces_a_before"], r["faces_a"]) for r in changes] == [(PRUNE_AT + 1, total, total - 2)]


def _small_copy(path: Path, **parameters: object) -> dict[str, int]:
    """Notebook 01 with ``parameters`` in its parameters cell, cut after the continued training cell.

    Returns the indices of the cells the test drives: "above" (the last code cell before the widget's), "widget"
    (PruneWidget), "reload" (``reload_faces``) and "train" (the second ``trainer.train``); every cell up to there
    is kept as it is.
    """
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [(i, "".join(c["source"])) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    widget = next(i for i, src in code if src.startswith("PruneWidget("))
    reload = next(i for i, src in code if "trainer.reload_faces()" in src)
    train = [i for i, src in code if "trainer.train(" in src][1]
    assert widget < reload < train, "notebook 01 no longer prunes by hand between its two training cells"
    params = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    params["source"] = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    nb["cells"] = nb["cells"][:train + 1]
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return {"above": max(i for i, _ in code if i < widget), "widget": widget, "reload": reload, "train": train}


@contextmanager
def _jupyter_lab(root: Path) -> Iterator[tuple[str, str]]:
    """JupyterLab serving ``root`` on a free local port, with its own settings; yields (base URL, token)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    config = root / "jupyter"
    settings = config / "lab" / "user-settings" / "@jupyterlab"
    _write_json(settings / "apputils-extension" / "notification.jupyterlab-settings",   # no news/update toasts
                {"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True})
    _write_json(settings / "notebook-extension" / "tracker.jupyterlab-settings",        # every cell in the DOM
                {"windowingMode": "none"})
    env = {**os.environ, "FACESYNTH_OFFLINE": "1", "OMP_NUM_THREADS": "1", "JUPYTER_CONFIG_DIR": str(config),
           "JUPYTER_DATA_DIR": str(config / "data"), "JUPYTER_RUNTIME_DIR": str(config / "runtime")}
    env.pop("MPLBACKEND", None)            # conftest's Agg would hide the notebook's inline figures
    log = root / "jupyter_lab.log"
    with log.open("w") as stream:
        proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",  # CI is root
                                 "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
                                 f"--ServerApp.root_dir={root}"],
                                env=env, cwd=root, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"JupyterLab did not answer in 120 s:\n{log.read_text()[-3000:]}"
                time.sleep(1)
        yield base, token
    finally:
        proc.terminate()                   # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class _Lab:
    """A JupyterLab notebook page in a selenium driver, driven through its menus as a person would."""

    def __init__(self, driver: WebDriver, debug_dir: Path):
        self.driver, self.debug_dir = driver, debug_dir

    def open(self, url: str) -> None:
        self.driver.get(url)
        self.wait(lambda: self._state()["prompts"] or None, 120, "the notebook to open")
        self.wait(lambda: self._state()["idle"] or None, 120, "the kernel to be idle")

    def run(self, select: int, command: str, until: int, timeout: float) -> None:
        """Select cell ``select``, pick ``command`` from the Run menu, wait until code cell ``until`` has run."""
        cells = self.wait(lambda: self._css(".jp-Notebook .jp-Cell")[select:select + 1] or None, 60,
                          f"cell {select} to be rendered")        # a page still rendering has fewer cells
        self._css(".jp-InputPrompt", cells[0])[0].click()
        self.wait(lambda: self._state()["selected"][select] or None, 10, f"cell {select} to be selected")
        next(m for m in self._css(".lm-MenuBar-item") if m.text.strip() == "Run").click()
        self.wait(lambda: self._css(f".lm-Menu-item[data-command='{command}']") or None, 10, "the Run menu")[0].click()
        started = time.monotonic()
        self.wait(lambda: self._settled(until, started), timeout, f"cell {until} to run ({command})")
        prompt = self._state()["prompts"][until]
        if not re.fullmatch(r"\[\d+\]:", prompt):
            self.fail(f"cell {until} did not run ({command}); its prompt is {prompt!r}")

    def toggles(self) -> list[WebElement]:
        """The prune widget's face tiles (toggle buttons), in display order; their tooltip is "face <id>"."""
        return self._css(".jp-OutputArea .widget-toggle-button[title^='face ']")

    def button(self, label: str) -> WebElement:
        return next(b for b in self._css(".jp-OutputArea .widget-button") if b.text.strip() == label)

    def output_text(self, index: int) -> str:
        return self._state()["outputs"][index]

    def wait(self, condition: Callable[[], T | None], timeout: float, what: str) -> T:
        """Poll ``condition`` until it returns something other than None; fail with a screenshot after ``timeout``."""
        from selenium.common.exceptions import StaleElementReferenceException

        deadline = time.monotonic() + timeout
        while True:
            try:
                result = condition()
            except StaleElementReferenceException:     # an output re-rendered between finding and reading it
                result = None
            if result is not None:
                return result
            if time.monotonic() > deadline:
                self.fail(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.5)

    def fail(self, message: str) -> None:
        """Fail the test with a screenshot and the last outputs of the notebook, for a debuggable report."""
        shot = self.debug_dir / "failure.png"
        self.driver.save_screenshot(str(shot))
        outputs = [text for text in self._state()["outputs"] if text][-3:]
        pytest.fail(f"{message}\nscreenshot: {shot}\nserver log: {self.debug_dir / 'jupyter_lab.log'}\n"
                    "last notebook outputs:\n" + "\n---\n".join(outputs))

    def _settled(self, index: int, started: float) -> bool | None:
        """True once no cell is queued or running and the kernel is idle, with cell ``index`` run or given up on.

        A cell that raises stops the queue, so ``index`` never gets a number; after a grace period for the run
        to start, an idle notebook counts as settled and ``run`` reports the failure.
        """
        state = self._state()
        busy = any("*" in prompt for prompt in state["prompts"])
        ran = re.fullmatch(r"\[\d+\]:", state["prompts"][index]) is not None
        return True if state["idle"] and not busy and (ran or time.monotonic() - started > 15) else None

    def _state(self) -> dict:
        """Per cell: prompt ("[3]:", "[*]:", "" for markdown), selected, output text; and whether the kernel is idle.

        Read in one script, so that a re-rendering output never leaves a stale element half read.
        """
        return self.driver.execute_script("""
            const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
            return {
              prompts: cells.map(c => (c.querySelector('.jp-InputPrompt')?.innerText || '').trim()),
              selected: cells.map(c => c.classList.contains('jp-mod-selected')),
              outputs: cells.map(c => [...c.querySelectorAll('.jp-OutputArea-output')]
                                          .map(o => o.innerText).join('\\n')),
              idle: document.querySelector(".jp-Notebook-ExecutionIndicator[data-status='idle']") !== null,
            };""")

    def _css(self, selector: str, within: WebElement | None = None) -> list[WebElement]:
        from selenium.webdriver.common.by import By

        return (within or self.driver).find_elements(By.CSS_SELECTOR, selector)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))

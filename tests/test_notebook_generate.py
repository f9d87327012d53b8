"""Notebook 03 (face generation) runs end to end under papermill in QUICK mode, with and without weights."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_face_generation.ipynb"
PKL = Path(__file__).parent / "data" / "stylegan" / "r32.pkl"


def _run(tmp_path: Path, monkeypatch, **parameters) -> tuple[dict, str, str]:
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("PYTHONPATH", str(NOTEBOOK.parents[1]))      # the kernel imports this checkout's facesynth
    monkeypatch.setenv("OMP_NUM_THREADS", "1")     # a shared 2-core machine: two threads on a busy core spin idle
    out_nb = tmp_path / NOTEBOOK.name
    papermill.execute_notebook(str(NOTEBOOK), str(out_nb), parameters={"QUICK": True, **parameters},
                               cwd=str(tmp_path), progress_bar=False, kernel_name="python3")
    nb = json.loads(out_nb.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    html = "".join("".join(o.get("data", {}).get("text/html", "")) for c in nb["cells"] for o in c.get("outputs", []))
    return nb, text, html


def test_notebook_is_committed_without_outputs_and_has_parameters():
    nb = json.loads(NOTEBOOK.read_text())
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"])


@pytest.mark.slow
def test_without_weights_it_trains_a_stand_in_that_draws_the_training_person(tmp_path, samples, monkeypatch,
                                                                            notebook_work):
    from facesynth.media import probe
    from facesynth.training import read_log

    out = notebook_work / "nb03"
    nb, text, html = _run(tmp_path, monkeypatch, OUT=str(out), DETECTOR="dlib", SOURCE=str(samples.talking_head))
    iterations = read_log(out / "model")[-1]["iteration"]
    assert re.search(rf"stand-in: 32 px StyleGAN trained here for {iterations} iterations \([0-9.]+ min\) on "
                     rf"118 faces", text)
    training_cell = next(c for c in nb["cells"] if "LivePlot(" in "".join(c["source"]))
    assert any("image/png" in o.get("data", {}) for o in training_cell["outputs"])     # the live loss plot, inline
    for png in ("faces.png", "loss.png", "gallery.png", "truncation.png", "mixing.png", "noise.png", "projection.png",
                "projection_mixing.png", "identity.png"):
        assert (out / png).stat().st_size > 2_000, png
    assert probe(out / "interpolation_z.mp4").frame_count == 3 * 12 + 1
    assert "<video" in html and "base64" in html
    assert "interpolation_z.mp4: INTACT" in text and "weights: none" in text    # signed; G was trained in memory
    assert "pixel loss only" in text                         # no VGG16 weights in the test environment: said plainly
    evaluation = json.loads((out / "evaluation_generate.json").read_text())
    assert evaluation["n_generated"] == 16 and evaluation["n_real"] == 118 and evaluation["fid"] is None
    assert "weights-inception-2015-12-05-6726825d.pth" in evaluation["notes"][0]
    assert 0 < evaluation["real_diversity"] < 0.6              # one man's faces: the same person
    assert "facesynth-evaluation" in html and "identity_diversity" in text
    # the stand-in's samples are faces, and faces of the man it was trained on rather than of other people
    assert evaluation["faces_generated"] >= 8
    others = evaluation["distance_others"]
    assert set(others) == {"astronaut", "Grace Hopper"}
    assert evaluation["distance_real"] < sum(others.values()) / len(others)


@pytest.mark.slow
def test_with_a_released_pickle_it_uses_it(tmp_path, monkeypatch):
    out = tmp_path / "nb03w"
    _, text, _ = _run(tmp_path, monkeypatch, OUT=str(out), PKL=str(PKL))
    assert "released weights r32.pkl; 32x32, 8 style inputs" in text
    assert "interpolation_z.mp4: INTACT" in text and "weights: r32.pkl (sha256" in text     # the provenance cell
    assert not (out / "model").exists() and (out / "gallery.png").is_file()
    assert json.loads((out / "evaluation_generate.json").read_text())["n_generated"] == 16

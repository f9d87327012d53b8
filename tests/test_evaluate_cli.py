"""``facesynth evaluate``: JSON with values and definitions, a printed table, one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from facesynth.cli import main
from facesynth.evaluate.frames import iter_rgb
from facesynth.media import write_video


@pytest.fixture(scope="module")
def clips(samples, tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    frames = np.stack([f for _, f in zip(range(8), iter_rgb(samples.talking_head))])
    return {"original": write_video(root / "original.mp4", frames, fps=25),
            "short": write_video(root / "short.mp4", frames[:4], fps=25), "root": root}


def test_evaluate_swap_writes_json_and_prints_a_table(clips, samples, capsys):
    out = clips["root"] / "swap.json"
    rc = main(["evaluate", "swap", "--original", str(clips["original"]), "--swapped", str(clips["original"]),
               "--target", str(samples.astronaut), "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["success_rate"] == 0.0 and data["frames"] == 8 and len(data["per_frame"]) == 8
    assert data["id_to_source"] < 0.05       # the same video re-encoded: the same person, a few codec differences
    assert set(data["definitions"]) >= {"id_to_target", "success_rate", "pose_error_deg", "jitter", "face_rate"}
    assert data["weights"]["identity"]["file"] == "dlib_face_recognition_resnet_model_v1.dat"
    table = capsys.readouterr().out
    assert "success_rate" in table and "0.0000" in table and str(out) in table


def test_evaluate_reenact_defaults_to_a_json_beside_the_result(clips, capsys):
    rc = main(["evaluate", "reenact", "--source", str(clips["original"]), "--driving", str(clips["original"]),
               "--result", str(clips["original"])])
    assert rc == 0
    data = json.loads((clips["root"] / "original.mp4.evaluation.json").read_text())
    assert data["l1"] == 0.0 and data["akd"] == 0.0 and data["protocol"].startswith("self-reenactment")
    assert "akd" in capsys.readouterr().out


def test_evaluate_errors_are_one_line_with_exit_2(clips, samples, capsys, tmp_path):
    rc = main(["evaluate", "swap", "--original", str(clips["original"]), "--swapped", str(clips["short"]),
               "--target", str(samples.astronaut), "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "different lengths" in err and "--align time" in err and err.count("\n") == 1
    assert not (tmp_path / "x.json").exists()
    rc = main(["evaluate", "reenact", "--source", str(tmp_path / "missing.png"), "--driving",
               str(clips["original"]), "--result", str(clips["original"])])
    assert rc == 2 and "not found" in capsys.readouterr().err

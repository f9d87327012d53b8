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


@pytest.mark.slow
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


@pytest.mark.slow
def test_evaluate_reenact_defaults_to_a_json_beside_the_result(clips, capsys):
    rc = main(["evaluate", "reenact", "--source", str(clips["original"]), "--driving", str(clips["original"]),
               "--result", str(clips["original"])])
    assert rc == 0
    data = json.loads((clips["root"] / "original.mp4.evaluation.json").read_text())
    assert data["l1"] == 0.0 and data["akd"] == 0.0 and data["protocol"].startswith("self-reenactment")
    assert "akd" in capsys.readouterr().out


@pytest.mark.slow
def test_evaluate_errors_are_one_line_with_exit_2(clips, samples, capsys, tmp_path):
    rc = main(["evaluate", "swap", "--original", str(clips["original"]), "--swapped", str(clips["short"]),
               "--target", str(samples.astronaut), "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "different lengths" in err and "--align time" in err and err.count("\n") == 1
    assert not (tmp_path / "x.json").exists()
    rc = main(["evaluate", "reenact", "--source", str(tmp_path / "missing.png"), "--driving",
               str(clips["original"]), "--result", str(clips["original"])])
    assert rc == 2 and "not found" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_lipsync_offline_reports_the_correlation_and_names_the_missing_syncnet(clips, capsys):
    from pathlib import Path
    clip = Path(__file__).parent / "data" / "syncnet" / "carphone_crop.mp4"     # real face, sound that follows it
    out = clips["root"] / "sync.json"
    assert main(["evaluate", "lipsync", str(clip), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["mouth_audio_corr"] > 0.8 and data["lse_d"] is None
    printed = capsys.readouterr().out
    assert "mouth_audio_corr" in printed and "syncnet_v2.model" in printed
    assert main(["evaluate", "lipsync", str(clips["original"])]) == 2        # no sound track
    assert "no sound track" in capsys.readouterr().err


def test_evaluate_generate_offline_gives_identity_statistics_and_a_note(samples, clips, capsys, tmp_path):
    from facesynth.media import write_image
    generated = tmp_path / "generated"
    generated.mkdir()
    frames = list(iter_rgb(clips["original"]))
    for i, f in enumerate(frames[:3]):
        write_image(generated / f"{i}.png", f)
    assert main(["evaluate", "generate", "--generated", str(generated), "--real", str(samples.portraits)]) == 0
    data = json.loads((generated / "evaluation-generate.json").read_text())
    assert data["fid"] is None and data["face_rate"] == 1.0 and data["n_real"] == 2
    assert data["nearest_real"] > 0.6                 # the man is neither of the two women
    printed = capsys.readouterr().out
    assert "identity_diversity" in printed and "weights-inception-2015-12-05-6726825d.pth" in printed

"""`facesynth demo` end to end on the sample media (a short run: the full recipe's numbers are asserted by the
notebook 01 test, which trains the same recipe)."""
from __future__ import annotations

import json

import pytest

from facesynth.cli import main


@pytest.mark.slow
def test_demo_writes_face_sets_a_labelled_preview_a_strip_and_the_swap_evaluation(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--detector", "dlib", "--swap-iterations", "40"]) == 0
    summary = json.loads((out / "demo.json").read_text())
    assert summary["A"]["faces"] >= 110 and summary["B"]["faces"] == 1      # one person per side, B one photo
    assert summary["B"]["source"].endswith("astronaut.png")
    swap = summary["swap"]
    assert swap["iterations"] == 40 and len(swap["pruned_a"]) == summary["A"]["faces"] // 10
    for key in ("success_rate", "id_to_target", "face_rate", "pose_error_deg", "jitter"):
        assert key in swap["evaluation"]
    assert json.loads((out / "evaluation_swap.json").read_text())["frames"] == 120
    for png in ("preview.png", "before_after.png", "loss.png", "gallery_A.png", "gallery_B.png"):
        assert (out / png).stat().st_size > 10_000, png
    printed = capsys.readouterr().out
    assert "success_rate" in printed and "pruned A's worst 10 %" in printed

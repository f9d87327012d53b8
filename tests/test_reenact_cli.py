"""`facesynth reenact` end to end on the real samples with a small official-layout checkpoint."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facesynth.media import VideoWriter, has_audio, iter_frames, probe, read_image, write_wav

FIXTURES = Path(__file__).parent / "data" / "fomm"


@pytest.mark.slow
def test_reenact_writes_an_animation_with_the_driving_frames_fps_and_audio(samples, tmp_path):
    from facesynth.cli import main

    sr = 16000
    write_wav(tmp_path / "tone.wav", 0.3 * np.sin(2 * np.pi * 330 * np.arange(2 * sr) / sr), sr)
    driving = tmp_path / "driving.mp4"
    with VideoWriter(driving, fps=29.97, audio=tmp_path / "tone.wav") as writer:
        for index, frame in iter_frames(samples.talking_head):
            if index < 30:
                writer.write(frame)
    out = tmp_path / "out.mp4"
    assert main(["reenact", str(out), "--source", str(samples.astronaut), "--driving", str(driving),
                 "--checkpoint", str(FIXTURES / "small-cpk.pt"), "--config", str(FIXTURES / "small.yaml"),
                 "--size", "128", "--detector", "dlib", "--relative", "--adapt-scale"]) == 0
    info = probe(out)
    assert (info.width, info.height) == (128, 128) and abs(info.fps - 29.97) < 0.01 and has_audio(out)
    assert sum(1 for _ in iter_frames(out)) == 30

    pasted = tmp_path / "pasted.mp4"
    assert main(["reenact", str(pasted), "--source", str(samples.astronaut), "--driving", str(driving),
                 "--checkpoint", str(FIXTURES / "small-cpk.pt"), "--config", str(FIXTURES / "small.yaml"),
                 "--size", "128", "--detector", "dlib", "--paste-back"]) == 0
    first = next(frame for _, frame in iter_frames(pasted))
    portrait = read_image(samples.astronaut)
    assert first.shape == portrait.shape
    assert np.abs(first[-40:, -40:].astype(int) - portrait[-40:, -40:]).mean() < 4    # outside the face: kept


@pytest.mark.slow
def test_reenact_without_weights_says_where_to_get_them(samples, tmp_path):
    res = subprocess.run([sys.executable, "-m", "facesynth", "reenact", str(tmp_path / "o.mp4"), "--source",
                          str(samples.astronaut), "--driving", str(samples.talking_head)],
                         capture_output=True, text=True)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "vox-cpk.pth.tar" in lines[0] and "drive.google.com" in lines[0]


@pytest.mark.slow
def test_reenact_keeps_evenly_spaced_frames_that_match_the_written_video(samples, tmp_path):
    from facesynth.reenact import load_fomm, reenact

    driving = tmp_path / "driving.mp4"
    with VideoWriter(driving, fps=25) as writer:
        for index, frame in iter_frames(samples.talking_head):
            if index < 20:
                writer.write(frame)
    model = load_fomm(FIXTURES / "small-cpk.pt", FIXTURES / "small.yaml", device="cpu")
    result = reenact(model, samples.astronaut, driving, tmp_path / "out.mp4", size=128, detector="dlib", keep=3,
                     best_frame=True)
    assert result.frames == 20 and sorted(result.samples) == [0, 10, 19]
    assert result.source.shape == (128, 128, 3) and result.source.dtype == np.uint8
    assert isinstance(result.best_frame, int) and 0 <= result.best_frame < 20
    written = [frame for _, frame in iter_frames(result.video)]
    assert len(written) == 20
    for i, (drv, res) in result.samples.items():
        assert drv.shape == res.shape == (128, 128, 3)
        assert np.abs(written[i].astype(int) - res).mean() < 6          # the kept frame is that frame (H.264 aside)

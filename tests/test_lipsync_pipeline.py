"""The lipsync pipeline against the official inference.py: boxes, smoothing, frames, and files with sound."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facesynth.errors import ConfigError, MediaError, NoFaceError
from facesynth.extract.backends import DetectedFace, FaceBackend
from facesynth.lipsync import (Wav2Lip, chunk_starts, iter_lipsync, lipsync, pad_box, paste_prediction,
                               plan_lipsync, randomize_, smooth_boxes)
from facesynth.media import has_audio, iter_frames, probe, read_image, write_image, write_video

DATA = Path(__file__).parent / "data" / "wav2lip"


class FixedBackend(FaceBackend):
    """A detector that finds one face at the same float box in every frame."""
    name = "fixed"

    def __init__(self, box):
        self.box = np.asarray(box, np.float32)
        self.calls = 0

    def detect(self, frames):
        self.calls += len(frames)
        return [[DetectedFace(self.box.copy(), 1.0, np.zeros((68, 2), np.float32))] for _ in frames]


@pytest.fixture(scope="module")
def logic() -> dict:
    return json.loads((DATA / "logic.json").read_text())


@pytest.fixture(scope="module")
def net() -> Wav2Lip:
    seed = torch.load(DATA / "network.pt", weights_only=True)["wav2lip_seed"]
    return randomize_(Wav2Lip(), seed).eval()


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    from scipy.io import wavfile

    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    wavfile.write(path, 16000, np.load(DATA / "mel.npz")["pcm"])
    return path


# --- boxes --------------------------------------------------------------------------------------------------

def test_padding_and_smoothing_equal_the_official_face_detect(logic):
    h, w = logic["frame_size"]
    for key, case in logic["boxes"].items():
        boxes = np.array([pad_box(d, (0, 10, 0, 0), (w, h)) for d in case["detections"]])
        if key.endswith("_smooth"):
            boxes = smooth_boxes(boxes)
        assert boxes[:, [1, 3, 0, 2]].tolist() == case["coords"], key


def test_smoothing_quirks():
    boxes = np.array([[0, 0, 10, 10], [10, 10, 20, 20], [20, 20, 30, 30], [30, 30, 41, 41]])
    assert smooth_boxes(boxes).tolist() == [[30, 30, 41, 41]] * 4                  # 4 frames: the last one's box
    five = np.array([[0, 0, 0, 0]] * 4 + [[8, 8, 8, 8]])
    # 1.6 truncated to 1; from row 1 on the window is rows 0-4, holding rows already smoothed: 9/5, 10/5, 12/5, 14/5
    assert smooth_boxes(five)[:, 0].tolist() == [1, 1, 2, 2, 2]
    # 3 frames: the window is rows 1-2 (slice [-2:]), so frame 0's own box is never used
    assert smooth_boxes(boxes[:3]).tolist() == [[15, 15, 25, 25], [15, 15, 25, 25], [17, 17, 27, 27]]


def test_pad_box_truncates_then_clips_to_the_frame():
    assert pad_box([-3.7, 10.9, 99.9, 140.2], (0, 10, 0, 0), (100, 144)) == [0, 10, 99, 144]
    assert pad_box([5, 5, 50, 50], (2, 3, 4, 5), (100, 100)) == [1, 3, 55, 53]


# --- frames -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_still_image_frames_equal_the_official_ones(samples, net, speech, logic):
    still = logic["still"]
    plan = plan_lipsync(samples.root / "portraits" / "astronaut.png", speech, fps=still["fps"],
                        detector=FixedBackend(np.array(still["detection"]) + 0.6))
    assert plan.num_frames == still["frames"] == 47
    assert plan.coords.tolist() == [still["coords"]]
    frames = list(iter_lipsync(plan, net, batch_size=16))
    assert len(frames) == 47
    y1, y2, x1, x2 = still["coords"]
    source = read_image(samples.root / "portraits" / "astronaut.png")
    reference = torch.load(DATA / "still.pt", weights_only=True)["still_box_bgr"].numpy()[..., ::-1].astype(int)
    for k, i in enumerate(still["kept_frames"]):
        diff = np.abs(frames[i][y1:y2, x1:x2].astype(int) - reference[k])
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3      # uint8 truncation at float-rounding ties
        outside = frames[i].copy()
        outside[y1:y2, x1:x2] = source[y1:y2, x1:x2]
        assert np.array_equal(outside, source)
    assert np.abs(frames[0].astype(int) - frames[30].astype(int)).max() > 0       # the sound moves the output


def test_batch_size_does_not_change_the_frames(samples, net, speech):
    plan = plan_lipsync(samples.root / "portraits" / "astronaut.png", speech, box=(76, 176, 175, 265))
    plan.starts = plan.starts[:6]
    a = list(iter_lipsync(plan, net, batch_size=6))
    b = list(iter_lipsync(plan, net, batch_size=4))
    assert max(np.abs(x.astype(int) - y.astype(int)).max() for x, y in zip(a, b)) <= 1


@pytest.mark.slow
def test_a_short_video_loops_from_its_start(samples, net, speech, tmp_path):
    clip = tmp_path / "clip.mp4"
    source = [f for _, f in zip(range(7), (f for _, f in iter_frames(samples.talking_head)))]
    write_video(clip, source, fps=25)
    decoded = [f for _, f in iter_frames(clip)]
    backend = FixedBackend([40.2, 20.5, 130.0, 110.0])
    plan = plan_lipsync(clip, speech, detector=backend)
    assert plan.fps == 25 and len(plan.coords) == 7 and backend.calls == 7
    plan.starts = plan.starts[:16]
    frames = list(iter_lipsync(plan, net, batch_size=8))
    y1, y2, x1, x2 = plan.coords[0]
    for i, frame in enumerate(frames):
        expected = decoded[i % 7].copy()
        expected[y1:y2, x1:x2] = frame[y1:y2, x1:x2]
        assert np.array_equal(frame, expected), i


def test_feathered_blend_keeps_the_box_border_and_the_centre_prediction():
    frame = np.full((50, 60, 3), 200, np.uint8)
    pred = torch.zeros(3, 96, 96)
    hard = paste_prediction(frame, pred, (10, 40, 20, 50))
    soft = paste_prediction(frame, pred, (10, 40, 20, 50), blend=0.2)
    assert hard[10:40, 20:50].max() == 0 and hard[:10].min() == 200
    assert soft[25, 35].max() == 0                               # centre: the prediction
    assert 150 < soft[10, 35].mean() < 200                       # border row: mostly the frame
    assert np.array_equal(soft[:10], frame[:10])


# --- files ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_lipsync_on_the_portrait_gives_the_official_frame_count_and_sound(samples, net, speech, tmp_path):
    out = lipsync(samples.root / "portraits" / "astronaut.png", speech, tmp_path / "talking.mp4", checkpoint=net,
                  fps=25, detector="dlib", progress=False)
    info = probe(out)
    assert sum(1 for _ in iter_frames(out)) == len(chunk_starts(161, 25)) == 47
    assert (info.width, info.height, info.fps) == (512, 512, 25)
    assert has_audio(out)
    assert abs(info.duration - 47 / 25) < 0.1


def test_a_frame_without_a_face_raises_no_face_error(net, speech, tmp_path):
    blank = write_image(tmp_path / "blank.png", np.full((120, 120, 3), 128, np.uint8))
    with pytest.raises(NoFaceError, match="frame 0"):
        lipsync(blank, speech, tmp_path / "out.mp4", checkpoint=net, detector="dlib")
    assert not (tmp_path / "out.mp4").exists()


def test_bad_inputs_raise_clear_errors(samples, net, speech, tmp_path):
    portrait = samples.root / "portraits" / "astronaut.png"
    with pytest.raises(MediaError, match="no such face"):
        lipsync(tmp_path / "nope.png", speech, tmp_path / "o.mp4", checkpoint=net)
    with pytest.raises(MediaError):
        lipsync(portrait, tmp_path / "missing.wav", tmp_path / "o.mp4", checkpoint=net)
    with pytest.raises(ConfigError, match="not inside"):
        plan_lipsync(portrait, speech, box=(0, 600, 0, 10))
    with pytest.raises(ConfigError, match="unknown lipsync option"):
        lipsync(portrait, speech, tmp_path / "o.mp4", checkpoint=net, smoothing=False)
    short = tmp_path / "short.wav"
    from scipy.io import wavfile
    wavfile.write(short, 16000, np.zeros(1600, np.int16))
    with pytest.raises(MediaError, match="longer sound"):
        plan_lipsync(portrait, short, box=(76, 176, 175, 265))


def test_bf16_frames_stay_within_a_few_grey_levels_of_the_official_ones(samples, net, speech, logic):
    still = logic["still"]
    plan = plan_lipsync(samples.root / "portraits" / "astronaut.png", speech, box=still["coords"])
    plan.starts = plan.starts[:1]
    frame = next(iter_lipsync(plan, net, precision="bf16"))
    y1, y2, x1, x2 = still["coords"]
    reference = torch.load(DATA / "still.pt", weights_only=True)["still_box_bgr"].numpy()[0, ..., ::-1].astype(int)
    diff = np.abs(frame[y1:y2, x1:x2].astype(int) - reference)
    assert diff.max() <= 6 and diff.mean() < 1.0        # measured: at most 3, mean 0.41 grey levels


def test_a_video_keeps_its_rate_and_uses_one_box_per_needed_frame(samples, speech):
    plan = plan_lipsync(samples.talking_head, speech, fps=25, box=(10, 134, 30, 150))
    assert abs(plan.fps - 29.97) < 0.01                       # the video's rate, not the fps argument
    assert plan.num_frames == len(chunk_starts(161, plan.fps)) == 56
    assert plan.coords.shape == (56, 4)                       # 120 frames in the video, 56 needed

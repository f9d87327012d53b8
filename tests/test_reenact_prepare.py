"""Preparing FOMM inputs on the real samples: source and driving crops, streaming, paste-back, audio, errors."""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch

import facesynth.reenact.prepare as prepare
from facesynth.errors import ConfigError, NoFaceError
from facesynth.media import has_audio, iter_frames, probe, read_image, write_video, write_wav
from facesynth.reenact.prepare import (FaceCrop, paste_back, prepare_driving, prepare_source, square_crop_box,
                                       write_animation)

SIZE = 256


@pytest.fixture(scope="module")
def clip(samples):
    return prepare_driving(samples.talking_head, size=SIZE, detector="dlib", batch_size=32, progress=False)


def test_source_crop_has_the_requested_size_and_the_face_well_inside(samples):
    tensor, crop = prepare_source(samples.astronaut, size=SIZE, detector="dlib")
    assert tensor.shape == (1, 3, SIZE, SIZE) and tensor.dtype == torch.float32
    assert 0 <= tensor.min() and tensor.max() <= 1
    x0, y0, x1, y1 = crop.box
    assert x1 - x0 == y1 - y0 and 0 <= x0 and 0 <= y0 and x1 <= 512 and y1 <= 512
    lm = crop.landmarks
    assert lm.shape == (68, 2)
    # every landmark at least 15% of the side away from the crop's edges, and the face centred
    assert lm.min() > 0.15 * SIZE and lm.max() < 0.85 * SIZE
    assert abs(lm[:, 0].mean() - SIZE / 2) < 0.1 * SIZE
    # VoxCeleb-like framing: the landmarks span between a third and two thirds of the crop
    assert 0.33 * SIZE < np.ptp(lm[:, 0]) < 0.67 * SIZE


@pytest.mark.slow
def test_source_accepts_pixels_and_gives_the_same_crop_as_the_file(samples):
    from_file, crop_file = prepare_source(samples.grace_hopper, size=128, detector="dlib")
    from_array, crop_array = prepare_source(read_image(samples.grace_hopper), size=128, detector="dlib")
    assert crop_file.box == crop_array.box
    assert torch.equal(from_file, from_array)


def test_source_without_a_face_raises_no_face_error():
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    with pytest.raises(NoFaceError, match="no face found"):
        prepare_source(noise, detector="dlib")


@pytest.mark.parametrize("kwargs", [{"size": 8}, {"margin": -0.1}, {"detector": "nope"}])
def test_bad_source_options_raise_config_error(samples, kwargs):
    with pytest.raises(ConfigError):
        prepare_source(samples.astronaut, **kwargs)


@pytest.mark.parametrize("kwargs", [{"smooth": 4}, {"batch_size": 0}])
def test_bad_driving_options_raise_config_error(samples, kwargs):
    with pytest.raises(ConfigError):
        prepare_driving(samples.talking_head, detector="dlib", **kwargs)


def test_square_crop_box_is_square_with_margin_and_inside_the_frame():
    assert square_crop_box([40, 40, 60, 60], (200, 100), margin=0.5) == (30, 30, 70, 70)
    # near the left edge: shifted right, not shrunk
    assert square_crop_box([0, 40, 20, 60], (200, 100), margin=0.5) == (0, 30, 40, 70)
    # wider than the frame is tall: shrunk to the frame's height
    x0, y0, x1, y1 = square_crop_box([50, 10, 150, 90], (200, 100), margin=0.5)
    assert (y0, y1) == (0, 100) and x1 - x0 == 100 and x0 == 50


def test_driving_box_is_one_square_containing_every_detected_face(clip, samples):
    info = probe(samples.talking_head)
    x0, y0, x1, y1 = clip.box
    assert x1 - x0 == y1 - y0
    assert 0 <= x0 and 0 <= y0 and x1 <= info.width and y1 <= info.height
    faces = [b for b in clip.face_boxes if b is not None]
    assert len(clip.face_boxes) == 120 and len(faces) >= 0.95 * 120
    for b in faces:
        assert x0 <= b[0] and y0 <= b[1] and b[2] <= x1 and b[3] <= y1
    assert clip.fps == pytest.approx(29.97, abs=0.01) and clip.has_audio is False and clip.num_frames == 120


def test_driving_crops_use_the_same_box_for_every_frame(clip, samples):
    frames = [f for _, f in iter_frames(samples.talking_head)][::40]
    expected = prepare.crop_and_resize(frames, clip.box, SIZE)
    batches = list(clip)
    got = torch.cat(batches)[::40]
    assert torch.equal(got, expected)


def test_driving_batches_cover_all_120_frames_with_the_right_shape(clip):
    shapes = [tuple(b.shape) for b in clip]
    assert shapes == [(32, 3, SIZE, SIZE)] * 3 + [(24, 3, SIZE, SIZE)]


def test_driving_batches_are_streamed_lazily(clip, monkeypatch):
    decoded = []
    real = prepare.iter_frames

    def counting(path, fps=None):
        for index, frame in real(path, fps):
            decoded.append(index)
            yield index, frame

    monkeypatch.setattr(prepare, "iter_frames", counting)
    batches = iter(clip)
    assert inspect.isgenerator(batches) and decoded == []
    first = next(batches)
    assert first.shape[0] == 32
    assert len(decoded) <= 33        # one batch (and at most the frame that ends it) decoded, not the video
    batches.close()


def test_paste_back_changes_only_the_inside_of_the_box(samples):
    frame = read_image(samples.grace_hopper)
    box = (100, 150, 300, 350)
    face = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    out = paste_back(frame, face, box, feather=0.1)
    assert out.shape == frame.shape and out.dtype == np.uint8
    outside = np.ones(frame.shape[:2], bool)
    outside[150:350, 100:300] = False
    assert np.array_equal(out[outside], frame[outside])
    centre = (slice(200, 300), slice(150, 250))
    assert np.abs(out[centre].astype(int) - frame[centre]).mean() > 30
    # feathered: the border row moves much less than the centre
    edge_change = np.abs(out[150, 100:300].astype(int) - frame[150, 100:300]).mean()
    assert edge_change < 0.2 * np.abs(out[centre].astype(int) - frame[centre]).mean()


@pytest.mark.slow
def test_paste_back_of_the_unchanged_crop_restores_the_frame(samples):
    frame = read_image(samples.astronaut)
    _, crop = prepare_source(frame, detector="dlib")
    tensor, same = prepare_source(frame, size=crop.side, detector="dlib")     # no resampling at this size
    out = paste_back(frame, tensor, same.box, feather=0.0)
    assert np.abs(out.astype(int) - frame).max() <= 1


def test_write_animation_copies_the_driving_videos_audio(samples, tmp_path):
    frames = [f for _, f in iter_frames(samples.talking_head)][:30]
    sr = 16000
    t = np.arange(sr) / sr
    wav = write_wav(tmp_path / "sine.wav", 0.3 * np.sin(2 * np.pi * 440 * t), sr)
    driving = write_video(tmp_path / "driving.mp4", frames, fps=30, audio=wav)
    assert has_audio(driving)
    batches = (torch.rand(10, 3, 64, 64) for _ in range(3))
    out = write_animation(batches, tmp_path / "result.mp4", fps=30, audio_from=driving)
    info = probe(out)
    assert info.has_audio and (info.width, info.height) == (64, 64) and info.frame_count == 30


def test_write_animation_of_a_silent_driving_video_is_silent_without_warning(samples, tmp_path):
    frames = [np.full((32, 32, 3), v, np.uint8) for v in range(0, 250, 25)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = write_animation(frames, tmp_path / "silent.mp4", fps=25, audio_from=samples.talking_head)
    assert not has_audio(out)


def test_face_crop_maps_frame_points_into_crop_pixels():
    crop = FaceCrop(box=(10, 20, 110, 120), frame_size=(200, 200), size=256)
    np.testing.assert_allclose(crop.to_crop(np.array([[10, 20], [110, 120], [60, 70]])),
                               [[0, 0], [256, 256], [128, 128]])

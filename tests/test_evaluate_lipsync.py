"""Lip-sync metrics: LSE-D/LSE-C against joonson/syncnet_python's own numbers, and the mouth–audio correlation
on the real talking head with a sound track made to follow its mouth.

The official numbers in tests/data/syncnet/ were produced by running the official code on the fixture video
with the weights of ``seeded_syncnet_state`` (see tests/data/syncnet/README.md).
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from facesynth.errors import CheckpointError, MediaError, WeightsNotFoundError
from facesynth.evaluate.frames import LandmarkTracker, iter_rgb
from facesynth.evaluate.landmarks import mouth_opening
from facesynth.evaluate.lipsync import (SyncNet, evaluate_lipsync, load_syncnet, lse, mfcc,
                                        mouth_audio_correlation)
from facesynth.media import read_audio, write_wav

DATA = Path(__file__).parent / "data" / "syncnet"
SR = 16000
TALKING_HEAD_FPS = 30000 / 1001


# --- test data recipes (also used to make the fixtures) ------------------------------------------------------

def seeded_syncnet_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random SyncNet weights in the official layout, identical on every machine: each tensor comes from its
    own numpy PCG64 stream seeded by (seed, CRC-32 of its name). He-scaled weights; the first layers also take
    the input scale out (video 0-255, MFCC about ±30) so the embeddings stay near unit size."""
    input_scale = {"netcnnlip.0.weight": 1 / 255, "netcnnaud.0.weight": 1 / 30}
    state = {}
    for key, ref in SyncNet().state_dict().items():
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        shape = tuple(ref.shape)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        if key.endswith("running_var"):
            value = 1.0 + 0.1 * np.abs(rng.standard_normal(shape))
        elif key.endswith(("running_mean", "bias")):
            value = 0.1 * rng.standard_normal(shape)
        elif len(shape) == 1:                                        # BatchNorm weight
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:])) * input_scale.get(key, 1.0)
        state[key] = torch.from_numpy(value.astype(np.float32))
    return state


def measured_mouth_opening(video) -> np.ndarray:
    """Mouth opening per frame of a real video (dlib landmarks), NaN where no face was found."""
    tracker = LandmarkTracker("dlib")
    return np.array([mouth_opening(f.landmarks) if f is not None else np.nan for f in map(tracker, iter_rgb(video))])


def sound_following(opening: np.ndarray, fps: float, seconds: float | None = None, seed: int = 0) -> np.ndarray:
    """A vowel-like sound (harmonics of a 120-160 Hz voice, a little breath noise) whose loudness follows the
    mouth opening frame by frame: closed mouth → quiet, open → loud. Mono float32 [-1, 1] at 16 kHz."""
    known = np.flatnonzero(np.isfinite(opening))
    filled = np.interp(np.arange(len(opening)), known, opening[known])
    level = (filled - filled.min()) / max(np.ptp(filled), 1e-9)
    seconds = seconds if seconds is not None else len(opening) / fps
    t = np.arange(int(round(seconds * SR))) / SR
    envelope = 0.02 + np.interp(t, (np.arange(len(opening)) + 0.5) / fps, level)
    phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 0.7 * t)) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 10))
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return np.clip(0.25 * envelope * (voice + 0.1 * noise), -1, 1).astype(np.float32)


# --- fixtures ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def talking_head_with_sound(samples, tmp_path_factory):
    """(video, wav, mouth opening per frame): the real talking head and a sound track that follows its mouth."""
    opening = measured_mouth_opening(samples.talking_head)
    wav = write_wav(tmp_path_factory.mktemp("sound") / "speech.wav",
                    sound_following(opening, TALKING_HEAD_FPS), SR)
    return samples.talking_head, wav, opening


@pytest.fixture(scope="module")
def official():
    return json.loads((DATA / "official_scores.json").read_text())


@pytest.fixture(scope="module")
def seeded_syncnet(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "syncnet_v2.model"
    torch.save(seeded_syncnet_state(0), path)
    return path


# --- mouth–audio correlation --------------------------------------------------------------------------------

@pytest.mark.slow
def test_mouth_audio_correlation_is_high_at_the_true_alignment(talking_head_with_sound):
    video, wav, _ = talking_head_with_sound
    result = mouth_audio_correlation(video, wav)
    assert result["frames"] == 120 and result["fps"] == pytest.approx(TALKING_HEAD_FPS, abs=1e-3)
    assert result["mouth_audio_corr"] > 0.8
    assert result["corr_at_zero"] > 0.8
    assert abs(result["best_lag_frames"]) <= 1
    assert result["best_lag_s"] == pytest.approx(result["best_lag_frames"] / TALKING_HEAD_FPS)


@pytest.mark.slow
def test_mouth_audio_correlation_drops_when_the_sound_is_shifted_by_a_second(talking_head_with_sound):
    video, wav, _ = talking_head_with_sound
    sound = read_audio(wav, SR)
    aligned = mouth_audio_correlation(video, sound)
    shifted = mouth_audio_correlation(video, np.roll(sound, SR))
    assert aligned["mouth_audio_corr"] > shifted["mouth_audio_corr"] + 0.3
    assert aligned["corr_at_zero"] > shifted["corr_at_zero"] + 0.5


@pytest.mark.slow
def test_mouth_audio_correlation_finds_a_known_delay(talking_head_with_sound):
    video, wav, _ = talking_head_with_sound
    delay = 6                                                           # frames, 0.2 s
    sound = read_audio(wav, SR)
    late = np.concatenate([np.zeros(int(round(delay * SR / TALKING_HEAD_FPS)), np.float32), sound])
    result = mouth_audio_correlation(video, late)
    assert abs(result["best_lag_frames"] + delay) <= 1                  # negative: the sound comes late
    assert result["mouth_audio_corr"] > 0.8


@pytest.mark.slow
def test_frames_without_a_face_are_counted_and_left_out(talking_head_with_sound):
    video, wav, opening = talking_head_with_sound
    frames = np.stack(list(iter_rgb(video)))
    frames[40:52] = 128                                                  # 12 grey frames: longer than max_gap_s
    frames[80:82] = 128                                                  # 2 grey frames: interpolated
    result = mouth_audio_correlation(frames, wav, fps=TALKING_HEAD_FPS)
    faces_in_source = int(np.isfinite(opening).sum())
    assert result["frames"] == 120
    assert result["frames_with_face"] == faces_in_source - 14
    assert result["frames_interpolated"] == 2
    assert result["frames_used"] == faces_in_source - 12
    assert result["mouth_audio_corr"] > 0.7


def test_a_video_without_sound_is_a_media_error(samples):
    with pytest.raises(MediaError, match="no sound track"):
        mouth_audio_correlation(samples.talking_head)


@pytest.mark.slow
def test_evaluate_lipsync_without_weights_gives_the_correlation_and_a_note(talking_head_with_sound):
    video, wav, _ = talking_head_with_sound
    result = evaluate_lipsync(video, wav)
    assert result["mouth_audio_corr"] > 0.8
    assert result["lse_d"] is None and result["lse_c"] is None and "syncnet" not in result["weights"]
    assert result["weights"]["landmarks"]["file"] == "shape_predictor_68_face_landmarks.dat"
    assert any("syncnet_v2.model" in note for note in result["notes"])
    assert set(result["definitions"]) >= {"lse_d", "lse_c", "mouth_audio_corr"}


# --- MFCC and LSE against the official code -----------------------------------------------------------------

def test_mfcc_matches_python_speech_features(official):
    sound = read_audio(DATA / "carphone_crop.mp4", SR)
    pcm = np.round(sound.astype(np.float64) * 32768)
    expected = np.array(official["mfcc_first_frames"])
    ours = mfcc(pcm, SR)
    assert ours.shape == (official["mfcc_frames"], 13)
    np.testing.assert_allclose(ours[:len(expected)], expected, rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_lse_matches_the_official_syncnet_evaluation(official, seeded_syncnet, tmp_path):
    # the official scorer reads the frames back from JPEG files written by ffmpeg; do the same here so the
    # comparison checks the model and the scoring, not JPEG noise
    import subprocess

    from facesynth.media import ffmpeg_exe

    frames = tmp_path / "frames"
    frames.mkdir()
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(DATA / "carphone_crop.mp4"), "-threads",
                    "1", "-f", "image2", str(frames / "%06d.jpg")], check=True)
    result = lse(frames, DATA / "carphone_crop.mp4", seeded_syncnet, crop=False, fps=25)
    assert result["windows"] == official["windows"]
    np.testing.assert_allclose(result["distances"], official["mean_distances"], rtol=1e-4)
    assert result["lse_d"] == pytest.approx(official["lse_d"], rel=1e-4)
    assert result["lse_c"] == pytest.approx(official["lse_c"], abs=1e-3 * official["lse_d"])
    assert result["offset_frames"] == official["offset_frames"]


@pytest.mark.slow      # about 25 s on 2 CPU cores: detection, cropping and SyncNet on 100 frames
def test_evaluate_lipsync_with_weights_crops_the_face_and_scores_lse(official, seeded_syncnet,
                                                                    talking_head_with_sound):
    video, wav, _ = talking_head_with_sound
    result = evaluate_lipsync(video, wav, syncnet=seeded_syncnet)
    assert result["weights"]["syncnet"]["file"] == seeded_syncnet.name and result["notes"] == []
    assert len(result["weights"]["syncnet"]["sha256"]) == 64
    assert result["lse_windows"] == 95                       # 4 s at 25 fps = 100 frames, minus the official 5
    assert result["mouth_audio_corr"] > 0.8
    # the fixture crop was made by this same cropping, then H.264-encoded and read back as JPEG by the
    # official scorer: the distances agree to a fraction of a percent, not exactly
    np.testing.assert_allclose(result["lse_distances"], official["mean_distances"], rtol=0.01)
    assert result["lse_d"] == pytest.approx(official["lse_d"], rel=0.01)
    assert result["offset_frames"] == official["offset_frames"]


# --- loading ------------------------------------------------------------------------------------------------

def test_load_syncnet_reads_the_official_layout(seeded_syncnet):
    net = load_syncnet(seeded_syncnet)
    assert not net.training
    expected = seeded_syncnet_state(0)
    assert all(torch.equal(v, expected[k]) for k, v in net.state_dict().items())


def test_load_syncnet_accepts_files_without_batchnorm_counters(tmp_path):
    state = {k: v for k, v in seeded_syncnet_state(0).items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.model")
    assert isinstance(load_syncnet(tmp_path / "old.model"), SyncNet)


@pytest.mark.parametrize("damage", ["missing", "misshaped", "unexpected"])
def test_load_syncnet_refuses_a_damaged_state_dict(tmp_path, damage):
    state = seeded_syncnet_state(0)
    if damage == "missing":
        del state["netfclip.3.weight"]
    elif damage == "misshaped":
        state["netcnnaud.0.weight"] = torch.zeros(64, 1, 5, 5)
    else:
        state["netcnnlip.99.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "damaged.model")
    with pytest.raises(CheckpointError, match="netfclip.3.weight|netcnnaud.0.weight|netcnnlip.99.weight"):
        load_syncnet(tmp_path / "damaged.model")


def test_load_syncnet_without_the_file_says_where_to_get_it():
    with pytest.raises(WeightsNotFoundError, match=r"syncnet_v2\.model.*robots\.ox\.ac\.uk"):
        load_syncnet("syncnet")

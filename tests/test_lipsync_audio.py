"""Wav2Lip audio features and mel windows against the official audio.py and inference loop (librosa 0.7)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facesynth.errors import MediaError
from facesynth.lipsync import (MelWindows, chunk_starts, count_mel_frames, iter_audio, iter_mel, load_audio,
                               mel_filterbank, mel_windows, melspectrogram)

DATA = Path(__file__).parent / "data" / "wav2lip"


@pytest.fixture(scope="module")
def ref():
    return np.load(DATA / "mel.npz")


@pytest.fixture(scope="module")
def logic() -> dict:
    return json.loads((DATA / "logic.json").read_text())


def test_mel_filterbank_equals_librosa_slaney(ref):
    assert np.abs(mel_filterbank() - ref["mel_basis"]).max() < 1e-7


def test_melspectrogram_equals_the_official_one(ref):
    mel = melspectrogram(ref["pcm"].astype(np.float32) / 32768)
    assert mel.shape == (80, 161) and mel.dtype == np.float32
    assert np.abs(mel - ref["mel"]).max() < 1e-4


def test_edge_frames_use_reflect_padding(ref):
    # librosa >= 0.10 pads with zeros by default, which moves frames 0, 1, 159 and 160 by up to 1.4
    mel = melspectrogram(ref["pcm"].astype(np.float32) / 32768)
    edges = [0, 1, 159, 160]
    assert np.abs(mel[:, edges] - ref["mel"][:, edges]).max() < 1e-4


def test_melspectrogram_of_a_wav_file_equals_the_official_one(ref, tmp_path):
    from scipy.io import wavfile

    path = tmp_path / "speech.wav"
    wavfile.write(path, 16000, ref["pcm"])
    samples = load_audio(path)
    assert np.array_equal(samples, ref["pcm"].astype(np.float32) / 32768)
    assert np.abs(melspectrogram(samples) - ref["mel"]).max() < 1e-4


def test_torch_input_gives_the_same_mel(ref):
    wav = ref["pcm"].astype(np.float32) / 32768
    assert np.array_equal(melspectrogram(torch.from_numpy(wav)), melspectrogram(wav))


def test_other_sample_rates_are_resampled_to_16k(ref):
    from scipy.signal import resample_poly

    wav48 = resample_poly(ref["pcm"].astype(np.float64) / 32768, 3, 1)
    mel = melspectrogram(wav48, sr=48000)
    assert mel.shape == (80, 161)
    assert np.abs(mel - ref["mel"])[:, 2:-2].mean() < 0.02


def test_long_audio_is_computed_in_blocks_with_the_same_result():
    rng = np.random.default_rng(0)
    wav = rng.standard_normal(16000 * 30) * 0.1
    mel = melspectrogram(wav)
    assert mel.shape == (80, 1 + wav.size // 200)
    part = melspectrogram(wav[:200 * 3000])
    # away from the signal's end (reflect padding there differs), blocks change nothing
    assert np.abs(mel[:, :2990] - part[:, :2990]).max() < 1e-5


@pytest.mark.parametrize("bad, match", [(np.zeros((2, 1000)), "mono"), (np.full(5000, np.nan), "NaN"),
                                        (np.zeros(300), "at least 401")])
def test_bad_audio_raises_media_error(bad, match):
    with pytest.raises(MediaError, match=match):
        melspectrogram(bad)


def test_chunk_starts_equal_the_official_inference_loop(logic):
    for key, expected in logic["chunk_starts"].items():
        t, fps = key.split("@")
        assert chunk_starts(int(t), float(fps)).tolist() == expected, key


def test_chunk_counts_for_two_seconds(logic):
    counts = {fps: len(chunk_starts(161, fps)) for fps in (25, 24, 29.97, 30, 50, 60)}
    assert counts == {25: 47, 24: 45, 29.97: 56, 30: 56, 50: 93, 60: 111}
    assert chunk_starts(161, 60)[-2:].tolist() == [145, 145]      # the forced last window may repeat


def test_chunk_starts_use_float64_steps():
    # in float32, int(i * 80/29.97) is already wrong at i = 3871
    starts = chunk_starts(20000, 29.97)
    assert starts[3871] == int(3871 * (80.0 / 29.97))
    assert starts[4745] == int(4745 * (80.0 / 29.97))


def test_short_audio_and_bad_fps_raise_media_error():
    with pytest.raises(MediaError, match="0.20 s"):
        chunk_starts(15, 25)
    with pytest.raises(MediaError, match="fps"):
        chunk_starts(161, 0)


def test_mel_windows_have_the_network_layout(ref):
    windows = mel_windows(ref["mel"], np.array([0, 3, 145]))
    assert windows.shape == (3, 1, 80, 16) and windows.dtype == torch.float32
    assert torch.equal(windows[1, 0], torch.from_numpy(ref["mel"][:, 3:19]))


@pytest.mark.parametrize("block", [1, 199, 401, 5000])
def test_streamed_mel_equals_the_whole_signal_mel(ref, block):
    wav = ref["pcm"].astype(np.float32) / 32768
    streamed = np.concatenate(list(iter_mel(wav[i:i + block] for i in range(0, wav.size, block))), axis=1)
    assert streamed.shape == (80, 161)
    assert np.abs(streamed - ref["mel"]).max() < 1e-4


@pytest.mark.parametrize("n", [401, 599, 12345])
def test_mel_of_any_length_equals_a_direct_reflect_padded_stft(n):
    x = np.random.default_rng(n).standard_normal(n) * 0.1
    y = np.concatenate(([x[0]], x[1:] - 0.97 * x[:-1]))
    padded = np.pad(y, 400, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, 800)[::200]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)
    mel = mel_filterbank() @ np.abs(np.fft.rfft(frames * window, axis=1)).T
    expected = np.clip(8 * ((20 * np.log10(np.maximum(1e-5, mel)) - 20 + 100) / 100) - 4, -4, 4)
    got = np.concatenate(list(iter_mel(x[i:i + 1000] for i in range(0, n, 1000))), axis=1)
    assert got.shape == expected.shape == (80, 1 + n // 200)
    assert np.abs(got - expected).max() < 1e-5


def test_iter_audio_streams_the_same_samples_as_load_audio(ref, tmp_path):
    from scipy.io import wavfile

    path = tmp_path / "speech.wav"
    wavfile.write(path, 16000, ref["pcm"])
    blocks = list(iter_audio(path, block=7000))
    assert [b.size for b in blocks] == [7000] * 4 + [4000]
    assert np.array_equal(np.concatenate(blocks), load_audio(path))
    assert count_mel_frames(path) == 161
    with pytest.raises(MediaError, match="no such audio"):
        list(iter_audio(tmp_path / "missing.wav"))


def test_mel_windows_stream_from_a_file_as_the_official_chunks(ref, tmp_path):
    from scipy.io import wavfile

    path = tmp_path / "speech.wav"
    wavfile.write(path, 16000, ref["pcm"])
    starts = chunk_starts(161, 25)
    stream = MelWindows(path)
    got = torch.cat([stream.take(starts[i:i + 10]) for i in range(0, len(starts), 10)])
    expected = mel_windows(ref["mel"], starts)
    assert got.shape == (47, 1, 80, 16)
    assert (got - expected).abs().max().item() < 1e-4


def test_synthetic_speech_is_a_voiced_sound_with_pauses():
    from facesynth.lipsync import synthetic_speech

    wav = synthetic_speech(2.0)
    assert wav.shape == (32000,) and wav.dtype == np.float32 and np.abs(wav).max() <= 1
    mel = melspectrogram(wav)
    loudness = mel.mean(axis=0)
    assert loudness.max() - loudness.min() > 0.5          # syllables and pauses (measured 0.84)
    assert np.array_equal(wav, synthetic_speech(2.0))      # deterministic


def test_a_video_without_sound_is_named_as_such(samples, tmp_path):
    from facesynth.lipsync.audio import iter_audio

    with pytest.raises(MediaError, match="has no sound track"):      # the sample talking head is silent
        list(iter_audio(samples.talking_head))
    (tmp_path / "text.wav").write_text("not a sound")
    with pytest.raises(MediaError, match="text.wav: has no sound track; give a sound file"):
        list(iter_audio(tmp_path / "text.wav"))

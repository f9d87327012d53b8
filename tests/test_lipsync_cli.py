"""`facesynth lipsync` and `talking_portrait` end to end on the real samples with official-layout random weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facesynth.errors import ConfigError
from facesynth.lipsync import Wav2Lip, chunk_starts, official_checkpoint, randomize_, talking_portrait
from facesynth.media import has_audio, iter_frames, probe

DATA = Path(__file__).parent / "data" / "wav2lip"
FOMM = Path(__file__).parent / "data" / "fomm"


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    from scipy.io import wavfile

    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    wavfile.write(path, 16000, np.load(DATA / "mel.npz")["pcm"])
    return path


@pytest.fixture(scope="module")
def net() -> Wav2Lip:
    return randomize_(Wav2Lip(), 0).eval()


@pytest.mark.slow
def test_cli_lipsync_writes_the_official_frame_count_with_sound(samples, speech, tmp_path):
    from facesynth.cli import main

    checkpoint = tmp_path / "wav2lip_gan.pth"
    torch.save(official_checkpoint(randomize_(Wav2Lip(), 0)), checkpoint)
    out = tmp_path / "talking.mp4"
    assert main(["lipsync", str(out), "--face", str(samples.root / "portraits" / "astronaut.png"),
                 "--audio", str(speech), "--checkpoint", str(checkpoint), "--box", "76", "176", "175", "265",
                 "--fps", "30", "--blend", "0.1"]) == 0
    assert sum(1 for _ in iter_frames(out)) == len(chunk_starts(161, 30)) == 56
    assert has_audio(out) and probe(out).fps == 30


def test_cli_reports_a_missing_checkpoint_in_one_line(samples, speech, tmp_path, capsys):
    from facesynth.cli import main

    code = main(["lipsync", str(tmp_path / "o.mp4"), "--face", str(samples.root / "portraits" / "astronaut.png"),
                 "--audio", str(speech), "--box", "76", "176", "175", "265"])
    err = capsys.readouterr().err
    assert code == 2 and "wav2lip_gan.pth" in err and err.count("\n") == 1


@pytest.mark.slow
def test_talking_portrait_animates_then_lip_syncs(samples, speech, net, tmp_path):
    out = talking_portrait(samples.root / "portraits" / "astronaut.png", samples.talking_head, speech,
                           tmp_path / "portrait.mp4", fomm=FOMM / "small-cpk.pt", config=FOMM / "small.yaml",
                           wav2lip=net, size=128, detector="dlib", face_box="source", max_frames=12)
    info = probe(out)
    assert (info.width, info.height) == (128, 128) and abs(info.fps - 29.97) < 0.01
    assert sum(1 for _ in iter_frames(out)) == len(chunk_starts(161, 29.97)) == 56
    assert has_audio(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["portrait.mp4", "portrait.mp4.provenance.json"]  # no temp


def test_talking_portrait_needs_a_sound(samples, net, tmp_path):
    silent = tmp_path / "silent.mp4"
    from facesynth.media import write_video
    write_video(silent, [f for _, f in zip(range(3), (f for _, f in iter_frames(samples.talking_head)))], fps=25)
    with pytest.raises(ConfigError, match="no sound"):
        talking_portrait(samples.root / "portraits" / "astronaut.png", silent, None, tmp_path / "o.mp4",
                         fomm=FOMM / "small-cpk.pt", config=FOMM / "small.yaml", wav2lip=net)


def test_talking_portrait_compile_reaches_both_networks_and_the_record(samples, speech, net, tmp_path, monkeypatch):
    """``compile=True`` goes to FOMM's ``iter_animate`` and to ``lipsync`` (each compiles its own network; their
    compiled paths are tested on their own), and the talking portrait's provenance records it."""
    import facesynth.lipsync.portrait as portrait
    import facesynth.reenact

    seen = {}
    real = facesynth.reenact.iter_animate

    def iter_animate(*args, **kwargs):
        seen["fomm"] = kwargs["compile"]
        return real(*args, **{**kwargs, "compile": False})      # eager here: compiling takes a minute on a CPU

    class Stop(Exception):
        pass

    def lipsync(*args, **kwargs):
        seen["wav2lip"], seen["record"] = kwargs["compile"], kwargs["provenance"].parameters["compile"]
        raise Stop

    monkeypatch.setattr(facesynth.reenact, "iter_animate", iter_animate)
    monkeypatch.setattr(portrait, "lipsync", lipsync)
    with pytest.raises(Stop):
        talking_portrait(samples.astronaut, samples.talking_head, speech, tmp_path / "o.mp4",
                         fomm=FOMM / "small-cpk.pt", config=FOMM / "small.yaml", wav2lip=net, size=128,
                         detector="dlib", face_box="source", max_frames=2, compile=True)
    assert seen == {"fomm": True, "wav2lip": True, "record": True}
    assert list(tmp_path.iterdir()) == []                   # the temporary animation is gone


@pytest.mark.slow
def test_talking_portrait_pasted_back_into_the_portrait(samples, net, tmp_path):
    from facesynth.lipsync import count_mel_frames, synthetic_speech
    from facesynth.media import read_image, write_wav

    sound = write_wav(tmp_path / "short.wav", synthetic_speech(0.5), 16000)
    out = talking_portrait(samples.astronaut, samples.talking_head, sound, tmp_path / "full.mp4",
                           fomm=FOMM / "small-cpk.pt", config=FOMM / "small.yaml", wav2lip=net, size=128,
                           detector="dlib", face_box="source", paste_back=True, max_frames=4, progress=False,
                           provenance=False)     # the watermark would move frame 0's pixels by a level or so more
    frames = [f for _, f in iter_frames(out)]
    assert len(frames) == len(chunk_starts(count_mel_frames(sound), 29.97)) == 11
    portrait = read_image(samples.astronaut)
    assert frames[0].shape == portrait.shape
    assert np.abs(frames[0][-60:, :60].astype(int) - portrait[-60:, :60]).mean() < 4    # far from the face: kept

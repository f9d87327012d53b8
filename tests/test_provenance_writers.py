"""Every result writer signs its output: a C2PA manifest that ``c2pa.Reader`` reads, with IPTC's
trainedAlgorithmicMedia, ``c2pa.edited`` where a real photo or video was changed and ``c2pa.created`` otherwise, the
SHA-256 of each input and weights file, and ``facesynth verify`` exiting 0; ``provenance=False`` and
``--no-provenance`` write plain files without a sidecar.

Small real inputs and random official-layout weights: the talking head's first 20 frames (with a tone), a swap model
trained 5 iterations, the FOMM and StyleGAN fixtures, a seeded random Wav2Lip saved as an official checkpoint.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facesynth import provenance as pv
from facesynth.cli import build_parser, main
from facesynth.media import iter_frames, write_video, write_wav
from facesynth.provenance.manifest import TRAINED_ALGORITHMIC_MEDIA, mime_type

DATA = Path(__file__).parent / "data"
FOMM_CKPT, FOMM_YAML = DATA / "fomm" / "small-cpk.pt", DATA / "fomm" / "small.yaml"
PKL = DATA / "stylegan" / "r32.pkl"
BOX = (10, 134, 30, 150)           # a face box (y1, y2, x1, x2) holding the talking head's face in every frame

# the talking head (176x144) and the generator (32x32) are below the watermark's 256x256: that warning is expected
pytestmark = pytest.mark.filterwarnings("ignore:.*no invisible watermark:facesynth.provenance.errors.ProvenanceWarning")


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def assert_signed(path, action: str, technique: str, inputs=(), weights=()) -> dict:
    """The manifest as c2pa.Reader reads it, the action and source type, every input's and weights file's SHA-256,
    and ``facesynth verify`` exiting 0. Returns facesynth's assertion."""
    import c2pa

    with open(path, "rb") as f, c2pa.Reader(mime_type(path), f) as reader:
        store = json.loads(reader.json())
    manifest = store["manifests"][store["active_manifest"]]
    actions = next(a["data"] for a in manifest["assertions"] if a["label"] == "c2pa.actions.v2")["actions"]
    assert [a["action"] for a in actions] == (["c2pa.opened", "c2pa.edited"] if action == "c2pa.edited"
                                              else ["c2pa.created"])
    assert actions[-1]["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    data = pv.read_manifest(path).facesynth
    assert data["technique"] == technique
    assert [d["sha256"] for d in data["inputs"]] == [_sha256(p) for p in inputs]
    assert [d["sha256"] for d in data["weights"]] == [_sha256(p) for p in weights]
    assert pv.sidecar_path(path).is_file()
    assert main(["verify", str(path)]) == 0
    return data


def assert_plain(path) -> None:
    assert Path(path).is_file() and not pv.sidecar_path(path).exists()
    assert pv.read_manifest(path).state == "missing"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("writers")


@pytest.fixture(scope="module")
def clip(samples, work) -> Path:
    """The talking head's first 20 frames with a tone that outlasts them."""
    tone = write_wav(work / "tone.wav", 0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * 16000) / 16000), 16000)
    return write_video(work / "clip.mp4", (f for i, f in iter_frames(samples.talking_head) if i < 20), 29.97,
                       audio=tone)


@pytest.fixture(scope="module")
def short_speech(work) -> Path:
    """Half a second of speech-like sound: 11 lip-sync frames at the clip's 29.97 fps."""
    from facesynth.lipsync import synthetic_speech

    return write_wav(work / "short.wav", synthetic_speech(0.5), 16000)


@pytest.fixture(scope="module")
def wav2lip_file(work) -> Path:
    from facesynth.lipsync import Wav2Lip, official_checkpoint, randomize_

    torch.save(official_checkpoint(randomize_(Wav2Lip(), 0)), work / "wav2lip_gan.pth")
    return work / "wav2lip_gan.pth"


@pytest.fixture(scope="module")
def fomm():
    from facesynth.reenact import load_fomm

    return load_fomm(FOMM_CKPT, FOMM_YAML, device="cpu")


@pytest.fixture(scope="module")
def driving(clip):
    from facesynth.reenact.prepare import prepare_driving

    return prepare_driving(clip, size=128, detector="dlib", progress=False)


@pytest.fixture(scope="module")
def swap_model(samples, work) -> Path:
    """A swap workdir trained 5 iterations on the talking head (A) and the portraits (B), as test_swap_convert's."""
    from facesynth.extract import extract_faces
    from facesynth.swap import SwapTrainer
    from facesynth.swap.config import SwapConfig

    faces_a = extract_faces(samples.talking_head, work / "A", fps=5, size=64, detector="dlib", progress=False)
    faces_b = extract_faces(samples.portraits, work / "B", size=64, detector="dlib", progress=False)
    config = SwapConfig.preset("quick", checkpoint_every=5, preview_every=0, snapshot_every=0)
    SwapTrainer(config, faces_a=faces_a.root, faces_b=faces_b.root, workdir=work / "model", progress=False).train(5)
    return work / "model"


# ------------------------------------------------------------------------------------------------ swap

@pytest.mark.slow
def test_converted_video_is_an_edit_of_its_input_with_the_checkpoints_hash(clip, swap_model, tmp_path):
    from facesynth.swap import convert_video

    out = convert_video(clip, tmp_path / "swap.mp4", swap_model, "a2b", detector="dlib", progress=False)
    data = assert_signed(out, "c2pa.edited", "swap", inputs=[clip], weights=[swap_model / "checkpoint.pt"])
    assert data["parameters"]["direction"] == "a2b" and data["parameters"]["preset"] == "quick"
    assert data["parameters"]["iterations"] == 5 and data["parameters"]["detector"] == "dlib"


@pytest.mark.slow
def test_converted_photo_is_signed_and_marked_and_provenance_false_writes_it_plain(samples, swap_model, tmp_path):
    from facesynth.swap import convert_image

    out = convert_image(samples.astronaut, tmp_path / "swap.png", swap_model, "b2a", detector="dlib")
    assert_signed(out, "c2pa.edited", "swap", inputs=[samples.astronaut], weights=[swap_model / "checkpoint.pt"])
    assert pv.read_watermark(out).found                                      # 512x512: marked
    convert_image(samples.astronaut, out, swap_model, "b2a", detector="dlib", provenance=False)
    assert_plain(out)                                                         # the earlier sidecar went with it


# ------------------------------------------------------------------------------------------------ reenactment

@pytest.mark.slow
def test_reenactment_pasted_back_is_an_edit_of_the_portrait(samples, fomm, driving, clip, tmp_path):
    from facesynth.reenact import reenact

    result = reenact(fomm, samples.astronaut, driving, tmp_path / "full.mp4", size=128, detector="dlib", paste=True,
                     keep=0)
    data = assert_signed(result.video, "c2pa.edited", "reenact", inputs=[samples.astronaut, clip],
                         weights=[FOMM_CKPT])
    assert data["parameters"]["paste"] is True and data["parameters"]["config"] == "small.yaml"
    assert pv.read_watermark(result.video).found                              # 512x512 frames: marked


def test_self_reenactment_is_created_and_its_copy_baseline_is_plain(fomm, driving, clip, tmp_path):
    from facesynth.reenact import self_reenact

    result = self_reenact(fomm, driving, tmp_path / "self.mp4", size=128, baseline_path=tmp_path / "copy.mp4",
                          keep=0)
    data = assert_signed(result.video, "c2pa.created", "reenact", inputs=[clip], weights=[FOMM_CKPT])
    assert data["parameters"]["protocol"] == "self-reenactment"
    assert_plain(result.baseline)                                            # a real frame repeated: no model made it


def test_a_precision_named_by_its_dtype_is_recorded_by_name(fomm, driving, clip, tmp_path):
    import torch

    from facesynth.reenact import self_reenact

    result = self_reenact(fomm, driving, tmp_path / "self.mp4", size=128, keep=0, autocast=torch.bfloat16)
    data = assert_signed(result.video, "c2pa.created", "reenact", inputs=[clip], weights=[FOMM_CKPT])
    assert data["parameters"]["autocast"] == "bfloat16"


def test_a_model_built_in_memory_is_named_as_such(fomm, driving, tmp_path):
    import dataclasses

    from facesynth.reenact import self_reenact

    unnamed = dataclasses.replace(fomm)                                      # no file behind it
    result = self_reenact(unnamed, driving, tmp_path / "self.mp4", size=128, keep=0)
    data = assert_signed(result.video, "c2pa.created", "reenact", inputs=[driving.path])
    assert data["parameters"]["weights_in_memory"] == ["FOMM"]


# ------------------------------------------------------------------------------------------------ lip sync

@pytest.mark.slow
def test_lip_synced_video_is_an_edit_with_the_face_sound_and_checkpoint_hashes(clip, short_speech, wav2lip_file,
                                                                               tmp_path):
    from facesynth.lipsync import lipsync

    out = lipsync(clip, short_speech, tmp_path / "talking.mp4", checkpoint=wav2lip_file, box=BOX, progress=False)
    data = assert_signed(out, "c2pa.edited", "lipsync", inputs=[clip, short_speech], weights=[wav2lip_file])
    assert data["parameters"]["box"] == list(BOX) and data["parameters"]["still"] is False


@pytest.mark.slow
def test_lipsync_cli_without_provenance_writes_a_plain_video(clip, short_speech, wav2lip_file, tmp_path, capsys):
    out = tmp_path / "plain.mp4"
    assert main(["lipsync", str(out), "--face", str(clip), "--audio", str(short_speech), "--checkpoint",
                 str(wav2lip_file), "--box", *map(str, BOX), "--no-provenance"]) == 0
    assert_plain(out)
    assert "provenance: off" in capsys.readouterr().out


@pytest.mark.slow
def test_talking_portrait_is_created_from_portrait_driving_video_and_sound(samples, clip, short_speech, wav2lip_file,
                                                                          tmp_path):
    from facesynth.lipsync import talking_portrait

    out = talking_portrait(samples.astronaut, clip, short_speech, tmp_path / "portrait.mp4", fomm=FOMM_CKPT,
                           config=FOMM_YAML, wav2lip=wav2lip_file, size=128, detector="dlib", face_box="source",
                           max_frames=4, progress=False)
    data = assert_signed(out, "c2pa.created", "talking-portrait", inputs=[samples.astronaut, clip, short_speech],
                         weights=[FOMM_CKPT, wav2lip_file])
    assert data["parameters"]["max_frames"] == 4 and data["parameters"]["face_box"] == "source"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["portrait.mp4", "portrait.mp4.provenance.json"]


# ------------------------------------------------------------------------------------------------ generation

def test_generated_grid_and_interpolation_video_are_created_with_the_weights_hash(tmp_path, capsys):
    args = ["--pkl", str(PKL), "--seeds", "0-2", "--trunc", "0.5", "--device", "cpu"]
    assert main(["generate", *args, str(tmp_path / "grid.png")]) == 0
    data = assert_signed(tmp_path / "grid.png", "c2pa.created", "generate", weights=[PKL])
    assert data["parameters"]["seeds"] == [0, 1, 2] and data["parameters"]["truncation_psi"] == 0.5
    assert f"provenance: signed C2PA manifest, no watermark, hash chain → {tmp_path / 'grid.png'}.provenance.json" \
        in capsys.readouterr().out
    assert main(["generate", *args, "--mode", "video", "--steps", "2", str(tmp_path / "walk.mp4")]) == 0
    data = assert_signed(tmp_path / "walk.mp4", "c2pa.created", "generate", weights=[PKL])
    assert data["parameters"]["mode"] == "interpolation" and data["parameters"]["steps"] == 2


def test_generated_images_each_name_their_seed_and_no_provenance_writes_them_plain(tmp_path):
    args = ["--pkl", str(PKL), "--seeds", "3,4", "--device", "cpu"]
    assert main(["generate", *args, str(tmp_path / "signed")]) == 0
    data = assert_signed(tmp_path / "signed" / "seed0004.png", "c2pa.created", "generate", weights=[PKL])
    assert data["parameters"]["seeds"] == [4]
    assert main(["generate", *args, "--no-provenance", str(tmp_path / "plain")]) == 0
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["seed0003.png", "seed0004.png"]
    assert_plain(tmp_path / "plain" / "seed0003.png")


@pytest.mark.filterwarnings("ignore::facesynth.generate.project.PixelOnlyProjectionWarning")
def test_projection_is_created_from_its_target_photo(samples, tmp_path):
    from facesynth.media import read_image, write_image

    target = write_image(tmp_path / "target.png", read_image(samples.astronaut)[::16, ::16])     # 32x32, aligned
    assert main(["project", str(target), str(tmp_path / "fit"), "--pkl", str(PKL), "--steps", "2", "--no-align",
                 "--mix-seeds", "1", "--device", "cpu"]) == 0
    for name in ("projected.png", "compare.png", "mixing.png"):
        data = assert_signed(tmp_path / "fit" / name, "c2pa.created", "generate", inputs=[target], weights=[PKL])
        assert data["parameters"]["mode"] == "projection" and data["parameters"]["steps"] == 2


# ------------------------------------------------------------------------------------------------ command line

@pytest.mark.parametrize("argv", [
    ["convert", "in.mp4", "out.mp4", "--model", "m"],
    ["reenact", "out.mp4", "--source", "s.png", "--driving", "d.mp4"],
    ["lipsync", "out.mp4", "--face", "f.png", "--audio", "a.wav"],
    ["talking-portrait", "out.mp4", "--portrait", "p.png", "--driving", "d.mp4"],
    ["generate", "out.png"],
    ["project", "t.png", "out"],
    ["demo"],
])
def test_every_command_that_writes_a_result_takes_no_provenance(argv):
    from facesynth.cli.common import provenance_arg

    assert provenance_arg(build_parser().parse_args(argv)) is None               # on (unless the environment says 0)
    assert provenance_arg(build_parser().parse_args([*argv, "--no-provenance"])) is False


def test_the_environment_turns_provenance_off(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESYNTH_PROVENANCE", "0")
    assert main(["generate", "--pkl", str(PKL), "--seeds", "1", "--device", "cpu", str(tmp_path / "g.png")]) == 0
    assert_plain(tmp_path / "g.png")

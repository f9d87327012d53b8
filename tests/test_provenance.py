"""Provenance: C2PA manifests, the invisible watermark, the per-segment hash chain and ``facesynth verify``.

The video is the sample talking head's first 60 frames scaled to 352x288 (the watermark needs 256x256 pixels) with
a 2-second real-sounding test signal as its audio track, written through ``provenance.VideoWriter``; the image is
the astronaut (512x512) through ``provenance.write_image``.
"""
from __future__ import annotations

import hashlib
import json
import stat
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from facesynth import provenance as pv
from facesynth.cli import main
from facesynth.errors import FacesynthError, MediaError
from facesynth.media import ffmpeg_exe, iter_frames, read_image, write_image, write_video
from facesynth.provenance import ProvenanceError, ProvenanceWarning
from facesynth.provenance.chain import check_chain
from facesynth.provenance.signer import SIGNER_KEY, local_signer_dir

TAM = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
SPEECH = Path(__file__).parent / "data" / "wav2lip" / "mel.npz"


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _ffmpeg(*args) -> None:
    subprocess.run([ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error", *map(str, args)], check=True)


def _c2pa_store(path, mime) -> dict:
    import c2pa

    with open(path, "rb") as f, c2pa.Reader(mime, f) as reader:
        return json.loads(reader.json())


def _active(store: dict) -> dict:
    return store["manifests"][store["active_manifest"]]


def _assertion(manifest: dict, label: str) -> dict:
    return next(a["data"] for a in manifest["assertions"] if a["label"] == label)


@pytest.fixture(scope="module")
def config_home(tmp_path_factory):
    return tmp_path_factory.mktemp("config")


@pytest.fixture(autouse=True)
def _signer_env(monkeypatch, config_home):
    """A config folder of the tests' own for the local signer, and no user certificate."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    monkeypatch.delenv("FACESYNTH_C2PA_CERT", raising=False)
    monkeypatch.delenv("FACESYNTH_C2PA_KEY", raising=False)
    monkeypatch.delenv("FACESYNTH_PROVENANCE", raising=False)


@pytest.fixture(scope="module")
def clip(samples, tmp_path_factory, config_home):
    """(signed video, its Provenance): 60 frames at 352x288, 29.97 fps, with audio, marked, chained and signed."""
    from scipy.io import wavfile

    root = tmp_path_factory.mktemp("clip")
    wavfile.write(root / "speech.wav", 16000, np.load(SPEECH)["pcm"])
    prov = pv.Provenance("swap", inputs=[samples.talking_head], weights=[samples.grace_hopper],
                         parameters={"preset": "quick", "iterations": 100, "seed": 7}, edited=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(config_home))
        with pv.VideoWriter(root / "out.mp4", 29.97, audio=root / "speech.wav", provenance=prov) as w:
            for i, frame in iter_frames(samples.talking_head):
                if i == 60:
                    break
                w.write(cv2.resize(frame, (352, 288), interpolation=cv2.INTER_CUBIC))
    return root / "out.mp4", prov


@pytest.fixture(scope="module")
def image(samples, tmp_path_factory, config_home):
    """A signed, marked PNG of the astronaut made by 'generate'."""
    root = tmp_path_factory.mktemp("image")
    prov = pv.Provenance("generate", weights=[samples.grace_hopper],
                         parameters={"truncation_psi": 0.7, "seeds": [3, 300, -1], "size": (512, 512)})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(config_home))
        pv.write_image(root / "out.png", read_image(samples.astronaut), prov)
    return root / "out.png"


# ------------------------------------------------------------------------------------------------ manifests

def test_video_manifest_reads_back_with_source_type_inputs_and_chain(clip, samples):
    path, _ = clip
    store = _c2pa_store(path, "video/mp4")
    manifest = _active(store)
    actions = _assertion(manifest, "c2pa.actions.v2")["actions"]
    assert [a["action"] for a in actions] == ["c2pa.opened", "c2pa.edited"]      # a real video was changed
    assert actions[1]["digitalSourceType"] == TAM
    assert manifest["ingredients"][0]["relationship"] == "parentOf"
    data = _assertion(manifest, pv.LABEL)
    assert data["technique"] == "swap" and data["facesynth_version"] == "0.1.0"
    assert data["inputs"][0] == {"name": "talking_head.mp4", "sha256": _sha256(samples.talking_head),
                                 "bytes": samples.talking_head.stat().st_size}
    assert data["weights"][0]["sha256"] == _sha256(samples.grace_hopper)
    assert data["parameters"] == {"preset": "quick", "iterations": 100, "seed": 7}
    chain = data["chain"]
    assert (chain["frames"], chain["width"], chain["height"], len(chain["segments"])) == (60, 352, 288, 4)
    assert all(len(s["audio_sha256"]) == 64 for s in chain["segments"])       # the audio track, per segment
    check_chain(chain, "manifest")           # the chain survives the manifest's JSON → CBOR → JSON round trip
    assert store["validation_state"] == "Valid"
    assert [s["code"] for s in store["validation_status"]] == ["signingCredential.untrusted"]   # self-issued
    assert "self-issued" in manifest["signature_info"]["issuer"]


def test_sidecar_holds_the_same_chain_and_the_signed_files_digest(clip):
    path, _ = clip
    side = json.loads(pv.sidecar_path(path).read_text())
    signed = _assertion(_active(_c2pa_store(path, "video/mp4")), pv.LABEL)["chain"]
    assert side["chain"]["head"] == signed["head"]
    assert side["file_sha256"] == _sha256(path)
    assert [s["last_frame"] for s in side["chain"]["segments"]] == [14, 29, 44, 59]
    assert side["watermark"]["embedded"] is True and side["watermark"]["interval"] == 10


def test_image_manifest_says_created_by_trained_algorithm(image, samples):
    manifest = _active(_c2pa_store(image, "image/png"))
    actions = _assertion(manifest, "c2pa.actions.v2")["actions"]
    assert [(a["action"], a["digitalSourceType"]) for a in actions] == [("c2pa.created", TAM)]
    data = _assertion(manifest, pv.LABEL)
    assert data["weights"][0]["sha256"] == _sha256(samples.grace_hopper)
    assert data["parameters"]["truncation_psi"] == 0.7
    # lists of numbers: c2pa 0.91's Reader.json() garbles them (a byte string, mod 256); read_manifest uses crjson()
    assert pv.read_manifest(image).facesynth["parameters"] == {"truncation_psi": 0.7, "seeds": [3, 300, -1],
                                                                "size": [512, 512]}


def test_jpeg_and_finalize_paths_are_signed_too(samples, tmp_path):
    prov = pv.Provenance("reenact", inputs=[samples.astronaut, samples.portraits])
    pv.write_image(tmp_path / "a.jpg", read_image(samples.astronaut), prov)
    write_image(tmp_path / "b.png", read_image(samples.grace_hopper))          # written without provenance ...
    pv.finalize_image(tmp_path / "b.png", prov)                                # ... then finalized
    for name, mime in (("a.jpg", "image/jpeg"), ("b.png", "image/png")):
        data = _assertion(_active(_c2pa_store(tmp_path / name, mime)), pv.LABEL)
        assert data["inputs"][1]["files"] == 2                                 # a folder input: digest over its files
        assert pv.verify(tmp_path / name).verdict == "intact"
    assert pv.read_watermark(tmp_path / "b.png").found


def test_provenance_off_writes_a_plain_file(samples, tmp_path, monkeypatch):
    assert pv.enabled() and pv.enabled(True) and not pv.enabled(False)
    monkeypatch.setenv("FACESYNTH_PROVENANCE", "0")
    assert not pv.enabled() and pv.enabled(True)          # --provenance given explicitly still wins
    pv.write_image(tmp_path / "plain.png", read_image(samples.astronaut), None)
    assert not pv.sidecar_path(tmp_path / "plain.png").exists()
    assert pv.read_manifest(tmp_path / "plain.png").state == "missing"
    with pytest.raises(ProvenanceError, match="inputs"):
        pv.Provenance("swap", edited=True)                  # an edit names what it edited


# ------------------------------------------------------------------------------------------------ signer

def test_local_signer_is_made_once_with_a_private_key(clip, config_home):
    folder = local_signer_dir()
    assert folder == config_home / "facesynth" / "c2pa"
    assert stat.S_IMODE((folder / SIGNER_KEY).stat().st_mode) == 0o600
    assert "self-issued" in (folder / "README.txt").read_text()
    before = (folder / "signer.pem").read_bytes()
    pv.signer.signer_files()
    assert (folder / "signer.pem").read_bytes() == before


def test_user_certificate_from_the_environment_signs(samples, tmp_path, monkeypatch):
    from facesynth.provenance.signer import make_signer

    make_signer(tmp_path / "ca")             # stands in for a certificate the user got elsewhere
    monkeypatch.setenv("FACESYNTH_C2PA_CERT", str(tmp_path / "ca" / "signer.pem"))
    with pytest.raises(ProvenanceError, match="FACESYNTH_C2PA_KEY"):
        pv.write_image(tmp_path / "x.png", read_image(samples.astronaut), pv.Provenance("generate"))
    monkeypatch.setenv("FACESYNTH_C2PA_KEY", str(tmp_path / "ca" / "signer.key"))
    pv.write_image(tmp_path / "x.png", read_image(samples.astronaut), pv.Provenance("generate"))
    from cryptography import x509
    cn = x509.load_pem_x509_certificate((tmp_path / "ca" / "signer.pem").read_bytes()).subject.rfc4514_string()
    assert _active(_c2pa_store(tmp_path / "x.png", "image/png"))["signature_info"]["common_name"] in cn


# ------------------------------------------------------------------------------------------------ watermark

def test_watermark_decodes_from_png_and_from_a_jpeg_resave_at_quality_80(image, tmp_path):
    from PIL import Image

    png = pv.read_watermark(image)
    assert png.found and png.bit_errors == 0
    Image.open(image).convert("RGB").save(tmp_path / "q80.jpg", quality=80)
    jpeg = pv.read_watermark(tmp_path / "q80.jpg")
    assert jpeg.found and jpeg.bit_errors <= 2                        # measured: 0 of 64 (1 at quality 60)


def test_watermark_is_invisible_and_absent_from_unmarked_images(samples):
    original = read_image(samples.astronaut)
    marked = pv.watermark_frame(original)
    psnr = 10 * np.log10(255 ** 2 / np.mean((marked.astype(float) - original) ** 2))
    assert psnr > 45 and np.abs(marked.astype(int) - original).max() <= 10      # measured 46.5 dB, 9 levels
    unmarked = pv.read_watermark(original)
    assert not unmarked.found and unmarked.bit_errors >= 20                      # chance is about 32 of 64
    frames = list(pv.watermark_frames([original] * 11))                         # for writers with their own loop
    assert [not np.array_equal(f, original) for f in frames] == [True] + [False] * 9 + [True]


def test_invisible_watermarks_own_decoder_reads_the_mark(image):
    from imwatermark import WatermarkDecoder

    bgr = np.ascontiguousarray(read_image(image)[..., ::-1])
    assert WatermarkDecoder("bytes", 64).decode(bgr, "dwtDct", scales=[24, 0, 0]) == b"facesyn1"


def test_small_outputs_skip_the_watermark_with_a_reason(samples, tmp_path):
    small = next(iter_frames(samples.talking_head))[1]                 # 176x144
    with pytest.warns(ProvenanceWarning, match="256x256"):
        pv.write_image(tmp_path / "small.png", small, pv.Provenance("swap"))
    side = json.loads(pv.sidecar_path(tmp_path / "small.png").read_text())
    assert side["watermark"]["embedded"] is False and "176x144" in side["watermark"]["reason"]
    assert pv.verify(tmp_path / "small.png").verdict == "intact"
    assert np.array_equal(read_image(tmp_path / "small.png"), small)   # pixels untouched


# ------------------------------------------------------------------------------------------------ verify

def test_intact_video_exits_0(clip, capsys):
    path, _ = clip
    assert main(["verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "INTACT" in out and "hard binding matches" in out and "self-issued" in out
    report = pv.verify(path)
    assert report.watermark.found and report.content == "unchanged"
    assert report.reference == "manifest" and report.notes == []       # the signed chain read back intact
    assert [s.video for s in report.segments] == ["same"] * 4 and [s.audio for s in report.segments] == ["same"] * 4


def test_edited_frames_30_to_45_are_named_after_a_reencode(clip, tmp_path, capsys):
    path, _ = clip
    frames = [f.copy() for _, f in iter_frames(path)]
    for f in frames[30:46]:
        cv2.rectangle(f, (120, 60), (200, 140), (200, 30, 30), -1)
    write_video(tmp_path / "edited.mp4", frames, 29.97, audio=path)
    side = pv.sidecar_path(path)
    assert main(["verify", str(tmp_path / "edited.mp4"), "--sidecar", str(side), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "changed" and report["changed_frames"] == "30–45"
    changed = [s for s in report["segments"] if s["video"] == "changed"]
    assert [(s["segment"], tuple(s["frames"])) for s in changed] == [(2, (30, 44)), (3, (45, 59))]
    assert changed[0]["seconds"] == pytest.approx([1.001, 1.502], abs=1e-3)
    assert changed[0]["changed_frames"] == list(range(30, 45)) and changed[1]["changed_frames"] == [45]
    assert [s["video"] for s in report["segments"][:2]] == ["re-encoded", "re-encoded"]
    assert all(s["audio"] in ("same", "re-encoded") for s in report["segments"])


def test_plain_reencode_is_a_reencode_with_content_unchanged(clip, tmp_path):
    path, _ = clip
    _ffmpeg("-i", path, "-c:v", "libx264", "-crf", "23", "-c:a", "aac", tmp_path / "re.mp4")
    report = pv.verify(tmp_path / "re.mp4", sidecar=pv.sidecar_path(path))
    assert (report.verdict, report.content, report.exit_code) == ("re-encoded", "re-encoded", 1)
    assert report.manifest.state == "missing" and report.changed_frames == []
    assert max(s.max_luma_change for s in report.segments) <= 10             # threshold 20; measured 4


def test_stripped_manifest_is_missing_while_the_watermark_is_found(clip, image, tmp_path):
    from PIL import Image

    path, _ = clip
    _ffmpeg("-i", path, "-c", "copy", tmp_path / "remux.mp4")          # a remux drops C2PA's uuid box
    Image.open(image).save(tmp_path / "resaved.png")                    # PIL drops the caBX chunk
    for copy, original in ((tmp_path / "remux.mp4", path), (tmp_path / "resaved.png", image)):
        report = pv.verify(copy, sidecar=pv.sidecar_path(original))
        assert (report.verdict, report.manifest.state, report.content) == ("manifest-missing", "missing", "unchanged")
        assert report.watermark.found and report.exit_code == 1
    # without a sidecar there is nothing to compare, but the watermark still says facesynth made it
    report = pv.verify(tmp_path / "remux.mp4")
    assert (report.verdict, report.content, report.watermark.found) == ("manifest-missing", "unknown", True)


def test_bytes_changed_in_place_fail_the_hard_binding(clip, tmp_path):
    path, _ = clip
    data = bytearray(path.read_bytes())
    data[data.find(b"mdat") + len(data) // 3] ^= 0x55
    (tmp_path / "tampered.mp4").write_bytes(bytes(data))
    report = pv.verify(tmp_path / "tampered.mp4", sidecar=pv.sidecar_path(path))
    assert report.manifest.hard_binding == "mismatch" and report.manifest.signature == "valid"
    assert report.verdict in ("manifest-invalid", "changed") and report.exit_code == 1


def test_changed_audio_is_named_by_segment(clip, tmp_path):
    from scipy.io import wavfile

    path, _ = clip
    pcm = np.load(SPEECH)["pcm"].copy()
    pcm[16000:24000] = 0                                              # silence over 1.0–1.5 s
    wavfile.write(tmp_path / "cut.wav", 16000, pcm)
    _ffmpeg("-i", path, "-i", tmp_path / "cut.wav", "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
            "-b:a", "192k", tmp_path / "dub.mp4")
    report = pv.verify(tmp_path / "dub.mp4", sidecar=pv.sidecar_path(path))
    assert report.verdict == "changed" and report.changed_frames == []
    assert [s.segment for s in report.segments if s.audio == "changed"] == [2]     # frames 30–44: 1.00–1.50 s
    assert all(s.video == "same" for s in report.segments)


def test_a_chain_too_large_for_the_manifest_keeps_its_thumbnails_in_the_sidecar(clip, tmp_path, monkeypatch):
    import facesynth.provenance.manifest as manifest

    path, _ = clip
    monkeypatch.setattr(manifest, "_MANIFEST_JSON_LIMIT", 4000)        # as a long video's would be
    with pv.VideoWriter(tmp_path / "long.mp4", 29.97, provenance=pv.Provenance("swap")) as w:
        for i, frame in iter_frames(path):
            if i == 20:
                break
            w.write(frame)
    signed = pv.read_manifest(tmp_path / "long.mp4").facesynth["chain"]
    assert "luma16" not in signed["segments"][0] and signed["luma16"].startswith("in the sidecar only")
    assert pv.verify(tmp_path / "long.mp4").verdict == "intact"
    _ffmpeg("-i", tmp_path / "long.mp4", "-c:v", "libx264", "-crf", "23", tmp_path / "re.mp4")
    assert pv.verify(tmp_path / "re.mp4", sidecar=pv.sidecar_path(tmp_path / "long.mp4")).verdict == "re-encoded"
    pv.sidecar_path(tmp_path / "long.mp4").unlink()      # the signed chain alone cannot tell a re-encode from an edit
    data = bytearray((tmp_path / "long.mp4").read_bytes())
    data[data.find(b"mdat") + len(data) // 2] ^= 0x55
    (tmp_path / "long.mp4").write_bytes(bytes(data))
    report = pv.verify(tmp_path / "long.mp4")
    assert report.reference == "manifest" and report.verdict == "changed"
    assert any("without per-frame thumbnails" in n for n in report.notes)


# ------------------------------------------------------------------------------------------------ bad input

def test_files_facesynth_did_not_write_are_bad_input(samples, capsys):
    for path in (samples.talking_head, samples.astronaut):
        assert main(["verify", str(path)]) == 2
        err = capsys.readouterr().err
        assert "no facesynth provenance" in err and "no C2PA manifest" in err and "--sidecar" in err


def test_truncated_files_are_bad_input(clip, image, tmp_path):
    path, _ = clip
    for source, name in ((path, "cut.mp4"), (image, "cut.png")):
        data = source.read_bytes()
        (tmp_path / name).write_bytes(data[:len(data) * 6 // 10])
        with pytest.raises(MediaError, match="truncated"):
            pv.verify(tmp_path / name, sidecar=pv.sidecar_path(source))


def test_sidecars_that_do_not_match_are_bad_input(clip, image, samples, tmp_path):
    path, _ = clip
    # another video's sidecar
    with pv.VideoWriter(tmp_path / "other.mp4", 29.97, provenance=pv.Provenance("swap")) as w:
        for i, frame in iter_frames(path):
            if i == 20:
                break
            w.write(frame)
    with pytest.raises(ProvenanceError, match="does not belong to"):
        pv.verify(path, sidecar=pv.sidecar_path(tmp_path / "other.mp4"))
    # an image's sidecar for a video
    with pytest.raises(ProvenanceError, match="not this file's sidecar"):
        pv.verify(path, sidecar=pv.sidecar_path(image))
    # a sidecar whose chain was edited
    side = json.loads(pv.sidecar_path(path).read_text())
    side["chain"]["segments"][1]["sha256"] = "0" * 64
    (tmp_path / "edited.json").write_text(json.dumps(side))
    with pytest.raises(ProvenanceError, match="entry 1"):
        pv.verify(path, sidecar=tmp_path / "edited.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ProvenanceError, match="damaged"):
        pv.verify(path, sidecar=tmp_path / "broken.json")


def test_missing_and_unsupported_files_are_bad_input(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        pv.verify(tmp_path / "nope.mp4")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FacesynthError, match="not an image or video"):
        pv.verify(tmp_path / "notes.txt")

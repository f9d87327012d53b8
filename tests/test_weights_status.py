"""facesynth.weights.check and `facesynth weights [--verify]`: every state a weights file can be in, told apart
without running anything in it, and the command's output and exit status."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from facesynth import weights
from facesynth.cli import main
from facesynth.errors import WeightsNotFoundError
from facesynth.weights import REGISTRY

TF_PICKLE = Path(__file__).parent / "data" / "stylegan" / "nostyle.pkl"   # an official-format StyleGAN pickle


class _Payload:
    """Unpickling this creates a folder: a hostile file's side effect, visible if it ever ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _weights_env() -> Path:
    return Path(os.environ["FACESYNTH_WEIGHTS"])


def _hub_env() -> Path:
    return Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"


def _put(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def _torch_bytes(tmp_path: Path, n: int = 1000) -> bytes:
    torch.save({"weight": torch.arange(n, dtype=torch.float32)}, tmp_path / "t.pth")
    return (tmp_path / "t.pth").read_bytes()


def _register(monkeypatch, name: str, **changes) -> None:
    """Replace a registry entry by a copy with ``changes`` (e.g. a digest computed from a test file)."""
    monkeypatch.setitem(REGISTRY, name, dataclasses.replace(REGISTRY[name], **changes))


# ------------------------------------------------------------------------------------------------ check

def test_missing_says_where_it_goes():
    s = weights.check("fomm-vox")
    assert (s.state, s.path, s.size, s.sha256, s.ok) == ("missing", None, None, None, True)
    assert s.filename == "vox-cpk.pth.tar"
    assert f"put it in {_weights_env()}/" in s.reason and REGISTRY["fomm-vox"].urls[0] in s.reason


def test_empty_file():
    path = _put(_hub_env(), "s3fd-619a316812.pth", b"")
    s = weights.check("s3fd")
    assert (s.state, s.path, s.size, s.sha256, s.ok) == ("empty", path, 0, None, False)
    assert "0 bytes" in s.reason and "download it again" in s.reason


def test_an_empty_copy_gives_way_to_a_good_one(tmp_path):
    _put(_weights_env(), "vox-cpk.pth.tar", b"")
    good = _put(Path(os.environ["XDG_CACHE_HOME"]) / "facesynth", "vox-cpk.pth.tar", _torch_bytes(tmp_path))
    s = weights.check("fomm-vox")
    assert (s.state, s.path) == ("unverified", good)      # the copy resolve() uses
    assert weights.resolve("fomm-vox") == good


def test_truncated_torch_file_is_unreadable(tmp_path):
    data = _torch_bytes(tmp_path)
    path = _put(_weights_env(), "vox-cpk.pth.tar", data[: len(data) // 2])
    s = weights.check("fomm-vox")
    assert (s.state, s.path, s.size, s.ok) == ("unreadable", path, len(data) // 2, False)
    assert s.sha256 == hashlib.sha256(data[: len(data) // 2]).hexdigest()
    assert s.reason.startswith("not a readable torch checkpoint")
    assert "download it again" in s.reason and str(path) not in s.reason


def test_hostile_pickle_is_unreadable_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    _put(_weights_env(), "wav2lip.pth", pickle.dumps(_Payload(marker)))
    s = weights.check("wav2lip")
    assert s.state == "unreadable"
    assert "refused to load" in s.reason and "mkdir" in s.reason
    assert not marker.exists()
    assert "mirror" in s.reason                               # its official link is dead: say where else to look


def test_stylegan_pickle_is_read_with_the_restricted_unpickler():
    shutil.copyfile(TF_PICKLE, _weights_env() / "karras2019stylegan-ffhq-1024x1024.pkl")
    s = weights.check("stylegan-ffhq")
    assert (s.state, s.size) == ("unverified", TF_PICKLE.stat().st_size)
    assert s.sha256 == hashlib.sha256(TF_PICKLE.read_bytes()).hexdigest()
    _put(_weights_env(), "karras2019stylegan-ffhq-1024x1024.pkl", TF_PICKLE.read_bytes()[:5000])
    s = weights.check("stylegan-ffhq")
    assert s.state == "unreadable" and s.reason.startswith("not a readable StyleGAN pickle")


def test_stylegan_alias_name_is_checked():
    shutil.copyfile(TF_PICKLE, _weights_env() / "stylegan-celebahq-1024x1024.pkl")
    s = weights.check("stylegan-celebahq-1024x1024.pkl")
    assert (s.name, s.state) == ("stylegan-celebahq", "unverified")
    assert s.path == _weights_env() / "stylegan-celebahq-1024x1024.pkl"


def test_full_digest_match_is_verified(monkeypatch):
    data = os.urandom(3 << 20)                                # spans several of sha256sum's 1 MiB chunks
    _register(monkeypatch, "wav2lip-gan", sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    path = _put(_weights_env(), "wav2lip_gan.pth", data)
    s = weights.check("wav2lip-gan")
    assert (s.state, s.path, s.size, s.ok) == ("verified", path, 3 << 20, True)
    assert s.sha256 == hashlib.sha256(data).hexdigest()
    assert s.reason == "matches the published SHA-256"        # not loaded: random bytes are no torch file


def test_prefix_match_is_a_partial_verification(monkeypatch):
    data = b"2dfan4 stand-in"
    _register(monkeypatch, "2dfan4", sha256_prefix=hashlib.sha256(data).hexdigest()[:10])
    _put(_hub_env(), "2DFAN4-11f355bf06.pth.tar", data)
    s = weights.check("2dfan4")
    assert s.state == "verified"
    assert "prefix" in s.reason and "partial" in s.reason


def test_readable_file_with_another_digest_is_a_mismatch(tmp_path):
    data = _torch_bytes(tmp_path)
    _put(_weights_env(), "syncnet_v2.model", data)
    s = weights.check("syncnet")
    digest = hashlib.sha256(data).hexdigest()
    assert (s.state, s.sha256, s.ok) == ("mismatch", digest, False)
    assert digest[:16] in s.reason and REGISTRY["syncnet"].sha256[:16] in s.reason
    assert "download it again" in s.reason


def test_mismatch_reports_a_size_difference(tmp_path):
    data = _torch_bytes(tmp_path)
    _put(_hub_env(), "weights-inception-2015-12-05-6726825d.pth", data)
    s = weights.check("inception")
    assert s.state == "mismatch"
    assert f"{len(data):,} bytes where the official file has 95,628,359" in s.reason


def test_s3fd_digest_agrees_with_its_file_name():
    spec = REGISTRY["s3fd"]
    assert spec.sha256.startswith(spec.sha256_prefix) and spec.filename == f"s3fd-{spec.sha256_prefix}.pth"


def test_unknown_name_raises():
    with pytest.raises(WeightsNotFoundError, match="stylegan9"):
        weights.check("stylegan9")


def test_resolve_names_an_empty_copy():
    path = _put(_hub_env(), "s3fd-619a316812.pth", b"")
    with pytest.raises(WeightsNotFoundError) as ei:
        weights.resolve("s3fd")
    assert f"{path} is empty (0 bytes" in str(ei.value)


def test_missing_message_lists_mirrors_as_unverified():
    with pytest.raises(WeightsNotFoundError) as ei:
        weights.resolve("wav2lip-gan")
    msg = str(ei.value)
    assert "Unofficial mirrors (unverified" in msg
    assert all(m in msg for m in REGISTRY["wav2lip-gan"].mirrors)


# ------------------------------------------------------------------------------------------------ command

def test_listing_says_where_each_file_goes(capsys, tmp_path):
    present = _put(_weights_env(), "vox-cpk.pth.tar", _torch_bytes(tmp_path))
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    for spec in REGISTRY.values():
        assert spec.name in out and spec.filename in out and spec.licence in out
    assert f"goes in  {_hub_env()}/" in out                   # s3fd, 2dfan4, inception
    assert f"goes in  {_weights_env()}/" in out
    assert f"present: {present}" in out
    assert out.count("missing") == len(REGISTRY) - 1
    assert out.count("(unofficial, unverified)") == sum(len(s.mirrors) for s in REGISTRY.values())
    assert "weights/README.md" in out.strip().splitlines()[-1]


def test_listing_json_and_names(capsys):
    assert main(["weights", "--json", "s3fd", "wav2lip_gan.pth"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["s3fd", "wav2lip-gan"]
    assert rows[0]["folder"] == str(_hub_env()) and rows[0]["path"] is None
    assert rows[1]["mirrors"] == list(REGISTRY["wav2lip-gan"].mirrors) and rows[1]["direct"] is False


def test_verify_with_everything_missing_exits_0(capsys):
    assert main(["weights", "--verify"]) == 0
    out = capsys.readouterr().out
    assert f"{len(REGISTRY)} missing." in out
    assert "Missing files are fine until a technique needs them" in out


def test_verify_good_files_exit_0(capsys, monkeypatch, tmp_path):
    data = b"official bytes"
    _register(monkeypatch, "wav2lip", sha256=hashlib.sha256(data).hexdigest())
    _put(_weights_env(), "wav2lip.pth", data)
    _put(_weights_env(), "vox-cpk.pth.tar", _torch_bytes(tmp_path))
    assert main(["weights", "--verify", "wav2lip", "fomm-vox"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["wav2lip", "verified"] and "(14 bytes)" in lines[0]
    assert lines[2].split()[:2] == ["fomm-vox", "unverified"]
    assert lines[-1] == "1 verified, 1 unverified. All present files are usable."


@pytest.mark.parametrize("state", ["empty", "unreadable", "mismatch"])
def test_verify_a_bad_file_exits_1(capsys, tmp_path, state):
    data = {"empty": b"", "unreadable": b"not torch", "mismatch": _torch_bytes(tmp_path)}[state]
    _put(_weights_env(), "syncnet_v2.model", data)
    assert main(["weights", "--verify"]) == 1
    out = capsys.readouterr().out
    assert f"syncnet            {state}" in out
    assert f"1 {state}" in out and "Bad: syncnet: delete and download again" in out


def test_verify_json(capsys):
    path = _put(_hub_env(), "s3fd-619a316812.pth", b"")
    assert main(["weights", "--verify", "--json", "s3fd", "2dfan4"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["state"]) for r in rows] == [("s3fd", "empty"), ("2dfan4", "missing")]
    assert rows[0]["path"] == str(path) and rows[0]["size"] == 0 and rows[0]["sha256"] is None


def test_verify_unknown_name_is_a_usage_error(capsys):
    assert main(["weights", "--verify", "stylegan9"]) == 2
    assert "stylegan9" in capsys.readouterr().err


def test_help_states_the_exit_status(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["weights", "--help"])
    assert ei.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 1 when any present file is empty, unreadable or mismatched, else 0" in text
    assert "missing files alone are not an error" in text

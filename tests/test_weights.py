"""facesynth.weights: the registry, finding files on disk, offline errors, hashes and (file://) downloads."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from facesynth import weights
from facesynth.errors import CheckpointError, WeightsNotFoundError
from facesynth.weights import REGISTRY, WeightSpec

NAMES = ["s3fd", "2dfan4", "fomm-vox", "fomm-vox-adv", "wav2lip", "wav2lip-gan", "stylegan-celebahq",
         "stylegan-ffhq"]


def _weights_env() -> Path:
    return Path(os.environ["FACESYNTH_WEIGHTS"])


def _hub_env() -> Path:
    return Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"


def _put(folder: Path, name: str, data: bytes = b"weights!") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_bytes(data)
    return p


def _file_spec(tmp_path: Path, data: bytes, name="test-w", sha256=None, hub=False, **kw) -> WeightSpec:
    src = tmp_path / "upstream" / "test-weights.bin"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    return WeightSpec(name, "test-weights.bin", (src.as_uri(),), "test licence", "raw bytes", "a test file",
                      direct=True, sha256=sha256, hub=hub, **kw)


# ------------------------------------------------------------------------------------------------ registry

def test_registry_names():
    assert set(NAMES) <= set(REGISTRY)
    for key, spec in REGISTRY.items():
        assert spec.name == key


@pytest.mark.parametrize("name", NAMES)
def test_registry_entries_complete(name):
    spec = REGISTRY[name]
    assert spec.filename and "/" not in spec.filename
    assert any(u.startswith("https://") for u in spec.urls)
    assert spec.licence and spec.format and spec.description
    for digest in (spec.sha256, spec.sha256_prefix):
        assert digest is None or (all(c in "0123456789abcdef" for c in digest) and len(digest) >= 8)
    assert spec.sha256 is None or len(spec.sha256) == 64
    assert spec.reader in ("torch", "tf-pickle")
    assert all(m.startswith("https://") and m not in spec.urls for m in spec.mirrors)


def test_registry_published_digests():
    # the Hugging Face LFS object ids of copies of the official files (sources cited in facesynth/weights.py)
    assert REGISTRY["s3fd"].sha256 == "619a31681264d3f7f7fc7a16a42cbbe8b23f31a256f75a366e5a1bcd59b33543"
    assert REGISTRY["wav2lip"].sha256 == "b78b681b68ad9fe6c6fb1debc6ff43ad05834a8af8a62ffc4167b7b34ef63c37"
    assert REGISTRY["wav2lip-gan"].sha256 == "ca9ab7b7b812c0e80a6e70a5977c545a1e8a365a6c49d5e533023c034d7ac3d8"
    assert REGISTRY["wav2lip-gan"].size == 435_801_865 and REGISTRY["wav2lip"].size == 435_807_851
    assert REGISTRY["wav2lip"].mirrors and REGISTRY["wav2lip-gan"].mirrors   # the SharePoint links were revoked
    for name in ("fomm-vox", "stylegan-celebahq", "stylegan-ffhq"):
        assert REGISTRY[name].sha256 is None and REGISTRY[name].sha256_prefix is None   # none published


def test_registry_known_facts():
    assert REGISTRY["s3fd"].filename == "s3fd-619a316812.pth"
    assert REGISTRY["2dfan4"].filename == "2DFAN4-11f355bf06.pth.tar"
    assert REGISTRY["s3fd"].hub and REGISTRY["2dfan4"].hub
    assert REGISTRY["s3fd"].sha256_prefix == "619a316812"       # torch hub's name carries the hash prefix
    assert REGISTRY["fomm-vox"].filename == "vox-cpk.pth.tar"
    assert REGISTRY["wav2lip-gan"].filename == "wav2lip_gan.pth"
    assert REGISTRY["stylegan-celebahq"].filename == "karras2019stylegan-celebahq-1024x1024.pkl"
    assert "stylegan-celebahq-1024x1024.pkl" in REGISTRY["stylegan-celebahq"].aliases


def test_search_dirs_follow_environment():
    dirs = weights.search_dirs()
    assert dirs[0] == _weights_env()
    assert _hub_env() in dirs
    assert weights.weights_dir() == _weights_env()


# ------------------------------------------------------------------------------------------------ resolve

def test_resolve_in_facesynth_weights():
    p = _put(_weights_env(), "vox-cpk.pth.tar")
    assert weights.resolve("fomm-vox") == p
    assert weights.resolve("vox-cpk.pth.tar") == p              # the official file name works as a name too
    assert weights.find("fomm-vox") == p


def test_resolve_in_torch_hub():
    p = _put(_hub_env(), "s3fd-619a316812.pth")
    assert weights.resolve("s3fd") == p
    assert weights.resolve("S3FD") == p                          # registry keys are case-insensitive


def test_resolve_in_user_cache():
    p = _put(Path(os.environ["XDG_CACHE_HOME"]) / "facesynth", "wav2lip.pth")
    assert weights.resolve("wav2lip") == p


def test_resolve_prefers_weights_folder_over_hub():
    hub = _put(_hub_env(), "2DFAN4-11f355bf06.pth.tar", b"hub")
    local = _put(_weights_env(), "2DFAN4-11f355bf06.pth.tar", b"local")
    assert weights.resolve("2dfan4") == local
    local.unlink()
    assert weights.resolve("2dfan4") == hub


def test_resolve_alias():
    p = _put(_weights_env(), "stylegan-celebahq-1024x1024.pkl")
    assert weights.resolve("stylegan-celebahq-1024x1024.pkl") == p
    assert weights.resolve("stylegan-celebahq") == p
    assert weights.resolve("karras2019stylegan-celebahq-1024x1024.pkl") == p


def test_resolve_existing_path_passes_through(tmp_path):
    p = _put(tmp_path, "my_own.pth")
    assert weights.resolve(p) == p
    assert weights.resolve(str(p)) == p


def test_empty_file_is_not_found():
    _put(_weights_env(), "wav2lip.pth", b"")
    assert weights.find("wav2lip") is None
    with pytest.raises(WeightsNotFoundError):
        weights.resolve("wav2lip")


def test_missing_offline_message_direct_link():
    spec = REGISTRY["s3fd"]
    with pytest.raises(WeightsNotFoundError) as ei:
        weights.resolve("s3fd")                                # FACESYNTH_OFFLINE=1: no download attempted
    msg = str(ei.value)
    assert spec.filename in msg
    assert str(_hub_env()) in msg                              # where to put it: torch's hub cache
    assert spec.urls[0] in msg
    assert spec.licence in msg
    assert not _hub_env().exists() or not any(_hub_env().iterdir())


@pytest.mark.parametrize("name", ["fomm-vox", "wav2lip-gan", "stylegan-ffhq"])
def test_missing_offline_message_manual_download(name):
    spec = REGISTRY[name]
    with pytest.raises(WeightsNotFoundError) as ei:
        weights.resolve(name, download=True)                   # not a direct link: never fetched
    msg = str(ei.value)
    assert spec.filename in msg
    assert f"{_weights_env()}/" in msg
    assert spec.urls[0] in msg
    assert "by hand" in msg


def test_unknown_name_lists_known_names():
    with pytest.raises(WeightsNotFoundError) as ei:
        weights.resolve("stylegan9-mars")
    msg = str(ei.value)
    assert "stylegan9-mars" in msg
    for name in NAMES:
        assert name in msg


# ------------------------------------------------------------------------------------------------ verify

def test_verify_prefix_and_full_digest(tmp_path):
    data = b"some weights bytes" * 100
    digest = hashlib.sha256(data).hexdigest()
    p = _put(tmp_path, "w.bin", data)
    assert weights.sha256sum(p) == digest
    ok_prefix = WeightSpec("t", "w.bin", ("https://example.org/w.bin",), "l", "f", "d", sha256_prefix=digest[:10])
    ok_full = WeightSpec("t", "w.bin", ("https://example.org/w.bin",), "l", "f", "d", sha256=digest)
    weights.verify(p, ok_prefix)
    weights.verify(p, ok_full)
    wrong = "0" * 10 if not digest.startswith("0" * 10) else "f" * 10
    bad = WeightSpec("t", "w.bin", ("https://example.org/w.bin",), "l", "f", "d", sha256_prefix=wrong)
    with pytest.raises(CheckpointError) as ei:
        weights.verify(p, bad)
    assert digest[:16] in str(ei.value) and wrong in str(ei.value)
    unknown = WeightSpec("t", "w.bin", ("https://example.org/w.bin",), "l", "f", "d")
    weights.verify(p, unknown)                                 # no digest known: nothing to check


def test_resolve_verify_hash_against_registry(monkeypatch):
    data = b"\x00fake s3fd"
    _put(_hub_env(), "s3fd-619a316812.pth", data)
    assert weights.resolve("s3fd") == _hub_env() / "s3fd-619a316812.pth"   # found: not hashed by default
    with pytest.raises(CheckpointError, match="619a316812"):
        weights.resolve("s3fd", verify_hash=True)
    with pytest.raises(CheckpointError):
        weights.verify(_hub_env() / "s3fd-619a316812.pth", "s3fd")
    real_prefix = hashlib.sha256(data).hexdigest()[:10]
    spec = REGISTRY["s3fd"]
    monkeypatch.setitem(REGISTRY, "s3fd", WeightSpec(spec.name, spec.filename, spec.urls, spec.licence,
                                                     spec.format, spec.description, sha256_prefix=real_prefix,
                                                     hub=True))
    assert weights.resolve("s3fd", verify_hash=True) == _hub_env() / "s3fd-619a316812.pth"


# ------------------------------------------------------------------------------------------------ download

def test_download_file_url(tmp_path, monkeypatch):
    data = os.urandom(3 << 20)                                 # spans several 1 MiB chunks
    spec = _file_spec(tmp_path, data, sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    path = weights.resolve("test-w", download=True)
    assert path == _weights_env() / "test-weights.bin"
    assert path.read_bytes() == data
    assert sorted(p.name for p in _weights_env().iterdir()) == ["test-weights.bin"]   # no .part left
    # found on disk the second time, even offline
    assert weights.resolve("test-w") == path


def test_download_hub_file_goes_to_torch_hub(tmp_path, monkeypatch):
    data = b"hub weights" * 1000
    digest = hashlib.sha256(data).hexdigest()
    spec = _file_spec(tmp_path, data, name="test-hub", sha256_prefix=digest[:10], hub=True)
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    path = weights.resolve("test-hub", download=True)
    assert path == _hub_env() / "test-weights.bin"
    assert path.read_bytes() == data
    assert list(_weights_env().iterdir()) == []


def test_download_wrong_hash_leaves_nothing(tmp_path, monkeypatch):
    data = b"tampered"
    spec = _file_spec(tmp_path, data, sha256="ab" * 32)
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    with pytest.raises(CheckpointError):
        weights.resolve("test-w", download=True)
    assert list(_weights_env().iterdir()) == []


def test_offline_env_blocks_download(tmp_path, monkeypatch):
    data = b"would download"
    spec = _file_spec(tmp_path, data, sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    with pytest.raises(WeightsNotFoundError) as ei:
        weights.resolve("test-w")                              # download=None and FACESYNTH_OFFLINE=1
    assert spec.urls[0] in str(ei.value)
    assert list(_weights_env().iterdir()) == []
    monkeypatch.setenv("FACESYNTH_OFFLINE", "0")
    assert weights.resolve("test-w").read_bytes() == data      # online: the direct link is fetched


def test_download_failure_is_weights_not_found(tmp_path, monkeypatch):
    spec = WeightSpec("test-gone", "gone.bin", ((tmp_path / "does-not-exist.bin").as_uri(),), "l", "f", "d")
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    with pytest.raises(WeightsNotFoundError, match="download failed"):
        weights.resolve("test-gone", download=True)
    assert list(_weights_env().iterdir()) == []


def test_copy_into_weights(tmp_path):
    src = _put(tmp_path, "downloaded (1).pth", b"by hand")
    dest = weights.copy_into_weights(src, "wav2lip-gan")
    assert dest == _weights_env() / "wav2lip_gan.pth"
    assert weights.resolve("wav2lip-gan").read_bytes() == b"by hand"


def test_weights_readme_lists_every_registry_file():
    from pathlib import Path

    from facesynth.weights import REGISTRY

    text = (Path(__file__).resolve().parents[1] / "weights" / "README.md").read_text()
    for spec in REGISTRY.values():
        assert f"`{spec.name}`" in text and f"`{spec.filename}`" in text

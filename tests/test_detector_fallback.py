"""detector="auto" falls back to dlib, with a warning naming the file, when face-alignment's weights are on disk
but empty or unreadable; detector="fan" then fails with a clear FacesynthError instead."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("face_alignment")
pytest.importorskip("dlib")

from facesynth.errors import CheckpointError, WeightsNotFoundError  # noqa: E402
from facesynth.extract.backends import create_backend  # noqa: E402
from facesynth.extract.backends.dlib_backend import DlibBackend  # noqa: E402

S3FD_FILE = "s3fd-619a316812.pth"
FAN_FILE = "2DFAN4-11f355bf06.pth.tar"


@pytest.fixture(autouse=True)
def _light_dlib(monkeypatch):
    """dlib's backend without loading its 100 MB landmark model: these tests are about the choice, not dlib."""
    monkeypatch.setattr(DlibBackend, "__init__", lambda self, device="auto", **options: None)


def _hub() -> Path:
    folder = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _truncated_torch_file(path: Path) -> Path:
    torch.save({"conv1_1.weight": torch.zeros(64, 3, 3, 3)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_empty_s3fd_file_falls_back_to_dlib_with_a_warning():
    empty = _hub() / S3FD_FILE
    empty.write_bytes(b"")
    _truncated_torch_file(_hub() / FAN_FILE)
    with pytest.warns(UserWarning) as record:
        backend = create_backend("auto", device="cpu")
    assert backend.name == "dlib"
    assert len(record) == 1
    message = str(record[0].message)
    assert f"{empty} is empty (0 bytes)" in message
    assert "facesynth weights --verify" in message and "download them again" in message
    assert record[0].filename == __file__                     # points at the caller, not at facesynth


def test_truncated_fan_files_fall_back_to_dlib_with_a_warning():
    s3fd_path = _truncated_torch_file(_hub() / S3FD_FILE)
    _truncated_torch_file(_hub() / FAN_FILE)
    with pytest.warns(UserWarning, match="not a readable torch checkpoint") as record:
        backend = create_backend("auto", device="cpu")
    assert backend.name == "dlib"
    message = str(record[0].message)
    assert str(s3fd_path) in message and "Using dlib instead" in message


def test_explicit_fan_with_truncated_file_raises_checkpoint_error():
    s3fd_path = _truncated_torch_file(_hub() / S3FD_FILE)
    _truncated_torch_file(_hub() / FAN_FILE)
    with pytest.raises(CheckpointError, match=S3FD_FILE) as ei:
        create_backend("fan", device="cpu")
    assert str(s3fd_path) in str(ei.value) and "download it again" in str(ei.value)


def test_explicit_fan_with_empty_file_says_it_is_empty():
    empty = _hub() / S3FD_FILE
    empty.write_bytes(b"")
    with pytest.raises(WeightsNotFoundError) as ei:
        create_backend("fan", device="cpu")
    assert f"{empty} is empty (0 bytes" in str(ei.value)


def test_missing_fan_files_choose_dlib_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert create_backend("auto", device="cpu").name == "dlib"

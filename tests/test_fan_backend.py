"""FanBackend on CPU with random-weight stand-ins for the official S3FD and 2DFAN4 files (nothing downloaded).

The stand-ins are face-alignment's own networks, so key names and shapes are the official ones. S3FD's
prediction heads are fixed so detection is predictable: every box regression is zero (boxes are exactly the
anchor boxes) and only the coarsest head (stride 128, 512-px anchors) is confident, with face probability
softmax([0, FACE_LOGIT]). The rest of both networks stays random.
"""
from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from face_alignment.detection.sfd.net_s3fd import s3fd
from face_alignment.models import FAN

from facesynth.errors import CheckpointError, WeightsNotFoundError
from facesynth.extract.backends import DetectedFace, create_backend
from facesynth.extract.backends.fan_backend import FanBackend, heatmaps_to_points
from facesynth.media import iter_frames, read_image
from facesynth.samples import Samples

S3FD_FILE = "s3fd-619a316812.pth"
FAN_FILE = "2DFAN4-11f355bf06.pth.tar"
FACE_LOGIT = 5.0
FACE_SCORE = 1.0 / (1.0 + math.exp(-FACE_LOGIT))   # softmax over (background 0, face FACE_LOGIT)
ANCHOR = 512.0          # the stride-128 head's anchor side
STRIDE = 128.0


def _fake_s3fd() -> dict[str, torch.Tensor]:
    net = s3fd()
    with torch.no_grad():
        for name, layer in net.named_children():
            if name.endswith("_loc"):
                layer.weight.zero_()
                layer.bias.zero_()
            elif name.endswith("_conf"):
                layer.weight.zero_()
                layer.bias.zero_()
                if name == "conv7_2_mbox_conf":
                    layer.bias[1] = FACE_LOGIT      # face everywhere on the coarsest grid
                else:
                    layer.bias[0] = 10.0            # background: face probability ≈ 5e-5, below any threshold
    return net.state_dict()


def _fake_fan() -> dict[str, torch.Tensor]:
    net = FAN(4)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):   # non-default buffers, so loading them is visible
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return net.state_dict()


@pytest.fixture(scope="module")
def fake_weights(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A TORCH_HOME holding both stand-in files, and their state dicts."""
    torch.manual_seed(0)
    home = tmp_path_factory.mktemp("torch_home")
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    states = {"s3fd": _fake_s3fd(), "fan": _fake_fan()}
    torch.save(states["s3fd"], ckpt / S3FD_FILE)
    torch.save(states["fan"], ckpt / FAN_FILE)
    return {"home": home, "s3fd_path": ckpt / S3FD_FILE, "fan_path": ckpt / FAN_FILE, **states}




def _home_with(tmp_path: Path, files: dict[str, Path | bytes]) -> Path:
    """A fresh TORCH_HOME whose checkpoints are links to existing files or the given bytes."""
    ckpt = tmp_path / "home" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    for name, src in files.items():
        if isinstance(src, bytes):
            (ckpt / name).write_bytes(src)
        else:
            os.symlink(src, ckpt / name)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def backend(fake_weights: dict, tmp_path_factory: pytest.TempPathFactory) -> FanBackend:
    """One backend for the module (loading takes a second). Module fixtures start before conftest's
    per-test isolation, so this one isolates itself: weights only from the stand-ins' TORCH_HOME."""
    scratch = tmp_path_factory.mktemp("scratch")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACESYNTH_OFFLINE", "1")
        mp.setenv("FACESYNTH_WEIGHTS", str(scratch))
        mp.setenv("XDG_CACHE_HOME", str(scratch))
        mp.setenv("TORCH_HOME", str(fake_weights["home"]))
        # without the mirrored second pass, to halve the CPU time; the parity test switches it on
        return FanBackend(device="cpu", batch_size=4, flip_input=False)


@pytest.fixture(scope="module")
def frames(samples: Samples) -> dict[str, np.ndarray]:
    """Two 144×176 talking-head frames and the astronaut's head (256×256 from the 512×512 portrait)."""
    video = [f for _, f in itertools.islice(iter_frames(samples.talking_head), 0, 31, 30)]
    return {"head0": video[0], "head1": video[1], "astronaut": read_image(samples.astronaut)[:256, 128:384]}


def test_is_available_needs_face_alignment_and_both_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          fake_weights: dict) -> None:
    assert not FanBackend.is_available()        # conftest's isolated, empty folders
    with pytest.raises(WeightsNotFoundError, match=S3FD_FILE):
        FanBackend(device="cpu")

    monkeypatch.setenv("TORCH_HOME", str(_home_with(tmp_path, {S3FD_FILE: fake_weights["s3fd_path"]})))
    assert not FanBackend.is_available()

    monkeypatch.setenv("TORCH_HOME", str(fake_weights["home"]))
    assert FanBackend.is_available()


def test_loads_exactly_the_files_tensors(backend: FanBackend, fake_weights: dict) -> None:
    for net, saved in ((backend.detector, fake_weights["s3fd"]), (backend.fan, fake_weights["fan"])):
        loaded = net.state_dict()
        assert loaded.keys() == saved.keys()
        assert all(torch.equal(loaded[k].cpu(), saved[k]) for k in saved)
    # a buffer a fresh FAN would initialise to 1: equal only because it came from the file
    assert not torch.allclose(backend.fan.bn1.running_var, torch.ones_like(backend.fan.bn1.running_var))
    assert not backend.fan.training and not backend.detector.training


def _check_faces(faces: list[DetectedFace]) -> None:
    assert faces, "the confident stride-128 head must yield boxes"
    for face in faces:
        assert face.box.dtype == np.float32 and face.box.shape == (4,)
        assert face.landmarks.dtype == np.float32 and face.landmarks.shape == (68, 2)
        assert np.isfinite(face.landmarks).all()
        assert face.score == pytest.approx(FACE_SCORE, abs=1e-5)
        x0, y0, x1, y1 = face.box.tolist()
        # zero regression: the box is an anchor, 512 px square, centred on the stride-128 grid
        assert (x1 - x0, y1 - y0) == (ANCHOR, ANCHOR)
        assert ((x0 + x1) / 2 - STRIDE / 2) % STRIDE == 0 and ((y0 + y1) / 2 - STRIDE / 2) % STRIDE == 0
        # points come from the 2DFAN4 crop, which spans 200·scale px around the (raised) box centre
        half = 100.0 * (x1 - x0 + y1 - y0) / 195.0
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - 0.12 * (y1 - y0)
        assert (np.abs(face.landmarks - [cx, cy]) <= half + 1e-3).all()


@pytest.mark.slow
def test_detect_mixed_sizes_end_to_end(backend: FanBackend, frames: dict[str, np.ndarray],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import face_alignment.detection.sfd.detect as sfd_detect

    s3fd_inputs: list[tuple[int, ...]] = []
    fan_inputs: list[tuple[int, ...]] = []
    batch_detect, fan = sfd_detect.batch_detect, backend.fan

    def spy_detect(net: torch.nn.Module, images: torch.Tensor, device: str) -> np.ndarray:
        s3fd_inputs.append(tuple(images.shape))
        return batch_detect(net, images, device)

    def spy_fan(crops: torch.Tensor) -> list[torch.Tensor]:
        fan_inputs.append(tuple(crops.shape))
        return fan(crops)

    monkeypatch.setattr(sfd_detect, "batch_detect", spy_detect)
    monkeypatch.setattr(backend, "fan", spy_fan)
    batch = [frames["head0"], frames["astronaut"], frames["head1"]]
    results = backend.detect(batch)

    # equal-size frames share an S3FD batch; the 6 faces of all frames share 2DFAN4 batches of batch_size 4
    assert s3fd_inputs == [(2, 3, 144, 176), (1, 3, 256, 256)]
    assert fan_inputs == [(4, 3, 256, 256), (2, 3, 256, 256)]
    assert len(results) == 3
    for faces in results:
        _check_faces(faces)
    # of the overlapping 512-px anchors, NMS at IoU 0.3 keeps two on these small grids
    assert [len(r) for r in results] == [2, 2, 2]
    # the two equal-size frames went through S3FD together; alone, a frame gives the same boxes
    alone = backend.detect_boxes([frames["head1"]])[0]
    np.testing.assert_array_equal(alone[:, :4], np.stack([f.box for f in results[2]]))


def test_min_score_filters_boxes(backend: FanBackend, frames: dict[str, np.ndarray],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "min_score", FACE_SCORE + 1e-3)   # just above every box's score
    assert [len(d) for d in backend.detect_boxes([frames["head0"], frames["head1"]])] == [0, 0]
    assert backend.detect([frames["head0"], frames["astronaut"]]) == [[], []]


@pytest.mark.slow
def test_heatmap_decoding_matches_face_alignment() -> None:
    from face_alignment.utils import get_preds_fromhm

    # one peak with a higher right neighbour: a quarter cell to the right, cell centre otherwise
    hm = torch.zeros(1, 68, 64, 64)
    hm[0, :, 20, 30] = 1.0
    hm[0, :, 20, 31] = 0.5
    pts = heatmaps_to_points(hm, torch.tensor([[100.0, 50.0]]), torch.tensor([1.0]))
    assert pts.shape == (1, 68, 2)
    np.testing.assert_allclose(pts[0, 0].numpy(), [30.75 * 200 / 64, 20.5 * 200 / 64 + 50 - 100])

    # random heatmaps: face-alignment truncates to whole pixels (towards zero), we keep the fraction;
    # the third crop reaches above the frame, so negative coordinates are covered too
    gen = torch.Generator().manual_seed(1)
    hm = torch.rand(3, 68, 64, 64, generator=gen)
    centers = torch.tensor([[300.0, 240.0], [150.5, 400.25], [900.0, 120.0]], dtype=torch.float64)
    scales = torch.tensor([0.8, 1.7, 3.1], dtype=torch.float64)
    ours = heatmaps_to_points(hm, centers, scales).numpy()
    assert (ours < 0).any() and (ours > 0).any()
    for i in range(3):
        _, ref, _ = get_preds_fromhm(hm[i:i + 1].numpy(), centers[i].numpy(), float(scales[i]))
        assert (np.abs(ours[i] - ref[0]) < 1 + 1e-6).all()
        assert (np.abs(ref[0]) <= np.abs(ours[i]) + 1e-6).all()


@pytest.mark.slow
def test_landmarks_match_face_alignment(backend: FanBackend, frames: dict[str, np.ndarray], fake_weights: dict,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from face_alignment import FaceAlignment, LandmarksType

    monkeypatch.setenv("TORCH_HOME", str(fake_weights["home"]))   # face-alignment reads FAN from its hub
    monkeypatch.setattr(backend, "flip_input", True)        # face-alignment's default, averaged mirrored pass
    reference = FaceAlignment(LandmarksType.TWO_D, device="cpu", face_detector="sfd", compile=False,
                              face_detector_kwargs={"path_to_detector": str(fake_weights["s3fd_path"])})
    images = [frames["head0"], frames["head1"]]
    boxes = [np.array([[40.0, 20.0, 120.0, 110.0]]), np.array([[30.0, 10.0, 130.0, 125.0]])]

    ours = backend.landmarks(images, boxes)     # both frames' faces in one 2DFAN4 batch

    assert [p.shape for p in ours] == [(1, 68, 2), (1, 68, 2)]
    assert all(p.dtype == np.float32 for p in ours)
    for image, frame_boxes, points in zip(images, boxes, ours):
        ref = np.stack(reference.get_landmarks_from_image(image, detected_faces=list(frame_boxes)))
        diff = points - ref
        assert np.abs(diff).max() < 1 + 1e-4       # face-alignment truncates to whole pixels
        assert np.abs(diff).mean() < 0.75


@pytest.mark.parametrize("broken", ["s3fd-bytes", "fan-bytes", "fan-wrong-keys"])
def test_corrupt_weights_raise_checkpoint_error(broken: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                fake_weights: dict) -> None:
    files: dict[str, Path | bytes] = {S3FD_FILE: fake_weights["s3fd_path"], FAN_FILE: fake_weights["fan_path"]}
    if broken == "s3fd-bytes":
        files[S3FD_FILE] = np.random.default_rng(0).bytes(4096)
    elif broken == "fan-bytes":
        files[FAN_FILE] = np.random.default_rng(1).bytes(4096)
    else:
        wrong = tmp_path / "wrong.pth"
        torch.save({"conv1.weight": torch.zeros(3)}, wrong)
        files[FAN_FILE] = wrong
    monkeypatch.setenv("TORCH_HOME", str(_home_with(tmp_path, files)))

    with pytest.raises(CheckpointError) as info:
        FanBackend(device="cpu")
    broken_file = S3FD_FILE if broken.startswith("s3fd") else FAN_FILE
    assert broken_file in str(info.value)
    if broken == "fan-wrong-keys":
        assert "2DFAN4" in str(info.value)


@pytest.mark.slow
def test_auto_prefers_fan_when_its_weights_are_present(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       fake_weights: dict) -> None:
    monkeypatch.setenv("TORCH_HOME", str(fake_weights["home"]))
    chosen = create_backend("auto", device="cpu")
    assert isinstance(chosen, FanBackend) and chosen.name == "fan"
    assert chosen.batch_size == 8 and chosen.device == torch.device("cpu")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    pytest.importorskip("dlib")
    assert create_backend("auto", device="cpu").name == "dlib"

"""The FOMM reconstruction metric (official reconstruction.py): first frame as source, each frame driven by its own
key points, mean L1 over all frames and pixels."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facesynth.reenact import load_fomm
from facesynth.reenact.evaluate import evaluate_reconstruction

DATA = Path(__file__).parent / "data" / "fomm"


@pytest.fixture(scope="module")
def model():
    return load_fomm(DATA / "small-cpk.pt", config=DATA / "small.yaml", device="cpu")


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    frames = torch.load(DATA / "animate.pt", weights_only=True)["driving"]      # uint8 (6, 128, 128, 3)
    return frames.float().div(255).permute(0, 3, 1, 2).contiguous()


def per_frame_l1(model, clip: torch.Tensor) -> float:
    """The official loop: one frame at a time, source = frame 0, absolute key points."""
    source = clip[:1]
    kp_source = model.keypoints(source)
    losses = []
    for t in range(clip.shape[0]):
        driving = clip[t:t + 1]
        prediction = model.generate(source, kp_source, model.keypoints(driving))["prediction"]
        losses.append((prediction - driving).abs().mean().item())
    return sum(losses) / len(losses)


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_reconstruction_l1_equals_the_per_frame_loop(model, clip, batch_size):
    result = evaluate_reconstruction(model, clip, batch_size=batch_size)
    assert result["frames"] == 6
    assert result["l1"] == pytest.approx(per_frame_l1(model, clip), abs=1e-6)
    assert 0.01 < result["l1"] < 0.5


@pytest.mark.slow
def test_reconstruction_of_a_video_file_resizes_its_frames(model, samples):
    result = evaluate_reconstruction(model, samples.talking_head, size=128, batch_size=32)
    assert result["frames"] == 120
    assert 0.01 < result["l1"] < 0.5


def test_reconstruction_rejects_a_tensor_that_is_not_a_clip(model):
    with pytest.raises(ValueError, match="T, C, H, W"):
        evaluate_reconstruction(model, torch.rand(3, 128, 128))

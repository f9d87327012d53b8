"""The FOMM paper's reconstruction metric (its Table 2 reports L1 = 0.0431 on VoxCeleb).

As the official ``reconstruction.py`` (AliaksandrSiarohin/first-order-model) computes it: the source is the
video's first frame, every frame is driven by its own key points (absolute motion, no normalisation), and the
score is the mean absolute difference between the prediction and the frame, over all frames and pixels, with
images in [0, 1]. The official loop runs one frame at a time; here the frames stream through in batches, which
changes the result only by float rounding between batch sizes.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from facesynth.reenact.checkpoint import FOMM

__all__ = ["evaluate_reconstruction", "iter_video_frames", "resize_frames", "DEFAULT_FRAME_SIZE"]

DEFAULT_FRAME_SIZE = 256    # dataset_params.frame_shape of the official vox-256.yaml


def evaluate_reconstruction(model: FOMM, video: str | os.PathLike | torch.Tensor, size: int | None = None,
                            batch_size: int = 16) -> dict:
    """Reconstruction L1 of ``video`` by ``model``: each frame regenerated from the first frame.

    Args:
        model: a loaded FOMM (``load_fomm``); its networks are used in eval mode as they are.
        video: a video file (frames resized to ``size`` x ``size``, bilinear with antialiasing) or a float
            tensor (T, C, H, W) in [0, 1] (used as it is; ``size`` resizes it when given).
        size: the side of the frames for a file; None: 256, the official vox frame size.
        batch_size: frames per generator call; memory does not grow with the video's length.

    Returns:
        {"l1": mean |prediction - frame| over all frames, channels and pixels, "frames": T}.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(video, torch.Tensor):
        if video.dim() != 4 or video.shape[0] == 0:
            raise ValueError(f"video must be a float tensor (T, C, H, W) in [0, 1], got {tuple(video.shape)}")
        batches: Iterator[torch.Tensor] = (resize_frames(video[i:i + batch_size], size)
                                           for i in range(0, video.shape[0], batch_size))
    else:
        batches = iter_video_frames(video, size or DEFAULT_FRAME_SIZE, batch_size)
    total, frames = 0.0, 0
    source = kp_source = None
    for batch in batches:
        batch = batch.to(model.device, torch.float32)
        if source is None:
            source = batch[:1]
            kp_source = model.keypoints(source)
        prediction = model.generate(source, kp_source, model.keypoints(batch))["prediction"]
        # per-frame means summed in float64, then averaged: the official mean of per-frame means
        total += (prediction - batch).abs().mean(dim=(1, 2, 3)).double().sum().item()
        frames += batch.shape[0]
    if frames == 0:
        raise ValueError(f"{video}: no frames to evaluate")
    return {"l1": total / frames, "frames": frames}


def iter_video_frames(path: str | os.PathLike, size: int, batch_size: int) -> Iterator[torch.Tensor]:
    """A video file's frames as float batches (n, 3, size, size) in [0, 1], decoded lazily."""
    from facesynth.media import iter_frames, to_tensor

    pending: list[np.ndarray] = []
    for _, frame in iter_frames(path):
        pending.append(frame)
        if len(pending) == batch_size:
            yield resize_frames(to_tensor(pending), size)
            pending = []
    if pending:
        yield resize_frames(to_tensor(pending), size)


def resize_frames(frames: torch.Tensor, size: int | None) -> torch.Tensor:
    """Frames (T, C, H, W) in [0, 1] resized to size x size (bilinear, antialiased); None keeps them."""
    if size is None or tuple(frames.shape[-2:]) == (size, size):
        return frames
    return F.interpolate(frames.float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True).clamp_(0, 1)

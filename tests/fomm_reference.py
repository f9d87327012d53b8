"""Where the FOMM reference data lives and how its frames are fed, shared by the reenactment tests."""
from __future__ import annotations

from pathlib import Path

import torch

DATA = Path(__file__).parent / "data" / "fomm"


def as_frames(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) → float (N, 3, H, W) in [0, 1], as the reference run fed the official code."""
    return images.float().div(255).permute(0, 3, 1, 2).contiguous()

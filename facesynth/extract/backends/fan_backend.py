"""face-alignment backend: the S3FD face detector + the 2DFAN4 68-point landmark network.

The networks are face-alignment's own classes with the official weights, but the checkpoints are read by
``facesynth.safe_load`` from wherever ``facesynth.weights`` finds them (the project's ``weights/`` folder or
torch's hub cache), so face-alignment's own loaders (which download on a miss and raise raw torch errors)
never run. Detection follows face-alignment's conventions exactly: RGB 0-255 float frames go into its
``batch_detect`` (which turns them into mean-subtracted BGR itself), then the same NMS (IoU 0.3), box →
crop centre/scale and flipped-input averaging as ``FaceAlignment.get_landmarks_from_image``. Two things
differ: the landmark network runs in batches over the faces of all frames in a call rather than frame by
frame, and heatmaps are decoded on the device in torch (no numba compile on first use), keeping sub-pixel
coordinates where face-alignment truncates them to whole pixels, so points differ from its by under a pixel.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from facesynth.errors import CheckpointError
from facesynth.extract.backends import DetectedFace, FaceBackend
from facesynth.gpu import pick_device
from facesynth.safe_load import load_state_dict
from facesynth.weights import find, resolve

NMS_IOU = 0.3           # face-alignment's SFDDetector suppression threshold


class FanBackend(FaceBackend):
    """S3FD boxes + 2DFAN4 landmarks; the most accurate backend, best on a GPU.

    ``batch_size`` frames go through S3FD at once (frames of equal size only; mixed sizes are grouped by
    size) and ``batch_size`` face crops through 2DFAN4 at once. ``min_score`` is the S3FD confidence
    (0-1) a box needs. ``flip_input`` also runs 2DFAN4 on the mirrored crop and averages the heatmaps, as
    face-alignment does: steadier points at twice the landmark cost.

    Missing weights are fetched by ``facesynth.weights.resolve`` (hash-checked official files into torch's
    hub cache) unless ``FACESYNTH_OFFLINE=1``, in which case WeightsNotFoundError says where to put them.
    """

    name = "fan"

    def __init__(self, device: str = "auto", batch_size: int = 8, min_score: float = 0.5,
                 flip_input: bool = True) -> None:
        from face_alignment.detection.sfd.net_s3fd import s3fd
        from face_alignment.models import FAN

        self.device = pick_device(device)
        self.batch_size = max(1, int(batch_size))
        self.min_score = float(min_score)
        self.flip_input = flip_input
        s3fd_path, fan_path = resolve("s3fd"), resolve("2dfan4")   # both located before either loads
        self.detector = _load_into(s3fd(), s3fd_path, "S3FD").to(self.device).eval()
        self.fan = _load_into(FAN(4), fan_path, "2DFAN4").to(self.device).eval()

    @classmethod
    def is_available(cls) -> bool:
        try:
            import face_alignment  # noqa: F401
        except ImportError:
            return False
        return find("s3fd") is not None and find("2dfan4") is not None

    def detect(self, frames: list[np.ndarray]) -> list[list[DetectedFace]]:
        """``frames``: uint8 H×W×3 RGB → per frame, faces sorted by S3FD score (highest first)."""
        dets = self.detect_boxes(frames)
        points = self.landmarks(frames, [d[:, :4] for d in dets])
        return [[DetectedFace(box=d[:4].astype(np.float32), score=float(d[4]), landmarks=p)
                 for d, p in zip(frame_dets, frame_points)]
                for frame_dets, frame_points in zip(dets, points)]

    @torch.inference_mode()
    def detect_boxes(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """S3FD on uint8 H×W×3 RGB frames → per frame a float32 [K, 5] array (x0, y0, x1, y1, score)."""
        from face_alignment.detection.sfd.detect import batch_detect

        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, frame in enumerate(frames):
            by_size.setdefault(frame.shape, []).append(i)
        results: list[np.ndarray] = [np.zeros((0, 5), np.float32)] * len(frames)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                # uint8 crosses to the device (4× less traffic than float); batch_detect wants RGB 0-255
                # float [B, 3, H, W], exactly what face-alignment's detect_from_image hands it
                batch = torch.from_numpy(np.stack([frames[i] for i in chunk])).to(self.device)
                raw = batch_detect(self.detector, _nchw(batch), device=str(self.device))
                for i, candidates in zip(chunk, raw):
                    results[i] = self._suppress(candidates)
        return results

    def _suppress(self, candidates: np.ndarray) -> np.ndarray:
        """Candidates [N, 5] (any N, also an empty row) → kept boxes [K, 5], best first."""
        from face_alignment.detection.sfd.bbox import nms

        dets = np.asarray(candidates, dtype=np.float32).reshape(-1, 5)
        # thresholding before NMS gives the same boxes as face-alignment's NMS-then-threshold (a box can only
        # suppress lower-scored ones) while NMS then sees a handful of boxes instead of thousands
        dets = dets[dets[:, 4] >= self.min_score]
        if len(dets) == 0:
            return dets
        return dets[np.asarray(nms(dets, NMS_IOU), dtype=np.int64)]

    @torch.inference_mode()
    def landmarks(self, frames: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        """2DFAN4 landmarks for given boxes: ``boxes[i]`` is [K_i, 4] (x0, y0, x1, y1) in ``frames[i]``.

        Returns per frame a float32 [K_i, 68, 2] array of (x, y) frame pixels, iBUG 300-W order.
        """
        from face_alignment.utils import CENTER_Y_OFFSET, REFERENCE_SCALE, crop, flip

        boxes = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in boxes]
        all_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        if len(all_boxes) == 0:
            return [np.zeros((0, 68, 2), np.float32) for _ in boxes]
        # face-alignment's box → crop mapping: centre a little above the box centre, size from w + h
        x0, y0, x1, y1 = all_boxes.T
        centers = np.stack([(x0 + x1) / 2, (y0 + y1) / 2 - (y1 - y0) * CENTER_Y_OFFSET], axis=1)
        scales = (x1 - x0 + y1 - y0) / REFERENCE_SCALE
        owners = np.repeat(np.arange(len(boxes)), [len(b) for b in boxes])
        crops = np.stack([crop(frames[i], c, s) for i, c, s in zip(owners, centers, scales)])  # [N, 256, 256, 3]

        heatmaps = []
        for start in range(0, len(crops), self.batch_size):
            x = _nchw(torch.from_numpy(crops[start:start + self.batch_size]).to(self.device)) / 255.0
            hm = self.fan(x)[-1]            # the last hourglass stack is the refined prediction
            if self.flip_input:
                hm = (hm + flip(self.fan(flip(x))[-1], is_label=True)) / 2
            heatmaps.append(hm)
        points = heatmaps_to_points(torch.cat(heatmaps), torch.from_numpy(centers), torch.from_numpy(scales))
        points = points.numpy().astype(np.float32)
        return np.split(points, np.cumsum([len(b) for b in boxes])[:-1])


def heatmaps_to_points(heatmaps: torch.Tensor, centers: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Decode 2DFAN4 heatmaps to frame pixels, as face-alignment's ``get_preds_fromhm`` but vectorised.

    ``heatmaps`` [N, 68, 64, 64]; ``centers`` [N, 2] and ``scales`` [N] describe each crop (the crop spans
    200·scale frame pixels around its centre, face-alignment's SCALE_FACTOR). Each point is its heatmap's
    peak cell, moved a quarter cell towards the higher neighbour on each axis unless the peak is on the
    heatmap's edge → float64 [N, 68, 2] (x, y) on the CPU (MPS has no float64).
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    peak = flat.argmax(dim=-1)
    px, py = peak % w, peak // w
    inside = (px > 0) & (px < w - 1) & (py > 0) & (py < h - 1)

    def at(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return flat.gather(-1, (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).unsqueeze(-1)).squeeze(-1)

    dx = torch.sign(at(px + 1, py) - at(px - 1, py)) * inside
    dy = torch.sign(at(px, py + 1) - at(px, py - 1)) * inside
    # +0.5: cell centres (face-alignment's 1-based index minus 0.5)
    cells = torch.stack([px + 0.5 + 0.25 * dx, py + 0.5 + 0.25 * dy], dim=-1).cpu().double()
    span = (200.0 * scales.cpu().double()).view(n, 1, 1)
    return cells * span / w + centers.cpu().double().view(n, 1, 2) - span / 2


def _nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] → float [B, 3, H, W].

    The permuted view keeps channels-last strides on purpose: both networks ran about 10% faster on CPU
    that way than after a copy to contiguous NCHW.
    """
    return images.permute(0, 3, 1, 2).float()


def _load_into(module: nn.Module, path: Path, what: str) -> nn.Module:
    """Load a state dict through safe_load into ``module``; a mismatched file is a CheckpointError."""
    state = load_state_dict(path)
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        reason = lines[1] if len(lines) > 1 else lines[0]   # line 0 is torch's generic "Error(s) in loading"
        raise CheckpointError(f"{path}: does not fit face-alignment's {what} network ({reason[:200]}); is it the "
                              f"official file? Delete it and download it again") from None
    return module

"""Training faces of one identity: the active faces of a FaceSet at the network's resolution.

Crops are read lazily and kept in a bounded LRU cache, so memory does not grow with the size of the face
set. Each sample carries its colour, its stored mask (the loss is restricted to the face) and an
eyes-and-mouth mask drawn from the crop landmarks (for the optional priority loss).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import torch

from facesynth.errors import ConfigError, NoFaceError
from facesynth.extract.faceset import Face, FaceSet

__all__ = ["FaceData"]


class FaceData:
    def __init__(self, root: str | os.PathLike, resolution: int, mask_type: str = "extended",
                 cache_size: int = 4096):
        self.root = Path(root)
        self.resolution = resolution
        self.mask_type = mask_type
        self.cache_size = cache_size
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self.reload()

    def reload(self) -> None:
        """Re-read the face set (after pruning); cached pixels of faces still active are kept."""
        self.faceset = FaceSet.open(self.root)
        self.faces: list[Face] = self.faceset.active()
        if not self.faces:
            raise NoFaceError(f"{self.root}: every face is excluded; include some faces again before training")
        if self.mask_type and self.mask_type not in self.faces[0].mask_files:
            raise ConfigError(f"{self.root}: faces have no {self.mask_type!r} mask (they have "
                              f"{sorted(self.faces[0].mask_files)}); set mask_type accordingly")
        active = {f.id for f in self.faces}
        for fid in [k for k in self._cache if k not in active]:
            del self._cache[fid]

    def __len__(self) -> int:
        return len(self.faces)

    @property
    def ids(self) -> list[int]:
        return [f.id for f in self.faces]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(colour uint8 R×R×3, face mask uint8 R×R, eyes-and-mouth mask uint8 R×R) of ``self.faces[index]``."""
        face = self.faces[index]
        hit = self._cache.get(face.id)
        if hit is not None:
            self._cache.move_to_end(face.id)
            return hit
        r = self.resolution
        img = face.image
        src = img.shape[0]
        interp = cv2.INTER_AREA if src > r else cv2.INTER_CUBIC
        img = cv2.resize(img, (r, r), interpolation=interp)
        if self.mask_type:
            mask = cv2.resize(face.mask(self.mask_type), (r, r), interpolation=cv2.INTER_LINEAR)
        else:
            mask = np.full((r, r), 255, np.uint8)
        prio = _eyes_mouth(face.landmarks * (r / src), r)
        item = (img, mask, prio)
        self._cache[face.id] = item
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return item

    def batch(self, n: int, generator: torch.Generator) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` random faces: ids, colour ``[n,3,R,R]``, face mask ``[n,1,R,R]``, priority ``[n,1,R,R]`` in [0,1]."""
        idx = torch.randint(len(self.faces), (n,), generator=generator).tolist()
        items = [self.load(i) for i in idx]
        img = torch.from_numpy(np.stack([it[0] for it in items])).permute(0, 3, 1, 2).float().div_(255)
        mask = torch.from_numpy(np.stack([it[1] for it in items]))[:, None].float().div_(255)
        prio = torch.from_numpy(np.stack([it[2] for it in items]))[:, None].float().div_(255)
        return [self.faces[i].id for i in idx], img, mask, prio


def _eyes_mouth(landmarks: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    for part in (range(36, 42), range(42, 48), range(48, 60)):
        hull = cv2.convexHull(np.round(landmarks[list(part)]).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255)
    k = max(3, size // 24) | 1          # grow a little: brows-to-lids and lip edges matter too
    return cv2.dilate(mask, np.ones((k, k), np.uint8))

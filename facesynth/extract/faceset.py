"""A face set on disk: aligned crops, their masks, and one metadata file.

Layout of a face-set folder::

    faceset.json            metadata of every face (the commit point: written last, atomically)
    images/000000.png       aligned crop, RGB
    masks/000000_components.png, masks/000000_extended.png   uint8 masks, 0/255

Per face the metadata holds the crop landmarks, the 2×3 matrix from source frame to crop, the source
landmarks and box, the source file and frame index, the scores and the ``excluded`` flag (pruned faces
stay on disk; training skips them).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from facesynth.errors import MediaError
from facesynth.fileio import atomic_write
from facesynth.media import read_image

__all__ = ["Face", "FaceSet", "META_FILE", "FORMAT", "VERSION"]

META_FILE = "faceset.json"
FORMAT = "facesynth-faceset"
VERSION = 1


@dataclass
class Face:
    """One aligned face. Pixels are loaded from disk when first asked for."""
    id: int
    root: Path
    file: str                   # crop image path, relative to the face-set folder
    landmarks: np.ndarray       # [68,2] float32, crop pixels
    matrix: np.ndarray          # [2,3] float64, source frame → crop
    frame: int                  # source frame index (0 for a still image)
    source: str                 # source file (absolute path)
    scores: dict[str, float] = field(default_factory=dict)
    excluded: bool = False
    box: np.ndarray | None = None               # [4] detector box in source pixels
    source_landmarks: np.ndarray | None = None  # [68,2] float32, source pixels
    mask_files: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.root / self.file

    @property
    def image(self) -> np.ndarray:
        """The aligned crop, uint8 ``S×S×3`` RGB."""
        return read_image(self.path)

    def mask(self, name: str = "components") -> np.ndarray:
        """A stored mask, uint8 ``S×S`` with values 0 or 255."""
        if name not in self.mask_files:
            raise MediaError(f"face {self.id} has no {name!r} mask (it has {sorted(self.mask_files)})")
        return read_image(self.root / self.mask_files[name])[..., 0]

    @property
    def masks(self) -> dict[str, np.ndarray]:
        return {name: self.mask(name) for name in self.mask_files}

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id, "file": self.file, "frame": self.frame, "source": self.source,
            "landmarks": np.round(self.landmarks, 3).tolist(), "matrix": self.matrix.tolist(),
            "scores": self.scores, "excluded": self.excluded, "masks": self.mask_files,
        }
        if self.box is not None:
            d["box"] = np.round(self.box, 2).tolist()
        if self.source_landmarks is not None:
            d["source_landmarks"] = np.round(self.source_landmarks, 3).tolist()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], root: Path) -> "Face":
        return cls(
            id=int(d["id"]), root=root, file=d["file"],
            landmarks=np.asarray(d["landmarks"], dtype=np.float32),
            matrix=np.asarray(d["matrix"], dtype=np.float64),
            frame=int(d["frame"]), source=d["source"], scores=dict(d.get("scores", {})),
            excluded=bool(d.get("excluded", False)),
            box=np.asarray(d["box"], dtype=np.float32) if "box" in d else None,
            source_landmarks=(np.asarray(d["source_landmarks"], dtype=np.float32)
                              if "source_landmarks" in d else None),
            mask_files=dict(d.get("masks", {})),
        )


class FaceSet:
    """The faces of one identity, as written by ``extract_faces``.

    ``len(fs)`` counts every face; iterating yields Face records in extraction order, excluded ones included
    (check ``face.excluded``; ``fs.active()`` lists the others). ``exclude``/``include``/``update_scores``
    save the metadata atomically.
    """

    def __init__(self, root: Path, faces: list[Face], settings: dict[str, Any]):
        self.root = root
        self._faces = faces
        self._by_id = {f.id: f for f in faces}
        self.settings = settings

    @classmethod
    def open(cls, path: str | os.PathLike) -> "FaceSet":
        root = Path(path)
        meta = root / META_FILE
        if not meta.is_file():
            what = "does not exist" if not root.exists() else f"has no {META_FILE}"
            raise MediaError(f"{root}: not a face set ({what}); make one with `facesynth extract VIDEO {root}`")
        try:
            data = json.loads(meta.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MediaError(f"{meta}: damaged face-set metadata ({e}); extract the faces again") from None
        if data.get("format") != FORMAT:
            raise MediaError(f"{meta}: not a facesynth face set (format {data.get('format')!r})")
        if int(data.get("version", 0)) > VERSION:
            raise MediaError(f"{meta}: written by a newer facesynth (version {data['version']}); upgrade facesynth")
        faces = [Face.from_json(d, root) for d in data["faces"]]
        return cls(root, faces, dict(data.get("settings", {})))

    @staticmethod
    def write(root: Path, faces: Iterable[Face], settings: dict[str, Any]) -> None:
        """Write the metadata atomically, one face at a time (no whole-document string in memory)."""
        head = json.dumps({"format": FORMAT, "version": VERSION, "settings": settings})[:-1]

        def write(f) -> None:
            f.write(head.encode() + b', "faces": [')
            for i, face in enumerate(faces):
                f.write((", " if i else "").encode() + json.dumps(face.to_json()).encode())
            f.write(b"]}")
        atomic_write(root / META_FILE, write)

    def save(self) -> None:
        self.write(self.root, self._faces, self.settings)

    def __len__(self) -> int:
        return len(self._faces)

    def __iter__(self) -> Iterator[Face]:
        return iter(self._faces)

    def __getitem__(self, index: int) -> Face:
        return self._faces[index]

    def __repr__(self) -> str:
        n_ex = sum(f.excluded for f in self._faces)
        return f"FaceSet({str(self.root)!r}, faces={len(self)}, excluded={n_ex})"

    @property
    def ids(self) -> list[int]:
        return [f.id for f in self._faces]

    @property
    def size(self) -> int:
        return int(self.settings.get("size", 0))

    def get(self, face_id: int) -> Face:
        try:
            return self._by_id[int(face_id)]
        except KeyError:
            raise MediaError(f"{self.root}: no face with id {face_id}") from None

    def active(self) -> list[Face]:
        """Faces not excluded (the ones training uses)."""
        return [f for f in self._faces if not f.excluded]

    def _set_excluded(self, ids: Iterable[int], value: bool) -> int:
        changed = 0
        for i in ids:
            face = self.get(i)
            changed += face.excluded != value
            face.excluded = value
        self.save()
        return changed

    def exclude(self, ids: Iterable[int]) -> int:
        """Mark faces as excluded (pruned) and save; returns how many changed."""
        return self._set_excluded(ids, True)

    def include(self, ids: Iterable[int]) -> int:
        """Bring excluded faces back and save; returns how many changed."""
        return self._set_excluded(ids, False)

    def update_scores(self, scores: dict[int, dict[str, float]]) -> None:
        """Merge per-face scores (e.g. training loss) into the metadata and save."""
        for i, s in scores.items():
            self.get(i).scores.update({k: float(v) for k, v in s.items()})
        self.save()

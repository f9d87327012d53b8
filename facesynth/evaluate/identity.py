"""Identity: dlib's ResNet face descriptor, and distances between faces in its space.

Definition: a face's identity is the 128-d descriptor of dlib's ``dlib_face_recognition_resnet_model_v1``
(a ResNet-29 trained with a metric loss; 99.38 % on LFW), computed from the face's 68 landmarks (dlib aligns a
150×150 chip from them, padding 0.25). Two faces are the same person when the **Euclidean distance** between
their descriptors is **below 0.6**, dlib's own rule (``SAME_PERSON_THRESHOLD``). Units: descriptor space
(unitless; same-person pairs typically 0.3–0.5, different people 0.7–1.0). Cosine similarity is given too.
The weights ship in the ``face-recognition-models`` pip package, so identity metrics run offline.

A set of faces (a face set folder, a folder of photos, an image, a video) is represented by the mean of its
descriptors; the distance of a face to a set is its distance to that mean.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facesynth.errors import NoFaceError
from facesynth.evaluate.frames import FrameSource, LandmarkTracker, TrackedFace, iter_rgb, source_label

__all__ = ["FaceEmbedder", "is_faceset", "cosine_similarity", "descriptor_distance", "SAME_PERSON_THRESHOLD",
           "DESCRIPTOR_MODEL"]

SAME_PERSON_THRESHOLD = 0.6      # dlib's rule for its ResNet descriptor (dlib/python_examples/face_recognition.py)
DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"


def descriptor_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two descriptors (128,) — below 0.6 means the same person."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two descriptors, in [-1, 1] (1 = same direction)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


class FaceEmbedder:
    """dlib's 128-d face descriptor of the largest face in an image.

    Args:
        detector: a facesynth.extract backend name (``"dlib"``, ``"fan"``, ``"auto"``) or a ``LandmarkTracker``.
        num_jitters: dlib's test-time augmentation (0: one pass, the deterministic default).

    Example:
        >>> emb = FaceEmbedder()
        >>> emb.distance(read_image("a.png"), read_image("b.png")) < 0.6   # same person?
    """

    def __init__(self, detector: str | LandmarkTracker = "dlib", num_jitters: int = 0):
        import dlib
        from facesynth.extract.backends.dlib_backend import model_file

        self.tracker = detector if isinstance(detector, LandmarkTracker) else LandmarkTracker(detector)
        self.num_jitters = int(num_jitters)
        self.model_path = model_file(DESCRIPTOR_MODEL)
        self._net = dlib.face_recognition_model_v1(str(self.model_path))
        self._dlib = dlib

    def embed(self, image: np.ndarray) -> np.ndarray | None:
        """Descriptor (128,) float64 of the largest face in a uint8 H×W×3 RGB image; None when there is no face."""
        face = self.tracker(image)
        return None if face is None else self.embed_face(image, face)

    def embed_face(self, image: np.ndarray, face: TrackedFace | np.ndarray) -> np.ndarray:
        """Descriptor of a face whose 68 landmarks (frame pixels) are already known."""
        lm = face.landmarks if isinstance(face, TrackedFace) else np.asarray(face, np.float64)
        x0, y0 = np.floor(lm.min(0)).astype(int)
        x1, y1 = np.ceil(lm.max(0)).astype(int)
        rect = self._dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
        shape = self._dlib.full_object_detection(rect, [self._dlib.point(int(round(x)), int(round(y))) for x, y in lm])
        image = np.ascontiguousarray(image, dtype=np.uint8)
        return np.asarray(self._net.compute_face_descriptor(image, shape, self.num_jitters), dtype=np.float64)

    def distance(self, img_a: np.ndarray, img_b: np.ndarray) -> float:
        """Euclidean descriptor distance between the largest faces of two images (< 0.6: same person).

        Raises:
            NoFaceError: either image has no face.
        """
        return descriptor_distance(self._require(img_a, "first"), self._require(img_b, "second"))

    def similarity(self, img_a: np.ndarray, img_b: np.ndarray) -> float:
        """Cosine similarity between the largest faces of two images."""
        return cosine_similarity(self._require(img_a, "first"), self._require(img_b, "second"))

    def embed_set(self, source: FrameSource, max_faces: int = 64) -> np.ndarray:
        """Descriptors ``[N, 128]`` of the faces of a set: a facesynth face set folder (its stored landmarks, no
        detection, pruned faces included), a folder of photos, an image, a video or an array of frames.
        At most ``max_faces``, spread evenly over a face set; a video's first ``max_faces`` faces.

        Raises:
            NoFaceError: no face anywhere in the source.
        """
        descriptors = list(self._iter_set(source, max_faces))
        if not descriptors:
            raise NoFaceError(f"{source_label(source)}: no face found to describe the identity; give photos "
                              f"or a video where the face is visible, or a face set made by `facesynth extract`")
        return np.stack(descriptors)

    def _iter_set(self, source: FrameSource, max_faces: int):
        if isinstance(source, (str, os.PathLike)) and is_faceset(Path(source)):
            from facesynth.extract import FaceSet
            fs = FaceSet.open(source)
            for i in np.unique(np.linspace(0, len(fs) - 1, min(max_faces, len(fs))).round().astype(int)):
                face = fs[int(i)]
                yield self.embed_face(face.image, face.landmarks)
            return
        n = 0
        for frame in iter_rgb(source):
            d = self.embed(frame)
            if d is not None:
                yield d
                n += 1
                if n >= max_faces:
                    return

    def _require(self, image: np.ndarray, which: str) -> np.ndarray:
        d = self.embed(image)
        if d is None:
            raise NoFaceError(f"no face found in the {which} image; give an image where a face is clearly visible")
        return d


def is_faceset(path: Path) -> bool:
    """True for a folder written by ``facesynth extract`` (it has the face set's index file)."""
    from facesynth.extract.faceset import META_FILE
    return path.is_dir() and (path / META_FILE).is_file()

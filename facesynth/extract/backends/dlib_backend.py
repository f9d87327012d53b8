"""dlib backend: HOG (or MMOD CNN) face detector + the 68-point shape predictor, all from pip packages.

The model files ship in ``face-recognition-models``; they are located as package files because that
package's ``__init__`` imports ``pkg_resources``, which recent setuptools no longer provides.
"""
from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from facesynth.errors import ConfigError
from facesynth.extract.backends import DetectedFace, FaceBackend


def model_file(name: str) -> Path:
    """Path of a model file shipped by face-recognition-models (without importing that package)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the dlib backend needs the face-recognition-models package: pip install "
                          "face-recognition-models")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise ConfigError(f"{path} is missing; reinstall face-recognition-models")
    return path


_LOADED = threading.local()


def _model(kind: str):
    """dlib's model ``kind`` ("predictor", "hog" or "cnn"), loaded once per thread and looked up where it runs:
    loading the 68-point predictor (a 100 MB file) and building the HOG detector take about 1.2 s, and every
    extraction, conversion or evaluation makes a backend. Per thread because dlib does not say that a detector may
    run in two threads at once."""
    cache = _LOADED.__dict__.setdefault("models", {})
    if kind not in cache:
        import dlib

        if kind == "predictor":
            cache[kind] = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
        elif kind == "hog":
            cache[kind] = dlib.get_frontal_face_detector()
        else:
            cache[kind] = dlib.cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))
    return cache[kind]


class DlibBackend(FaceBackend):
    """``model="hog"`` (fast, frontal to about ±40° yaw) or ``"cnn"`` (MMOD, more poses, slower on CPU).

    ``upsample=None`` picks how often dlib doubles the image before detecting, so that faces down to about
    40 px in small frames are found: 2 below 120 px, 1 below 640 px, else 0 (on the shorter side).
    ``threshold`` is the HOG detector's score threshold (dlib's ``adjust_threshold``, default 0): a negative
    value also accepts weaker detections, e.g. the blurred faces of a model early in training.
    """

    name = "dlib"

    def __init__(self, device: str = "auto", model: str = "hog", upsample: int | None = None,
                 batch_size: int = 8, threshold: float = 0.0):
        import dlib  # noqa: F401  (a missing dlib fails here, not at the first frame)

        if model not in ("hog", "cnn"):
            raise ConfigError(f"dlib model must be 'hog' or 'cnn', got {model!r}")
        self.model = model
        self.upsample = upsample
        self.threshold = float(threshold)
        if threshold and model != "hog":
            raise ConfigError("threshold applies to dlib's HOG detector (model='hog') only")
        self.batch_size = batch_size if model == "cnn" else 1
        _model("predictor"), _model(model)         # loaded now, so that a broken install fails here

    @classmethod
    def is_available(cls) -> bool:
        try:
            import dlib  # noqa: F401
            model_file("shape_predictor_68_face_landmarks.dat")
        except (ImportError, ConfigError):
            return False
        return True

    def _upsample_for(self, frame: np.ndarray) -> int:
        if self.upsample is not None:
            return self.upsample
        short = min(frame.shape[:2])
        return 2 if short < 120 else 1 if short < 640 else 0

    def detect(self, frames: list[np.ndarray]) -> list[list[DetectedFace]]:
        frames = [np.ascontiguousarray(f) for f in frames]
        if self.model == "cnn":
            results = []
            for f in frames:   # MMOD batches only equal-size images at one upsampling; video frames are
                dets = _model("cnn")(f, self._upsample_for(f))
                results.append([(d.rect, float(d.confidence)) for d in dets])
        else:
            results = []
            for f in frames:
                rects, scores, _ = _model("hog").run(f, self._upsample_for(f), self.threshold)
                results.append(list(zip(rects, scores)))
        return [[self._face(f, rect, score) for rect, score in dets] for f, dets in zip(frames, results)]

    def _face(self, frame: np.ndarray, rect, score: float) -> DetectedFace:
        shape = _model("predictor")(frame, rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float32)
        return DetectedFace(box=box, score=float(score), landmarks=pts)

"""Face extraction: detect → 68 landmarks → Umeyama alignment → masks → scores → FaceSet on disk."""
from facesynth.extract.align import FACE_TYPES, alignment_matrix, umeyama
from facesynth.extract.backends import available_backends, create_backend
from facesynth.extract.faceset import Face, FaceSet
from facesynth.extract.pipeline import extract_faces

__all__ = ["extract_faces", "FaceSet", "Face", "umeyama", "alignment_matrix", "FACE_TYPES", "create_backend",
           "available_backends"]

"""Notebook helpers: galleries and live plots. No maths here; the library does the work."""
from facesynth.notebook.gallery import face_gallery

__all__ = ["face_gallery"]

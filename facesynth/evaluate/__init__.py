"""Metrics for every result, one per module (the shape of stylegan2-ada-pytorch's ``metrics/``).

- ``identity``: dlib's ResNet face descriptor (``FaceEmbedder``), distances and cosine similarity
- ``landmarks``: pose error, expression error (NME, mouth opening, eye aspect ratio), AKD
- ``temporal``: landmark jitter and flicker inside the face
- ``swap``: ``evaluate_swap`` (identity, success rate, pose, expression, stability, face rate)
- ``reenactment``: ``evaluate_reenactment`` (FOMM's L1, AKD, AED; identity kept; expression followed)
- ``lipsync``: LSE-D / LSE-C with SyncNet, and the weight-free mouth–audio correlation
- ``fid``: FID and KID of generated faces
- ``report``: definitions, weights and versions, JSON and tables

Each result is a plain dict with ``definitions`` (metric → definition with units), ``weights`` (files and
SHA-256) and ``versions``. Imports are lazy: ``import facesynth.evaluate`` loads no model.
"""
from __future__ import annotations

import importlib

__all__ = ["FaceEmbedder", "LandmarkTracker", "evaluate_swap", "evaluate_reenactment", "evaluate_lipsync", "evaluate_generation",
           "write_report", "format_table"]

_WHERE = {
    "FaceEmbedder": "identity", "LandmarkTracker": "frames", "evaluate_swap": "swap", "evaluate_reenactment": "reenactment",
    "evaluate_lipsync": "lipsync", "evaluate_generation": "generation", "write_report": "report", "format_table": "report",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"facesynth.evaluate.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'facesynth.evaluate' has no attribute {name!r}")

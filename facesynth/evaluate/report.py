"""Reports: every metric's one-line definition, the weights and versions used, JSON output and a short table.

Every ``evaluate_*`` function returns a plain dict; ``write_report`` stores it as JSON (NaN becomes null) with
what a reader needs to trust it: definitions, the weight files with their SHA-256, library versions, the date.
"""
from __future__ import annotations

import datetime
import math
import os
from pathlib import Path
from typing import Any, Iterable

__all__ = ["DEFINITIONS", "SUMMARY_KEYS", "definitions", "mean", "provenance", "write_report", "format_table",
           "format_value", "format_comparison", "jsonable"]

DEFINITIONS: dict[str, str] = {
    "id_to_target": "dlib ResNet descriptor distance of the result's face to the target person's mean descriptor "
                    "(Euclidean; < 0.6 = same person by dlib's rule; lower is better)",
    "id_to_source": "descriptor distance of the swapped face to the original face of the same frame "
                    "(higher = more of the original identity removed)",
    "success_rate": "fraction of frames (face in both videos) where the swapped face is closer to the target than "
                    "to the original face",
    "target_match_rate": "fraction of frames (face in both videos) where the distance to the target is below 0.6",
    "pose_error_deg": "mean of |Δyaw|, |Δpitch|, |Δroll| between result and reference faces (degrees; solvePnP of "
                      "the 68 landmarks on a generic 3-D face)",
    "expression_error": "mean landmark distance after similarity alignment over the inter-ocular distance (NME)",
    "mouth_error": "mean |Δ mouth opening| (inner-lip gap over inter-ocular distance)",
    "eye_error": "mean |Δ eye aspect ratio| (Soukupová & Čech 2016)",
    "jitter": "mean second-difference landmark motion |L[t] - (L[t-1]+L[t+1])/2| over the inter-ocular distance "
              "(fraction of face size; 0 = smooth)",
    "flicker": "mean |frame-to-frame change| inside the face hull beyond the original's (grey levels 0-255)",
    "brightness_flicker": "mean |change of the face's mean luminance| beyond the original's (grey levels 0-255)",
    "face_rate": "fraction of result frames in which a face is found",
    "l1": "FOMM reconstruction L1: mean |result - driving| over frames, channels and pixels, images in [0, 1] "
          "(self-reenactment only)",
    "akd": "average key-point distance: mean Euclidean distance between the 68 landmarks of result and driving "
           "frames (pixels of the result's frame size; FOMM paper, pose-evaluation protocol)",
    "akd_mad": "AKD as pose-evaluation's cmp.py averages it: mean absolute coordinate difference (pixels)",
    "aed": "average Euclidean distance between identity descriptors of result and driving frames (FOMM used "
           "OpenFace embeddings; here dlib's ResNet descriptor, so values are not comparable to the paper's)",
    "identity_diversity": "mean pairwise descriptor distance between the generated faces (> 0.6: different people; "
                          "low = the generator draws one person)",
    "real_diversity": "mean pairwise descriptor distance between the real faces (the diversity to aim for)",
    "nearest_real": "mean distance from each generated face to its nearest real face (< 0.6: it draws people of "
                    "the real set rather than new ones)",
    "id_to_source_image": "descriptor distance of the result's face to the source image's face (identity kept; "
                          "< 0.6 = same person)",
}


# per kind of evaluation, the values a summary table shows, in order (the JSON has every value, per frame too)
SUMMARY_KEYS = {
    "swap": ["id_to_target", "id_to_source", "success_rate", "target_match_rate", "pose_error_deg",
             "expression_error", "mouth_error", "jitter", "jitter_original", "flicker", "face_rate", "frames"],
    "reenact": ["l1", "akd", "akd_mad", "aed", "id_to_source_image", "id_kept_rate", "expression_error",
                "mouth_error", "pose_error_deg", "jitter", "flicker", "face_rate", "frames", "protocol"],
    "lipsync": ["lse_d", "lse_c", "mouth_audio_corr", "best_lag_frames", "best_lag_s", "corr_at_zero", "frames",
                "frames_with_face"],
    "generate": ["fid", "kid", "kid_std", "face_rate", "identity_diversity", "real_diversity", "nearest_real",
                 "distance_real", "closest_real_rate", "n_generated", "n_real"],
}


def definitions(*keys: str) -> dict[str, str]:
    """The definitions of ``keys`` (those that have one)."""
    return {k: DEFINITIONS[k] for k in keys if k in DEFINITIONS}


def mean(values: Iterable[float | None]) -> float:
    """Mean of the values that are not None or NaN; NaN when there are none."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    return sum(v) / len(v) if v else float("nan")


def provenance(embedder=None, detector: str | None = None,
               extra_weights: dict[str, str | os.PathLike] | None = None) -> dict:
    """``weights`` (role → file name and SHA-256), ``versions``, ``detector`` and ``date`` of a report.

    ``embedder`` (a FaceEmbedder) adds the identity model and its detector; ``detector`` names the landmark
    backend when there is no embedder; ``extra_weights`` adds other files (role → path).
    """
    from facesynth.weights import sha256sum

    files: dict[str, Any] = {}
    if embedder is not None:
        files["identity"] = embedder.model_path
        detector = embedder.tracker.name
    if detector == "dlib":
        from facesynth.extract.backends.dlib_backend import model_file
        files["landmarks"] = model_file("shape_predictor_68_face_landmarks.dat")
    files.update(extra_weights or {})
    weights = {k: {"file": Path(p).name, "sha256": _cached_sha256(Path(p), sha256sum)} for k, p in files.items()}
    out = {"detector": detector, "weights": weights, "versions": versions(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    threshold = getattr(getattr(getattr(embedder, "tracker", None), "backend", None), "threshold", 0.0)
    if threshold:      # a detector made more permissive than its default says so in every report
        out["detector_threshold"] = threshold
    return out


_SHA_CACHE: dict[tuple[str, int, float], str] = {}


def _cached_sha256(path: Path, sha256sum) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256sum(path)
    return _SHA_CACHE[key]


def versions() -> dict[str, str]:
    """Versions of facesynth and the libraries whose numerics the metrics depend on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("facesynth", "dlib-bin", "torch", "numpy", "opencv-python"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def jsonable(obj: Any) -> Any:
    """``obj`` with NaN/inf as None, numpy scalars and arrays as Python values, paths as strings."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, os.PathLike):
        return str(obj)
    return obj


def write_report(result: dict, path: str | os.PathLike) -> Path:
    """Write an evaluation result as JSON, atomically."""
    from facesynth.fileio import atomic_write_json
    return atomic_write_json(path, jsonable(result), indent=2)


def format_table(result: dict, keys: Iterable[str] | None = None, title: str | None = None) -> str:
    """A short two-column text table of the scalar values of ``result`` (``keys`` picks and orders them)."""
    keys = [k for k in (keys or result) if k in result and _scalar(result[k])]
    width = max((len(k) for k in keys), default=0)
    lines = [title] if title else []
    for k in keys:
        v = result[k]
        lines.append(f"{k:<{width}}  {format_value(v)}")
    return "\n".join(lines)


def format_comparison(results: dict[str, dict], keys: Iterable[str], title: str | None = None) -> str:
    """A text table with one column per result (``{label: result}``), rows ``keys`` that any result has."""
    labels = list(results)
    keys = [k for k in keys if any(k in r and _scalar(r[k]) and not isinstance(r[k], str) for r in results.values())]
    cells = [[format_value(results[lb].get(k)) for lb in labels] for k in keys]
    name_w = max((len(k) for k in keys), default=0)
    widths = [max([len(lb)] + [len(row[j]) for row in cells]) for j, lb in enumerate(labels)]
    lines = [title] if title else []
    lines.append(" " * name_w + "  " + "  ".join(lb.rjust(w) for lb, w in zip(labels, widths)))
    for k, row in zip(keys, cells):
        lines.append(f"{k:<{name_w}}  " + "  ".join(v.rjust(w) for v, w in zip(row, widths)))
    return "\n".join(lines)


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))


def format_value(v: Any) -> str:
    """A value as a table shows it: 4 decimals, 'n/a' for None/NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return str(v)

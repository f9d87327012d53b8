"""Rank the faces of a face set by how badly they train, and prune the worst ones headless.

The study's main finding: removing badly-training frames at 200k iterations spiked and then lowered the
loss (average loss A 0.0313 → 0.0289, B 0.0164 → 0.0147). A face is suspect when its running training loss
is high (``scores["loss"]``, written by ``SwapTrainer.save_face_losses``), it is blurred (low ``blur``), it
turns away from the camera (large ``|yaw|`` or ``|pitch|``, degrees), it moves fast (large ``motion``: landmark
displacement since the neighbouring sampled frame over the face size, written at extraction) or the detector
was unsure of it (low ``confidence``). ``rank_faces`` combines those into one number; ``prune`` applies rules
and marks faces as excluded in the face set (they stay on disk; ``FaceSet.include`` brings them back). A
running trainer sees the change after ``trainer.reload_faces()``, which marks the iteration in ``log.jsonl``.
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

from facesynth.errors import ConfigError
from facesynth.extract.faceset import Face, FaceSet

__all__ = ["rank_faces", "prune", "TERMS"]

# term → how a score is turned into "badness" (higher = worse)
TERMS = {
    "loss": lambda s: s["loss"],
    "blur": lambda s: -s["blur"],              # variance of the Laplacian: higher is sharper
    "yaw": lambda s: abs(s["yaw"]),
    "pitch": lambda s: abs(s["pitch"]),
    "motion": lambda s: s["motion"],           # the study: slow frames train best
    "confidence": lambda s: -s["confidence"],
}


def rank_faces(faceset: FaceSet | str | os.PathLike, by: Sequence[str] = ("loss", "blur", "yaw", "pitch", "confidence"),
               weights: Mapping[str, float] | None = None, excluded: bool = False) -> list[tuple[int, float]]:
    """Faces ordered worst first, each with a combined badness in [0, 1].

    Per term the faces that have that score are ranked (ties share their mean rank) and the ranks scaled to
    [0, 1] (0 = best, 1 = worst; a single face gets 0.5). A face's badness is the weighted mean of its scaled
    ranks over the terms it has scores for; a face with none of them gets 0.

    Args:
        faceset: a FaceSet or a face-set folder.
        by: terms among ``loss`` (high is bad), ``blur`` (low is bad), ``yaw``/``pitch`` (large magnitude
            is bad), ``motion`` (high is bad; not in the default, which the notebook widget shows),
            ``confidence`` (low is bad).
        weights: per-term weight (default 1 each).
        excluded: also rank faces already excluded (the widget shows them so they can be brought back).
    Returns:
        ``[(face_id, badness), …]``, worst first, ties broken by face id.

    Example:
        >>> rank_faces("work/A", by=("loss",))[:3]        # doctest: +SKIP
        [(17, 1.0), (4, 0.95), (30, 0.9)]
    """
    fs = _open(faceset)
    unknown = [t for t in by if t not in TERMS]
    if unknown or not by:
        raise ConfigError(f"rank_faces: unknown term(s) {unknown or by!r}; choose from {', '.join(TERMS)}")
    weights = {t: 1.0 for t in by} | dict(weights or {})
    if any(weights[t] < 0 for t in by):
        raise ConfigError(f"rank_faces: weights must be ≥ 0, got {dict(weights)}")
    faces = [f for f in fs if excluded or not f.excluded]
    total = {f.id: 0.0 for f in faces}
    weight_sum = {f.id: 0.0 for f in faces}
    for term in by:
        for fid, rank in _scaled_ranks(faces, term).items():
            total[fid] += weights[term] * rank
            weight_sum[fid] += weights[term]
    badness = {fid: total[fid] / weight_sum[fid] if weight_sum[fid] else 0.0 for fid in total}
    return sorted(badness.items(), key=lambda item: (-item[1], item[0]))


def prune(faceset_or_path: FaceSet | str | os.PathLike, worst_loss: float | None = None, max_yaw: float | None = None,
          max_pitch: float | None = None, min_blur: float | None = None, min_confidence: float | None = None,
          worst: float | None = None, dry_run: bool = False) -> list[int]:
    """Exclude the faces that any of the given rules selects; returns the ids newly excluded.

    Only faces still active are considered, so faces excluded earlier are neither selected nor counted again,
    and fractions are fractions of the active faces, rounded down (``worst_loss=0.1`` of 15 faces is 1).

    Args:
        faceset_or_path: a face-set folder or a FaceSet. Either way the metadata is read fresh from disk, so
            losses a trainer wrote since a FaceSet was opened are used and not overwritten.
        worst_loss: exclude this fraction of faces with the highest running training loss (needs
            ``scores["loss"]``: train first, the trainer writes it at each checkpoint).
        max_yaw, max_pitch: exclude faces turned further than this, in degrees (``|yaw| > max_yaw``).
        min_blur: exclude faces whose sharpness score is below this.
        min_confidence: exclude faces whose detector confidence is below this.
        worst: exclude this fraction of faces by the combined rank of ``rank_faces``.
        dry_run: select only; the face set is not changed.
    Returns:
        Sorted ids of the faces excluded (or that would be, with ``dry_run``).
    Raises:
        ConfigError: no rule given, a fraction outside [0, 1), no face has a loss score for ``worst_loss``, or
            the rules would exclude every active face.
    """
    fs = FaceSet.open(faceset_or_path.root if isinstance(faceset_or_path, FaceSet) else faceset_or_path)
    for name, value in (("worst_loss", worst_loss), ("worst", worst)):
        if value is not None and not 0 <= value < 1:
            raise ConfigError(f"prune: {name} is a fraction of the faces in [0, 1), got {value}")
    rules = {"worst_loss": worst_loss, "max_yaw": max_yaw, "max_pitch": max_pitch, "min_blur": min_blur,
             "min_confidence": min_confidence, "worst": worst}
    if all(v is None for v in rules.values()):
        raise ConfigError("prune: give at least one rule (worst_loss, max_yaw, max_pitch, min_blur, min_confidence, "
                          "worst)")
    active = fs.active()
    if not active:
        return []
    selected: set[int] = set()
    if worst_loss is not None:
        if not any("loss" in f.scores for f in active):
            raise ConfigError(f"{fs.root}: no face has a training loss score yet; train first (the trainer writes "
                              f"scores['loss'] at each checkpoint) or prune by another rule")
        selected |= _worst_fraction(rank_faces(fs, by=("loss",)), active, worst_loss, has="loss")
    if worst is not None:
        selected |= _worst_fraction(rank_faces(fs), active, worst, has=None)
    thresholds = (("yaw", max_yaw, lambda v, t: abs(v) > t), ("pitch", max_pitch, lambda v, t: abs(v) > t),
                  ("blur", min_blur, lambda v, t: v < t), ("confidence", min_confidence, lambda v, t: v < t))
    for key, limit, bad in thresholds:
        if limit is not None:
            selected |= {f.id for f in active if key in f.scores and bad(f.scores[key], limit)}
    if len(selected) == len(active):
        given = ", ".join(f"{k}={v}" for k, v in rules.items() if v is not None)
        raise ConfigError(f"{fs.root}: the rules ({given}) would exclude every one of the {len(active)} active faces; "
                          f"loosen them so that some faces remain to train on")
    ids = sorted(selected)
    if ids and not dry_run:
        fs.exclude(ids)
    return ids


def _open(faceset: FaceSet | str | os.PathLike) -> FaceSet:
    return faceset if isinstance(faceset, FaceSet) else FaceSet.open(faceset)


def _scaled_ranks(faces: list[Face], term: str) -> dict[int, float]:
    """Badness ranks of the faces that have this term's score, scaled to [0, 1]."""
    scored = [f for f in faces if _has(f, term)]
    if not scored:
        return {}
    if len(scored) == 1:
        return {scored[0].id: 0.5}
    values = np.array([TERMS[term](f.scores) for f in scored], dtype=np.float64)
    ranks = (rankdata(values, method="average") - 1) / (len(scored) - 1)
    return {f.id: float(r) for f, r in zip(scored, ranks)}


def _has(face: Face, term: str) -> bool:
    value = face.scores.get(term)
    return value is not None and math.isfinite(value)


def _worst_fraction(ranked: list[tuple[int, float]], active: list[Face], fraction: float, has: str | None) -> set[int]:
    """The ``floor(fraction × active)`` worst faces of a ranking (only those having the ``has`` score)."""
    count = math.floor(fraction * len(active) + 1e-9)
    by_id = {f.id: f for f in active}
    candidates = [fid for fid, _ in ranked if fid in by_id and (has is None or _has(by_id[fid], has))]
    return set(candidates[:count])

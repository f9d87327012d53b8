"""Putting provenance on a written result: watermark while writing, then chain → sign → sidecar once it is complete.

One call per writer::

    from facesynth import provenance
    prov = provenance.Provenance("swap", inputs=[src], weights=[workdir], parameters={...}, edited=True) \
        if provenance.enabled(provenance_arg) else None

    provenance.write_image("out.png", image, prov)                    # instead of media.write_image

    with provenance.VideoWriter("out.mp4", fps, audio=src, provenance=prov) as w:   # instead of media.VideoWriter
        for frame in frames:
            w.write(frame)

With ``prov=None`` both behave like their ``facesynth.media`` namesakes, except that a sidecar left beside the path
by an earlier signed write is removed (it would describe a file that is no longer there). A file written some other
way gets its chain, manifest and sidecar from ``finalize_image(path, prov)`` / ``finalize_video(path, prov)``.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facesynth.fileio import atomic_write_json
from facesynth.weights import sha256sum
from facesynth.provenance.chain import compute_chain
from facesynth.provenance.errors import ProvenanceWarning
from facesynth.provenance.manifest import manifest_definition, mime_type, sign_file
from facesynth.provenance.record import Provenance
from facesynth.provenance.signer import signer_files
from facesynth.provenance.watermark import INTERVAL, PAYLOAD, SCALE, watermark_frame, watermark_skip_reason

__all__ = ["Stamp", "sidecar_path", "write_image", "VideoWriter", "finalize_image", "finalize_video",
           "SIDECAR_FORMAT"]

SIDECAR_FORMAT = "facesynth-provenance"
SIDECAR_SUFFIX = ".provenance.json"


@dataclass
class Stamp:
    """What was put on a file: the sidecar, whether the manifest was signed in, the watermark, and timings (s)."""
    path: Path
    sidecar: Path
    manifest: str                          # "embedded", or "skipped: <reason>"
    watermark: dict
    seconds: dict = field(default_factory=dict)


def sidecar_path(path: str | os.PathLike) -> Path:
    """``<output>.provenance.json`` beside the output."""
    p = Path(path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def _watermark_record(kind: str, embedded: bool, reason: str | None) -> dict:
    return {"method": f"invisible-watermark dwtDct on luma (scale {SCALE})", "payload": PAYLOAD.decode(),
            "bits": len(PAYLOAD) * 8, "embedded": embedded, "reason": reason,
            "frames": f"every {INTERVAL}th from frame 0" if kind == "video" else "the image",
            "interval": INTERVAL if kind == "video" else None}


def write_image(path: str | os.PathLike, image, provenance: Provenance | None = None, quality: int = 95) -> Path:
    """``media.write_image`` with provenance: the watermark goes into the pixels before the (only) encode, then the
    chain, manifest and sidecar are added. ``image``: uint8 ``H×W×3`` RGB (or what ``media.write_image`` takes)."""
    from facesynth.media import _is_tensor, to_image, write_image as media_write_image

    if provenance is None:
        written = media_write_image(path, image, quality=quality)
        sidecar_path(path).unlink(missing_ok=True)          # an earlier signed write's, now stale
        return written
    arr = to_image(image) if _is_tensor(image) else np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    reason = _skip_reason(arr, provenance)
    if reason is None:
        arr = watermark_frame(arr)
    media_write_image(path, arr, quality=quality)
    _finalize(Path(path), provenance, _watermark_record("image", reason is None, reason), warn=provenance.watermark)
    return Path(path)


def _skip_reason(arr: np.ndarray, provenance: Provenance) -> str | None:
    if not provenance.watermark:
        return "turned off (Provenance(watermark=False))"
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        return f"only uint8 RGB images are marked, this one is {arr.dtype} {arr.shape}"
    return watermark_skip_reason(*arr.shape[:2])


class VideoWriter:
    """``media.VideoWriter`` with provenance: marks frames 0, 10, 20, … as they are written, and on ``close`` (once the
    MP4 is complete, audio muxed) computes the chain by decoding it, signs the manifest into it and writes the
    sidecar. ``provenance=None`` writes a plain video. ``seconds`` holds the watermark, chain and signing times."""

    def __init__(self, path: str | os.PathLike, fps: float, audio: str | os.PathLike | None = None,
                 provenance: Provenance | None = None, crf: int = 18, preset: str = "medium"):
        from facesynth.media import VideoWriter as MediaVideoWriter

        self._writer = MediaVideoWriter(path, fps, audio=audio, crf=crf, preset=preset)
        self.path = self._writer.path
        self.provenance = provenance
        self.stamp: Stamp | None = None
        self.seconds = {"watermark": 0.0}
        self._reason = None if provenance is None or provenance.watermark else \
            "turned off (Provenance(watermark=False))"
        self._marked = 0

    @property
    def frames_written(self) -> int:
        return self._writer.frames_written

    def write(self, frame) -> None:
        from facesynth.media import _is_tensor, to_image

        if self.provenance is not None and self._reason is None and self.frames_written % INTERVAL == 0:
            t = time.perf_counter()
            arr = to_image(frame) if _is_tensor(frame) else np.asarray(frame)
            self._reason = _skip_reason(arr, self.provenance)
            if self._reason is None:
                frame = watermark_frame(arr)
                self._marked += 1
            self.seconds["watermark"] += time.perf_counter() - t
        self._writer.write(frame)

    def close(self) -> Path:
        path = self._writer.close()
        if self.provenance is None:
            sidecar_path(path).unlink(missing_ok=True)      # an earlier signed write's, now stale
        else:
            marked = self._reason is None and self._marked > 0
            self.stamp = _finalize(path, self.provenance, _watermark_record("video", marked, self._reason),
                                   warn=self.provenance.watermark)
            self.seconds.update(self.stamp.seconds)
        return path

    def abort(self) -> None:
        self._writer.abort()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def finalize_image(path: str | os.PathLike, provenance: Provenance, watermark: bool = True) -> Stamp:
    """Add provenance to an image already on disk. With ``watermark`` the image is read, marked and written again
    first (a second encode for JPEG, at quality 95: prefer ``write_image``, which marks before the only encode)."""
    from facesynth.media import read_image, write_image as media_write_image

    p = Path(path)
    reason = "not requested (finalize_image(watermark=False))" if not watermark else None
    if reason is None:
        rgb = read_image(p)
        reason = _skip_reason(rgb, provenance)
        if reason is None:
            media_write_image(p, watermark_frame(rgb))
    return _finalize(p, provenance, _watermark_record("image", reason is None, reason),
                     warn=watermark and provenance.watermark)


def finalize_video(path: str | os.PathLike, provenance: Provenance) -> Stamp:
    """Add the chain, manifest and sidecar to a finished MP4 whose frames were not marked while writing (use
    ``VideoWriter`` to have them marked)."""
    reason = "frames were not marked while writing (facesynth.provenance.VideoWriter marks them)"
    return _finalize(Path(path), provenance, _watermark_record("video", False, reason), warn=provenance.watermark)


def _finalize(path: Path, provenance: Provenance, watermark: dict, warn: bool) -> Stamp:
    """Chain (decoding the finished file), record, manifest signed into the file, sidecar. ``warn``: say so when the
    watermark was wanted but could not be embedded."""
    seconds = {}
    t = time.perf_counter()
    chain = compute_chain(path, provenance.segment_frames)
    seconds["chain"] = time.perf_counter() - t
    t = time.perf_counter()
    record = provenance.to_dict()
    seconds["hash_inputs"] = time.perf_counter() - t
    if warn and not watermark["embedded"]:
        warnings.warn(f"{path}: no invisible watermark: {watermark['reason']}", ProvenanceWarning, stacklevel=3)
    manifest = "embedded"
    t = time.perf_counter()
    if mime_type(path) is None:
        manifest = f"skipped: C2PA cannot embed a manifest in {path.suffix} files (use PNG, JPEG or MP4)"
        warnings.warn(f"{path}: no C2PA manifest: {manifest[9:]}; the sidecar holds the hash chain",
                      ProvenanceWarning, stacklevel=3)
    else:
        sign_file(path, manifest_definition(path, record, chain, watermark), signer_files())
    seconds["sign"] = time.perf_counter() - t
    sidecar = {"format": SIDECAR_FORMAT, "version": 1, "file": path.name, "file_sha256": sha256sum(path),
               "manifest": manifest, **record, "watermark": watermark, "chain": chain}
    side = atomic_write_json(sidecar_path(path), sidecar, indent=1)
    return Stamp(path, side, manifest, watermark, seconds)


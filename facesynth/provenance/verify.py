"""``verify(path)``: is this the file facesynth wrote, and if not, what changed?

Three independent pieces of evidence, strongest first:

1. the C2PA manifest: its signature (the claim is as signed) and its hard binding (the file's bytes are as signed);
2. the hash chain, from the manifest (signed) or else the sidecar ``<file>.provenance.json``, against the chain of
   the file as it decodes now: segments whose exact hash differs but whose 16×16 luma thumbnails all stay within
   ``LUMA_THRESHOLD`` were re-encoded (same content); frames beyond it were changed, and are named;
3. the invisible watermark, which survives what strips a manifest (a remux, a JPEG re-save of an image).

Verdicts, the first that applies: ``changed``: content differs (frames named); ``manifest-invalid``: a facesynth
manifest is there but its signature or hard binding fails (altered in place); ``re-encoded``: same content, other
bytes, manifest gone; ``manifest-missing``: content as recorded (or not comparable) but no facesynth manifest;
``intact`` (exit 0): manifest valid and every segment exactly as recorded. All but ``intact`` exit 1. Input that
cannot be judged (missing, truncated, not from facesynth at all, a sidecar of another file) raises MediaError or
ProvenanceError: the CLI exits 2.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from facesynth.errors import MediaError
from facesynth.provenance.chain import (LUMA_THRESHOLD, SEGMENT_FRAMES, SegmentCheck, check_chain, compare_chains,
                                        image_chain, video_chain)
from facesynth.provenance.errors import ProvenanceError
from facesynth.provenance.manifest import LABEL, ManifestReading, read_manifest
from facesynth.provenance.stamp import SIDECAR_FORMAT, sidecar_path
from facesynth.provenance.watermark import INTERVAL, WatermarkReading, WatermarkVotes

__all__ = ["VerifyReport", "verify", "VERDICTS"]

VERDICTS = ("intact", "changed", "re-encoded", "manifest-missing", "manifest-invalid")


@dataclass
class VerifyReport:
    path: Path
    kind: str                                   # image / video
    verdict: str                                # one of VERDICTS
    manifest: ManifestReading
    watermark: WatermarkReading
    reference: str | None                       # where the recorded chain came from: manifest / sidecar / None
    sidecar: Path | None
    segments: list[SegmentCheck] = field(default_factory=list)
    record: dict = field(default_factory=dict)  # technique, version, inputs, weights, parameters as recorded
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict == "intact" else 1

    @property
    def changed_segments(self) -> list[SegmentCheck]:
        return [s for s in self.segments if "changed" in (s.video, s.audio) or s.video in ("missing", "extra")
                or s.audio in ("missing", "extra")]

    @property
    def changed_frames(self) -> list[int]:
        return sorted({f for s in self.segments for f in s.changed_frames})

    @property
    def content(self) -> str:
        """unchanged (bit-exact), re-encoded (same content), changed, or unknown (nothing to compare with)."""
        if not self.segments:
            return "unknown"
        if self.changed_segments:
            return "changed"
        if any("re-encoded" in (s.video, s.audio) for s in self.segments):
            return "re-encoded"
        return "unchanged"

    def to_dict(self) -> dict:
        return {"path": str(self.path), "kind": self.kind, "verdict": self.verdict, "exit_code": self.exit_code,
                "content": self.content, "manifest": self.manifest.to_dict(), "watermark": self.watermark.to_dict(),
                "reference": self.reference, "sidecar": str(self.sidecar) if self.sidecar else None,
                "changed_frames": _ranges(self.changed_frames),
                "segments": [s.to_dict() for s in self.segments], "record": self.record, "notes": self.notes}

    def summary(self) -> str:
        """The report as lines of text, verdict first."""
        lines = [f"{self.path}: {self.verdict.upper()}: {_VERDICT_TEXT[self.verdict]}"]
        lines.append(f"  C2PA manifest: {_describe_manifest(self.manifest)}")
        if self.reference:
            where = {"manifest": "the hash chain signed into the manifest",
                     "sidecar": f"the hash chain in {self.sidecar}"}[self.reference]
            lines.append(f"  content: {self.content}, compared with {where}")
        else:
            lines.append("  content: not compared (no facesynth manifest and no sidecar; pass --sidecar)")
        changed = self.changed_segments
        for s in changed:
            frames = ("frame " if len(s.changed_frames) == 1 else "frames ") + _ranges(s.changed_frames)
            what = [f"video {s.video}" + (f" in {frames}" if s.changed_frames else "")
                    + (f", luma change up to {s.max_luma_change:.0f} levels" if s.max_luma_change is not None else "")]
            if s.audio in ("changed", "missing", "extra"):
                what.append(f"audio {s.audio}")
            when = f", {s.seconds[0]:.2f}–{s.seconds[1]:.2f} s" if self.kind == "video" else ""
            lines.append(f"  segment {s.segment} (frames {s.frames[0]}–{s.frames[1]}{when}): {'; '.join(what)}")
        rest = [s for s in self.segments if s not in changed]
        if rest and self.kind == "video":
            counts = {state: sum(1 for s in rest if s.video == state) for state in ("same", "re-encoded")}
            lines.append(f"  other segments: {counts['same']} bit-exact, {counts['re-encoded']} re-encoded with the "
                         f"same content (luma change ≤ {LUMA_THRESHOLD:g} levels)")
        lines.append(f"  watermark: {self.watermark.describe()}")
        if self.record:
            lines.append(f"  recorded: facesynth {self.record.get('facesynth_version')} "
                         f"{self.record.get('technique')}; " + _describe_files(self.record))
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


_VERDICT_TEXT = {
    "intact": "signed by facesynth and unchanged",
    "changed": "the content differs from what facesynth wrote",
    "re-encoded": "re-encoded: other bytes, same content as facesynth wrote",
    "manifest-missing": "no facesynth C2PA manifest (stripped, or the file was rewritten)",
    "manifest-invalid": "the C2PA manifest does not verify: the file or its manifest was altered after signing",
}


def verify(path: str | os.PathLike, sidecar: str | os.PathLike | None = None) -> VerifyReport:
    """Check ``path`` (an image or MP4 facesynth wrote) against its manifest, sidecar and watermark.

    ``sidecar``: the ``.provenance.json`` to compare with (default: the one beside the file, if any), e.g. the
    original's sidecar when checking a copy that was re-encoded or renamed.
    """
    from facesynth.media import is_image, is_video

    p = Path(path)
    if not p.is_file():
        raise MediaError(f"{p}: file not found; check the path" if not p.exists() else f"{p}: is not a file")
    if p.stat().st_size == 0:
        raise MediaError(f"{p}: file is empty (0 bytes)")
    kind = "video" if is_video(p) else "image" if is_image(p) else None
    if kind is None:
        raise MediaError(f"{p}: not an image or video ({p.suffix or 'no extension'}); facesynth writes PNG, JPEG "
                         f"and MP4")
    notes: list[str] = []
    manifest = read_manifest(p)
    side_path = Path(sidecar) if sidecar is not None else sidecar_path(p)
    side = _load_sidecar(side_path) if sidecar is not None or side_path.is_file() else None
    if side is not None and side["chain"].get("kind") != kind:
        article = {"image": "an image", "video": "a video"}
        raise ProvenanceError(f"{side_path}: describes {article.get(side['chain'].get('kind'), 'something else')}, "
                              f"but {p} is {article[kind]}: it is not this file's sidecar")

    recorded, reference, record = _reference(p, manifest, side, side_path, notes)
    votes = WatermarkVotes()
    interval = ((record.get("watermark") or {}).get("interval") or INTERVAL)
    if kind == "video":
        observed = video_chain(p, int(recorded["segment_frames"]) if recorded else SEGMENT_FRAMES,
                               on_frame=lambda i, luma: votes.add(luma) if i % interval == 0 else None)
    else:
        from facesynth.media import read_image

        observed = image_chain(p)
        votes.add_rgb(read_image(p))
    watermark = votes.reading()

    if recorded is None:
        if not watermark.found:
            raise ProvenanceError(_not_facesynth(p, manifest, side_path))
        return VerifyReport(p, kind, "manifest-missing", manifest, watermark, None, None, record=record,
                            notes=notes + ["the facesynth watermark is present, so facesynth made this content, but "
                                           "there is nothing to compare it with: give the original's sidecar "
                                           "(--sidecar FILE.provenance.json)"])
    _check_geometry(p, recorded, observed, side_path if reference == "sidecar" else None, notes)
    segments = compare_chains(recorded, observed)
    report = VerifyReport(p, kind, "intact", manifest, watermark, reference,
                          side_path if side is not None else None, segments, record, notes)
    report.verdict = _verdict(report)
    return report


def _verdict(report: VerifyReport) -> str:
    """changed > manifest-invalid > re-encoded > manifest-missing > intact: a manifest that is still there but fails
    was altered in place (a re-encode drops it), which says more than the content's being similar."""
    content, manifest = report.content, report.manifest
    if content == "changed":
        return "changed"
    if manifest.facesynth is not None and manifest.state == "invalid":
        return "manifest-invalid"
    if content == "re-encoded":
        return "re-encoded"
    if manifest.facesynth is None or manifest.state != "valid":
        return "manifest-missing"
    return "intact"


def _reference(p: Path, manifest: ManifestReading, side: dict | None, side_path: Path,
               notes: list[str]) -> tuple[dict | None, str | None, dict]:
    """The recorded chain to compare with (with its thumbnails), where it came from, and the recorded metadata."""
    signed = None
    if manifest.facesynth is not None:
        try:
            signed = manifest.facesynth["chain"]
            check_chain(signed, f"{p}'s manifest")
        except (ProvenanceError, KeyError, TypeError) as e:
            notes.append(f"the manifest's facesynth chain is unusable ({e})")
            signed = None
    if manifest.state == "unreadable":
        notes.append(f"c2pa could not read the manifest: {manifest.error}")
    record = {k: v for k, v in (manifest.facesynth or side or {}).items()
              if k in ("technique", "facesynth_version", "edited", "inputs", "weights", "parameters", "watermark")}
    if signed is not None and manifest.signature != "valid":
        if side is not None:
            notes.append("the manifest's signature does not verify: compared with the sidecar instead")
            return side["chain"], "sidecar", record
        notes.append("the manifest's signature does not verify: its chain is compared but proves nothing")
    if signed is not None:
        if side is not None and side["chain"].get("head") != signed.get("head"):
            raise ProvenanceError(f"{side_path}: does not belong to {p}: its hash chain ends in "
                                  f"{side['chain'].get('head', '?')[:12]}…, the file's signed manifest in "
                                  f"{signed.get('head', '?')[:12]}…; use the sidecar written with this file, or none")
        if side is not None:          # same head, both chains intact: the same entries, the sidecar's with thumbnails
            return side["chain"], "manifest", record
        if isinstance(signed.get("luma16"), str):
            notes.append("the manifest holds the chain without per-frame thumbnails (too large); without the "
                         "sidecar a re-encode cannot be told from an edit, so any difference counts as a change")
        return signed, "manifest", record
    if side is not None:
        return side["chain"], "sidecar", record
    return None, None, record


def _load_sidecar(path: Path) -> dict:
    try:
        side = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProvenanceError(f"{path}: sidecar not found; check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProvenanceError(f"{path}: sidecar is damaged ({type(e).__name__}: {e}); use the copy written with "
                              f"the file") from None
    if not isinstance(side, dict) or side.get("format") != SIDECAR_FORMAT or "chain" not in side:
        raise ProvenanceError(f"{path}: not a facesynth provenance sidecar (no \"format\": \"{SIDECAR_FORMAT}\" "
                              f"with a chain)")
    check_chain(side["chain"], str(path))
    return side


def _check_geometry(p: Path, recorded: dict, observed: dict, side_path: Path | None, notes: list[str]) -> None:
    rw, rh, ow, oh = recorded["width"], recorded["height"], observed["width"], observed["height"]
    if (rw, rh) == (ow, oh):
        return
    if abs(rw / rh - ow / oh) > 0.02:
        what = f"the sidecar {side_path}" if side_path else "the manifest"
        raise ProvenanceError(f"{what} describes a {rw}x{rh} {recorded['kind']}, but {p} is {ow}x{oh}: it is not "
                              f"this file's record; use the sidecar written with this file")
    notes.append(f"resized from {rw}x{rh} to {ow}x{oh}; the luma thumbnails are compared regardless of size")


def _not_facesynth(p: Path, manifest: ManifestReading, side_path: Path) -> str:
    if manifest.state != "missing" and manifest.facesynth is None and manifest.state != "unreadable":
        found = f"its C2PA manifest was not written by facesynth (no {LABEL} assertion)"
    elif manifest.state == "unreadable":
        found = f"its C2PA data could not be read ({manifest.error})"
    else:
        found = "it has no C2PA manifest"
    return (f"{p}: no facesynth provenance: {found}, there is no sidecar {side_path.name}, and no facesynth "
            f"watermark was found. facesynth did not write this file, or it was re-encoded and its sidecar is "
            f"elsewhere: pass it with --sidecar")


def _describe_manifest(m: ManifestReading) -> str:
    if m.state == "missing":
        return "missing" + (f" ({m.error})" if m.error else "")
    if m.state == "unreadable":
        return f"unreadable ({m.error})"
    signer = m.signer.get("common_name") or m.signer.get("issuer") or "unknown signer"
    trust = "trusted signer" if m.trusted else (
        "self-issued signer, untrusted by design" if "self-issued" in (m.signer.get("issuer") or "")
        else "signer not on a trust list")
    if m.facesynth is None:
        return f"{m.state}, but not from facesynth (signed by {signer})"
    if m.state == "valid":
        return f"valid: signature verified, hard binding matches ({signer}; {trust})"
    problems = "; ".join(f"{f['code']}" for f in m.failures) or "incomplete validation"
    return f"INVALID: {problems} (signature {m.signature or '?'}, hard binding {m.hard_binding or '?'}; {signer})"


def _describe_files(record: dict) -> str:
    def names(items):
        return ", ".join(f"{i['name']} (sha256 {i['sha256'][:12]}…)" for i in items) or "none"
    return f"inputs: {names(record.get('inputs', []))}; weights: {names(record.get('weights', []))}"


def _ranges(frames: list[int]) -> str:
    """[30, 31, 32, 40] → "30–32, 40"."""
    out, start = [], None
    for i, f in enumerate(frames):
        if start is None:
            start = f
        if i + 1 == len(frames) or frames[i + 1] != f + 1:
            out.append(f"{start}–{f}" if f != start else f"{f}")
            start = None
    return ", ".join(out)

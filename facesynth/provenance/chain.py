"""The per-segment hash chain: what a video (or image) decodes to, hashed exactly and perceptually, segment by segment.

The study's proposal: hash values at intervals, so that a changed video no longer matches. A video is cut into
segments of ``segment_frames`` frames (15 by default: half a second at 30 fps). Each segment records

* ``sha256``: SHA-256 of its frames' decoded YUV 4:2:0 planes, exactly as the decoder outputs them. H.264 decoding
  is bit-exact by the standard, so any machine gets the same digest; an RGB conversion would not be (ffmpeg's
  swscale paths differ by CPU), which is why the planes are read here rather than through ``media.iter_frames``;
* ``luma16``: per frame, a 16×16 thumbnail of its luma (area means, full-range levels 0–255, one byte each),
  the perceptual part. A re-encode at another quality moves a cell by a few levels, an edit by tens (calibration
  in ``LUMA_THRESHOLD``); unlike a global 64-bit DCT pHash, which moved 0–2 bits on re-encodes but only 2–6 for
  a red rectangle over the face and 0–4 for a pasted face region, so could not tell them apart;
* ``audio_sha256`` and ``audio_rms``: the audio under the segment decoded to 16 kHz mono 16-bit PCM, hashed
  exactly, and its loudness in four quarter windows (tenths of a dB) as its perceptual part;
* ``segment``, ``first_frame``, ``last_frame``: where it is (integers, not a list: see below);
* ``prev``: the previous entry's ``entry_sha256`` (the first entry's: the hash of the chain's header), and
  ``entry_sha256``: SHA-256 of the entry's canonical JSON (sorted keys, without ``entry_sha256`` and ``luma16``:
  the thumbnails are bound through ``luma16_sha256``, so a manifest too small for them can carry the chain without).

Changing, dropping or reordering a segment breaks every later link; the last ``entry_sha256`` is the chain's
``head``. The names and types dodge two quirks of c2pa 0.91's readers, so the chain reads back unchanged from the
manifest: ``Reader.json()`` turns lists of numbers into byte strings (so: no lists of numbers, and only integers and
strings at all), ``Reader.crjson()`` takes a map with a ``hash`` key for a hashed URI and adds ``pad`` to it (so:
no key named ``hash``).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np

from facesynth.errors import MediaError
from facesynth.provenance.errors import ProvenanceError

__all__ = ["SEGMENT_FRAMES", "GRID", "LUMA_THRESHOLD", "AUDIO_DB_THRESHOLD", "AUDIO_RATE", "compute_chain",
           "video_chain", "image_chain", "check_chain", "compare_chains", "SegmentCheck", "iter_video_planes"]

SEGMENT_FRAMES = 15
GRID = 16
AUDIO_RATE = 16000
# Largest change of one 16×16 luma cell (levels of 255) still called a re-encode. Measured (bench/provenance.py,
# "calibration") on the sample talking head's first 60 frames at 176×144 as VideoWriter writes them (CRF 18),
# re-encoded with libx264 at CRF 12 / 23 / 28 / 35, ultrafast, and mpeg4 q5: at most 2 / 4 / 6 / 14 / 3 / 3
# (CRF 35 is visibly blocky). Frames 30–45 edited then re-encoded: a red rectangle over the face ≥ 52, another face
# pasted in ≥ 85, the face of frame 5 pasted over the current one ≥ 42, the frames around them ≤ 4. 20 is 3.3x the
# worst re-encode up to CRF 28 (1.4x CRF 35's) and 2.1x below the weakest edit. A blur of the face (σ = 3) moves
# cells by 4 only: it passes as a re-encode.
LUMA_THRESHOLD = 20.0
# Largest change of a quarter-segment loudness still called an audio re-encode (dB). Measured on the same clip with
# the 2-second test signal of tests/data/wav2lip as its track: AAC re-encodes at 128k / 64k / 32k and a resample to
# 22 kHz move it by ≤ 0.5 dB, and the segment after an edit by 1.5 (AAC frames overlap); 1.0–1.5 s replaced by
# silence 77.7, by itself reversed 16.6, by 0.25–0.75 s 8.1, turned down by 6 dB 6.1 (3 dB: 3.2).
AUDIO_DB_THRESHOLD = 3.0
_SILENCE_DB = -90.0
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)     # RGB → luma as cv2 (and the watermark) computes it
_HASHED_OUT = ("entry_sha256", "luma16")


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _digest(obj) -> str:
    return hashlib.sha256(canonical(obj)).hexdigest()


def entry_hash(entry: dict) -> str:
    return _digest({k: v for k, v in entry.items() if k not in _HASHED_OUT})


def compute_chain(path: str | os.PathLike, segment_frames: int = SEGMENT_FRAMES) -> dict:
    """The chain of a finished image or video file (see the module docstring for its fields)."""
    from facesynth.media import is_video

    return video_chain(path, segment_frames) if is_video(path) else image_chain(path)


# ------------------------------------------------------------------------------------------------------ video

@dataclass
class _Segment:
    index: int
    first: int
    sha: "hashlib._Hash"
    grids: list = field(default_factory=list)

    @property
    def last(self) -> int:
        return self.first + len(self.grids) - 1


def video_chain(path: str | os.PathLike, segment_frames: int = SEGMENT_FRAMES,
                on_frame: Callable[[int, np.ndarray], None] | None = None) -> dict:
    """Decode ``path`` once (streamed) and hash it segment by segment; ``on_frame(index, luma)`` sees every frame
    on the way (``verify`` reads the watermark there rather than decoding twice)."""
    from facesynth.media import probe

    if segment_frames < 1:
        raise ProvenanceError(f"segment_frames must be at least 1, got {segment_frames}")
    info = probe(path)
    header = {"kind": "video", "width": info.width, "height": info.height, "fps": f"{info.fps:g}",
              "segment_frames": segment_frames, "grid": GRID, "exact": "sha256 of decoded yuv420p planes",
              "audio": f"pcm_s16le {AUDIO_RATE} Hz mono" if info.has_audio else None}
    pcm = _read_pcm(path) if info.has_audio else None
    segments: list[dict] = []
    prev = _digest(header)
    current: _Segment | None = None
    for index, planes, luma in iter_video_planes(path):
        if current is not None and len(current.grids) == segment_frames:
            # closed only once a further frame exists: the last segment also takes the audio after the last frame
            segments.append(_close(current, prev, pcm, info.fps, last=False))
            prev, current = segments[-1]["entry_sha256"], None
        if current is None:
            current = _Segment(len(segments), index, hashlib.sha256())
        current.sha.update(planes)
        current.grids.append(luma_grid(luma))
        if on_frame is not None:
            on_frame(index, luma)
    segments.append(_close(current, prev, pcm, info.fps, last=True))
    return {**header, "frames": current.last + 1, "segments": segments, "head": segments[-1]["entry_sha256"]}


def _close(seg: _Segment, prev: str, pcm, fps: float, last: bool) -> dict:
    blob = b"".join(seg.grids)
    entry = {"segment": seg.index, "first_frame": seg.first, "last_frame": seg.last, "sha256": seg.sha.hexdigest(),
             "luma16_sha256": hashlib.sha256(blob).hexdigest(), "prev": prev}
    if pcm is not None:
        entry.update(_audio_fields(pcm, seg.first, seg.last, fps, last))
    entry["entry_sha256"] = entry_hash(entry)
    entry["luma16"] = [base64.b64encode(g).decode() for g in seg.grids]
    return entry


def _audio_fields(pcm: np.ndarray, first: int, last: int, fps: float, last_segment: bool) -> dict:
    a = int(round(first / fps * AUDIO_RATE))
    b = len(pcm) if last_segment else int(round((last + 1) / fps * AUDIO_RATE))
    chunk = pcm[a:b]
    return {"audio_sha256": hashlib.sha256(chunk.tobytes()).hexdigest(), "audio_rms": _loudness(chunk)}


def _loudness(chunk: np.ndarray) -> str:
    """RMS level of each quarter of the chunk in tenths of a dB (full scale = 0, floor -90 dB), as "-231,-240,...":
    text, not a list of numbers, which c2pa's Reader.json() would garble (module docstring)."""
    out = []
    for part in np.array_split(chunk.astype(np.float64) / 32768.0, 4):
        rms = float(np.sqrt(np.mean(part ** 2))) if len(part) else 0.0
        db = 20 * np.log10(rms) if rms > 0 else _SILENCE_DB
        out.append(str(int(round(max(db, _SILENCE_DB) * 10))))
    return ",".join(out)


def _levels(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _read_pcm(path) -> np.ndarray:
    from facesynth.media import read_audio

    # read_audio gives int16 / 32768 in float32, which is exact, so the round trip restores the decoder's samples
    return np.round(read_audio(path, sr=AUDIO_RATE) * 32768.0).astype("<i2")


def iter_video_planes(path: str | os.PathLike) -> Iterator[tuple[int, bytes, np.ndarray]]:
    """Stream ``(index, yuv420p planes as bytes, luma H×W float32 in full range 0–255)`` for every frame.

    Raises MediaError when the file stops well before the frame count its container announces (a truncated copy).
    """
    from facesynth.media import ffmpeg_exe, probe

    info = probe(path)
    w, h = info.width, info.height
    cw, ch = (w + 1) // 2, (h + 1) // 2
    size = w * h + 2 * cw * ch
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-noautorotate", "-i", str(info.path), "-map", "0:v:0",
           "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"]
    # ffmpeg's messages go to a file: a damaged video can log more than a pipe holds while we read the frames
    errors = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors)
    n = 0
    try:
        while True:
            buf = proc.stdout.read(size)
            if len(buf) < size:
                break
            y = np.frombuffer(buf, np.uint8, count=w * h).reshape(h, w)
            # studio-range Y (16–235) to full range, the scale of RGB luma, which the thresholds are in
            luma = (y.astype(np.float32) - 16.0) * (255.0 / 219.0)
            yield n, buf, luma
            n += 1
    finally:
        proc.stdout.close()
        proc.wait()
        errors.seek(0)
        err = errors.read().decode(errors="replace").strip()
        errors.close()
    if n == 0:
        reason = err.splitlines()[-1] if err else "no frame decoded"
        raise MediaError(f"{info.path}: no frame could be decoded ({reason}); the file is damaged or not a video")
    expected = info.frame_count
    if expected and n < expected - max(2, int(0.02 * expected)):
        raise MediaError(f"{info.path}: truncated: only {n} of the {expected} frames its header announces could "
                         f"be decoded; re-copy or re-download the file")


def luma_grid(luma: np.ndarray) -> bytes:
    """16×16 area means of a luma image (levels 0–255) as 256 bytes."""
    import cv2

    small = cv2.resize(np.ascontiguousarray(luma, np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8).tobytes()


# ------------------------------------------------------------------------------------------------------ image

def image_chain(path: str | os.PathLike) -> dict:
    """An image's chain: one segment with the SHA-256 of its decoded RGB pixels and its 16×16 luma thumbnail."""
    from facesynth.media import read_image

    rgb = read_image(path)
    h, w = rgb.shape[:2]
    header = {"kind": "image", "width": w, "height": h, "grid": GRID, "exact": "sha256 of decoded rgb24 pixels"}
    seg = _Segment(0, 0, hashlib.sha256(rgb.tobytes()), [luma_grid(rgb.astype(np.float32) @ _LUMA)])
    entry = _close(seg, _digest(header), None, 1.0, last=True)
    return {**header, "frames": 1, "segments": [entry], "head": entry["entry_sha256"]}


# ------------------------------------------------------------------------------------------------------ checks

def header_of(chain: dict) -> dict:
    return {k: v for k, v in chain.items() if k not in ("frames", "segments", "head", "luma16")}


def check_chain(chain: dict, where: str) -> None:
    """Raise ProvenanceError unless every entry's hash, every link and the head agree (the chain is as made)."""
    try:
        prev = _digest(header_of(chain))
        segments = chain["segments"]
        for i, entry in enumerate(segments):
            if entry.get("prev") != prev or entry_hash(entry) != entry.get("entry_sha256"):
                raise ProvenanceError(f"{where}: hash-chain entry {i} does not match its own hash or its link to "
                                      f"the previous entry: the record was edited after it was made; use the copy "
                                      f"written with the file")
            grids = entry.get("luma16")
            if grids is not None and hashlib.sha256(b"".join(base64.b64decode(g) for g in grids)).hexdigest() \
                    != entry["luma16_sha256"]:
                raise ProvenanceError(f"{where}: the luma thumbnails of segment {i} do not match their digest: "
                                      f"the record was edited after it was made")
            prev = entry["entry_sha256"]
        if not segments or chain.get("head") != prev:
            raise ProvenanceError(f"{where}: the hash chain's head does not match its last entry")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ProvenanceError(f"{where}: not a facesynth hash chain ({type(e).__name__}: {e})") from None


@dataclass
class SegmentCheck:
    """How one segment of the recorded chain compares with the file. ``video``/``audio``: same, re-encoded,
    changed, missing (in the record, not in the file) or extra (in the file only)."""
    segment: int
    frames: tuple[int, int]
    seconds: tuple[float, float]
    video: str
    changed_frames: list[int]
    max_luma_change: float | None
    audio: str | None = None
    max_audio_db_change: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def compare_chains(recorded: dict, observed: dict) -> list[SegmentCheck]:
    """Compare the recorded chain (with its ``luma16`` lists) with the one computed from the file now."""
    fps = float(recorded.get("fps", 1) or 1)
    out = []
    rec, obs = recorded["segments"], observed["segments"]
    for i in range(max(len(rec), len(obs))):
        r = rec[i] if i < len(rec) else None
        o = obs[i] if i < len(obs) else None
        first = (r or o)["first_frame"]
        last = (r or o)["last_frame"] if r is None or o is None else max(r["last_frame"], o["last_frame"])
        seconds = (round(first / fps, 3), round((last + 1) / fps, 3)) if recorded["kind"] == "video" else (0.0, 0.0)
        if r is None or o is None:
            state = "extra" if r is None else "missing"
            frames = list(range(first, last + 1))
            out.append(SegmentCheck(i, (first, last), seconds, state, frames, None,
                                    state if (r or o).get("audio_sha256") else None))
            continue
        video, changed, worst = _compare_video(r, o, first)
        if r["last_frame"] != o["last_frame"]:      # the file ends inside this segment, or runs past it
            video = "changed"
            lo, hi = min(r["last_frame"], o["last_frame"]) + 1, last
            changed = sorted(set(changed) | set(range(lo, hi + 1)))
        audio, audio_worst = _compare_audio(r, o)
        out.append(SegmentCheck(i, (first, last), seconds, video, changed, worst, audio, audio_worst))
    return out


def _compare_video(r: dict, o: dict, first: int) -> tuple[str, list[int], float | None]:
    exact = r["sha256"] == o["sha256"]
    if not isinstance(r.get("luma16"), list):     # a manifest-only chain of a long video: no thumbnails to compare
        return ("same", [], None) if exact else ("changed", list(range(first, r["last_frame"] + 1)), None)
    grids_r = [np.frombuffer(base64.b64decode(g), np.uint8).astype(np.int16) for g in r["luma16"]]
    grids_o = [np.frombuffer(base64.b64decode(g), np.uint8).astype(np.int16) for g in o["luma16"]]
    diffs = [float(np.abs(a - b).max()) for a, b in zip(grids_r, grids_o)]
    worst = max(diffs) if diffs else 0.0
    if exact:
        return "same", [], worst
    changed = [first + k for k, d in enumerate(diffs) if d > LUMA_THRESHOLD]
    return ("changed" if changed else "re-encoded"), changed, worst


def _compare_audio(r: dict, o: dict) -> tuple[str | None, float | None]:
    if r.get("audio_sha256") is None and o.get("audio_sha256") is None:
        return None, None
    if r.get("audio_sha256") is None or o.get("audio_sha256") is None:
        return ("extra" if r.get("audio_sha256") is None else "missing"), None
    worst = max(abs(a - b) for a, b in zip(_levels(r["audio_rms"]), _levels(o["audio_rms"]))) / 10.0
    if r["audio_sha256"] == o["audio_sha256"]:
        return "same", worst
    return ("re-encoded" if worst <= AUDIO_DB_THRESHOLD else "changed"), worst


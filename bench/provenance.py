#!/usr/bin/env python
"""Benchmark provenance: what it adds to writing a video and an image, the watermark's cost and robustness, and the
calibration of the thresholds that tell a re-encode from an edit.

    python bench/provenance.py [--quick] [--out bench/results/provenance.json]

* ``video_write``: the sample talking head scaled up (640x480; also 1280x720 without ``--quick``) and looped to
  ``frames`` frames, written with ``facesynth.media.VideoWriter`` (plain) and with ``facesynth.provenance.VideoWriter``
  (watermark every 10th frame while writing; on close the decode-and-hash chain, the C2PA signature, the sidecar).
  ``ratio`` = provenance / plain; the issue's budget is < 2. ``verify_s``: ``verify`` on the result.
* ``image_write``: the astronaut (512x512) through ``media.write_image`` and ``provenance.write_image``.
* ``watermark``: embedding time per frame by size; the astronaut's PSNR and wrong bits (of 64) after JPEG re-saves.
* ``calibration``: the sample's first 60 frames (176x144, as written by VideoWriter) re-encoded (libx264 CRF 12–35,
  ultrafast, mpeg4) and edited in frames 30–45 (red rectangle, another face pasted in, the face of frame 5 pasted
  in, a blur): the largest 16x16 luma-cell change per variant, inside and outside the edited frames, against
  ``LUMA_THRESHOLD``; the same for the audio loudness against ``AUDIO_DB_THRESHOLD`` (AAC re-encodes vs edits).

The signer is made in a temporary config folder (``signer_creation_s``), never in the user's. About 1 minute on 2 CPU
cores with ``--quick``, 3 without.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import git_commit, write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "provenance.json"


def log(msg: str) -> None:
    print(f"[bench/provenance] {msg}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one video size, 120 frames")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-provenance-") as tmp:
        tmp = Path(tmp)
        os.environ["XDG_CONFIG_HOME"] = str(tmp / "config")
        import c2pa
        import imageio_ffmpeg

        from facesynth import __version__
        from facesynth.samples import ensure_samples

        samples = ensure_samples(tmp / "samples")
        from facesynth.provenance.signer import signer_files
        t = time.perf_counter()
        signer_files()
        result = {"benchmark": "provenance", "mode": "quick" if args.quick else "default",
                  "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "commit": git_commit(HERE.parent),
                  "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                              "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
                  "versions": {"facesynth": __version__, "c2pa": c2pa.sdk_version(),
                               "ffmpeg": imageio_ffmpeg.get_ffmpeg_version()},
                  "signer_creation_s": round(time.perf_counter() - t, 3)}
        sizes = [(640, 480)] if args.quick else [(640, 480), (1280, 720)]
        frames = 120 if args.quick else 300
        result["video_write"] = [bench_video(samples, tmp, size, frames) for size in sizes]
        result["image_write"] = bench_image(samples, tmp)
        result["watermark"] = bench_watermark(samples, quick=args.quick)
        result["calibration"] = calibrate(samples, tmp)
    write_result(result, started, args.out, log)
    return 0


def _frames(samples, size: tuple[int, int], n: int):
    import cv2

    from facesynth.media import iter_frames

    base = [cv2.resize(f, size, interpolation=cv2.INTER_CUBIC) for _, f in iter_frames(samples.talking_head)]
    return [base[i % len(base)] for i in range(n)]


def bench_video(samples, tmp: Path, size: tuple[int, int], n: int) -> dict:
    from facesynth import provenance
    from facesynth.media import VideoWriter

    frames = _frames(samples, size, n)
    log(f"video {size[0]}x{size[1]}, {n} frames")
    # warm-up (module loads, the encoder's first start) on a few frames of each path
    with provenance.VideoWriter(tmp / "warm.mp4", 30, provenance=provenance.Provenance("bench")) as w:
        for f in frames[:12]:
            w.write(f)
    t = time.perf_counter()
    with VideoWriter(tmp / "plain.mp4", 30) as w:
        for f in frames:
            w.write(f)
    plain = time.perf_counter() - t
    prov = provenance.Provenance("bench", inputs=[samples.talking_head], parameters={"size": list(size)})
    t = time.perf_counter()
    with provenance.VideoWriter(tmp / "signed.mp4", 30, provenance=prov) as w:
        for f in frames:
            w.write(f)
    signed = time.perf_counter() - t
    t = time.perf_counter()
    report = provenance.verify(tmp / "signed.mp4")
    verify_s = time.perf_counter() - t
    rec = {"size": list(size), "frames": n, "plain_s": round(plain, 2), "provenance_s": round(signed, 2),
           "ratio": round(signed / plain, 3), "within_budget": signed / plain < 2.0,
           "breakdown_s": {k: round(v, 3) for k, v in w.seconds.items()},
           "watermark_ms_per_marked_frame": round(1000 * w.seconds["watermark"] / -(-n // 10), 1),
           "verify_s": round(verify_s, 2), "verify_verdict": report.verdict,
           "watermark_read": report.watermark.to_dict(),
           "sidecar_bytes": w.stamp.sidecar.stat().st_size,
           "file_bytes": {"plain": (tmp / "plain.mp4").stat().st_size, "signed": (tmp / "signed.mp4").stat().st_size}}
    log(f"  plain {rec['plain_s']} s, with provenance {rec['provenance_s']} s (x{rec['ratio']})")
    return rec


def bench_image(samples, tmp: Path) -> dict:
    from facesynth import provenance
    from facesynth.media import read_image, write_image

    img = read_image(samples.astronaut)
    provenance.write_image(tmp / "warm.png", img, provenance.Provenance("bench"))
    out = {}
    for ext in ("png", "jpg"):
        t = time.perf_counter()
        write_image(tmp / f"plain.{ext}", img)
        plain = time.perf_counter() - t
        t = time.perf_counter()
        provenance.write_image(tmp / f"signed.{ext}", img, provenance.Provenance("bench", inputs=[samples.astronaut]))
        signed = time.perf_counter() - t
        out[ext] = {"plain_s": round(plain, 3), "provenance_s": round(signed, 3)}
    return out


def bench_watermark(samples, quick: bool) -> dict:
    import cv2
    from PIL import Image

    from facesynth.media import read_image
    from facesynth.provenance import read_watermark, watermark_frame

    img = read_image(samples.astronaut)
    per_size = {}
    for size in [(352, 288), (640, 480), (1280, 720)] + ([] if quick else [(1920, 1080)]):
        frame = cv2.resize(img, size)
        watermark_frame(frame)
        t = time.perf_counter()
        for _ in range(3):
            watermark_frame(frame)
        per_size[f"{size[0]}x{size[1]}"] = round((time.perf_counter() - t) / 3 * 1000, 1)
    marked = watermark_frame(img)
    psnr = 10 * np.log10(255 ** 2 / np.mean((marked.astype(float) - img) ** 2))
    jpeg = {}
    for q in (95, 90, 80, 70, 60):
        buf = io.BytesIO()
        Image.fromarray(marked).save(buf, "JPEG", quality=q)
        jpeg[f"q{q}"] = read_watermark(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))).bit_errors
    return {"embed_ms_per_frame": per_size, "astronaut_psnr_db": round(float(psnr), 1),
            "astronaut_max_level_change": int(np.abs(marked.astype(int) - img).max()),
            "astronaut_png_bit_errors": read_watermark(marked).bit_errors,
            "astronaut_unmarked_bit_errors": read_watermark(img).bit_errors, "astronaut_jpeg_bit_errors": jpeg}


def calibrate(samples, tmp: Path) -> dict:
    import cv2
    from scipy.io import wavfile

    from facesynth.media import ffmpeg_exe, iter_frames, read_image, write_video
    from facesynth.provenance.chain import (AUDIO_DB_THRESHOLD, LUMA_THRESHOLD, compare_chains, iter_video_planes,
                                            luma_grid, video_chain)

    log("calibration")
    speech = HERE.parent / "tests" / "data" / "wav2lip" / "mel.npz"
    pcm = np.load(speech)["pcm"]
    wavfile.write(tmp / "speech.wav", 16000, pcm)
    frames = [f for i, f in iter_frames(samples.talking_head) if i < 60]
    h, w = frames[0].shape[:2]
    original = tmp / "orig.mp4"
    write_video(original, frames, 29.97, audio=tmp / "speech.wav")
    recorded = video_chain(original)

    def run(*a):
        subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", *a], check=True)

    def grids(path: Path) -> list[np.ndarray]:
        return [np.frombuffer(luma_grid(y), np.uint8).astype(int) for _, _, y in iter_video_planes(path)]

    reference = grids(original)

    def worst(path: Path, edited: range | None) -> dict:
        """Largest luma-cell change per frame inside and outside the edit, and the largest audio loudness change."""
        d = [int(np.abs(a - b).max()) for a, b in zip(reference, grids(path))]
        inside = [d[i] for i in edited] if edited else []
        outside = [d[i] for i in range(len(d)) if not edited or i not in edited]
        audio = [s.max_audio_db_change for s in compare_chains(recorded, video_chain(path))
                 if s.max_audio_db_change is not None]
        return {"edited_min": min(inside) if inside else None, "unedited_max": max(outside),
                "audio_db_max": max(audio) if audio else None}

    video = {}
    for name, args in {"crf12": ["-crf", "12"], "crf23": ["-crf", "23"], "crf28": ["-crf", "28"],
                       "crf35": ["-crf", "35"], "ultrafast_crf23": ["-crf", "23", "-preset", "ultrafast"]}.items():
        run("-i", str(original), "-c:v", "libx264", *args, "-pix_fmt", "yuv420p", "-c:a", "copy", str(tmp / "v.mp4"))
        video[name] = worst(tmp / "v.mp4", None)
    run("-i", str(original), "-c:v", "mpeg4", "-q:v", "5", "-c:a", "copy", str(tmp / "v.mp4"))
    video["mpeg4_q5"] = worst(tmp / "v.mp4", None)
    hopper = read_image(samples.grace_hopper)[100:400, 100:380]
    edits = {
        "rectangle": lambda f, i: cv2.rectangle(f, (w // 3, h // 4), (w // 3 + w // 5, h // 4 + h // 5),
                                                (200, 30, 30), -1),
        "other_face": lambda f, i: f.__setitem__((slice(h // 6, h // 6 + h // 3), slice(w // 3, w // 3 + w // 4)),
                                                  cv2.resize(hopper, (w // 4, h // 3))),
        "face_of_frame_5": lambda f, i: f.__setitem__((slice(h // 4, h // 2), slice(w // 3, 2 * w // 3)),
                                                       frames[5][h // 4:h // 2, w // 3:2 * w // 3]),
        "blur": lambda f, i: f.__setitem__((slice(h // 4, h // 2), slice(w // 3, 2 * w // 3)),
                                           cv2.GaussianBlur(frames[i][h // 4:h // 2, w // 3:2 * w // 3], (9, 9), 3)),
    }
    decoded = [f for _, f in iter_frames(original)]
    for name, edit in edits.items():
        out = [f.copy() for f in decoded]
        for i in range(30, 46):
            edit(out[i], i)
        write_video(tmp / "e.mp4", out, 29.97, audio=original)
        video[name] = worst(tmp / "e.mp4", range(30, 46))
    audio = {}
    for br in ("128k", "64k", "32k"):
        run("-i", str(original), "-c:v", "copy", "-c:a", "aac", "-b:a", br, str(tmp / "a.mp4"))
        audio[f"aac_{br}"] = worst(tmp / "a.mp4", None)["audio_db_max"]
    for name, change in {"silence_1.0-1.5s": lambda x: x * 0, "reversed_1.0-1.5s": lambda x: x[::-1],
                         "minus_6db_1.0-1.5s": lambda x: x * 0.5}.items():
        x = pcm.copy()
        x[16000:24000] = change(x[16000:24000].astype(np.float64)).astype(np.int16)
        wavfile.write(tmp / "e.wav", 16000, x)
        run("-i", str(original), "-i", str(tmp / "e.wav"), "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
            "-b:a", "192k", str(tmp / "a.mp4"))
        audio[name] = worst(tmp / "a.mp4", None)["audio_db_max"]
    reencode_max = max(v["unedited_max"] for k, v in video.items() if k not in edits and k != "crf35")
    edit_min = min(v["edited_min"] for k, v in video.items() if k in edits and k != "blur")
    return {"luma_threshold": LUMA_THRESHOLD, "video": video,
            "luma_margin": {"reencode_max_up_to_crf28": reencode_max, "crf35": video["crf35"]["unedited_max"],
                            "edit_min_except_blur": edit_min,
                            "threshold_over_reencode": round(LUMA_THRESHOLD / max(reencode_max, 1), 2),
                            "edit_over_threshold": round(edit_min / LUMA_THRESHOLD, 2)},
            "audio_db_threshold": AUDIO_DB_THRESHOLD, "audio_db_max": audio}


if __name__ == "__main__":
    sys.exit(main())

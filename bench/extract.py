#!/usr/bin/env python
"""Benchmark face extraction: speed per backend, peak memory, and whether memory stays flat on long videos.

    python bench/extract.py [--out bench/results/extract.json] [--quick | --full] [--device auto|cpu|cuda]

Each measurement runs in a fresh child process (this script re-invoked with ``--child``) so that its peak
resident set (``ru_maxrss``) belongs to that measurement alone. Results go to stdout and ``--out`` as JSON.

* backends: every backend ``available_backends()`` lists (dlib also as ``model="cnn"``) extracts the sample
  talking head (176x144, 120 frames). ``fps`` is the whole ``extract_faces`` call (detect, landmarks,
  align, masks, scores, PNG writes) after a one-image warm-up, with the backend built beforehand (its load
  time is ``backend_load_s``); ``detect_fps`` is ``backend.detect`` alone over the decoded frames.
* streaming: the sample scaled to 720p (1080p with ``--full``), letterboxed, looped to 10x its length;
  peak RSS extracting a short vs a long copy. ``memory_flat``: long peak < 1.25 x short peak.

``--device`` is where the backends run (``pick_device``: the FAN backend uses it; dlib here is CPU-only).

Default run: about 3 minutes on 2 CPU cores; ``--quick`` about 1 minute; ``--full`` is much longer.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from _common import current_rss_mib as _current_rss_mib, peak_rss_mib as _peak_rss_mib, run_child as _run_child, git_commit, write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "extract.json"
FLAT_TOLERANCE = 0.25          # long-video peak may exceed the short one by this fraction

# per mode: CNN limits on the 120-frame sample; streaming-check video size, lengths and sampling
MODES = {
    "quick": {"cnn_fps": 5.0, "cnn_detect_max": None, "stream_size": (1280, 720), "stream_frames": (60, 600),
              "stream_fps": 5.0},
    "default": {"cnn_fps": None, "cnn_detect_max": 40, "stream_size": (1280, 720), "stream_frames": (120, 1200),
                "stream_fps": 10.0},
    "full": {"cnn_fps": None, "cnn_detect_max": None, "stream_size": (1920, 1080), "stream_frames": (120, 1200),
             "stream_fps": None},
}


def log(msg: str) -> None:
    print(f"[bench/extract] {msg}", file=sys.stderr, flush=True)






# ---------------------------------------------------------------------------------------------- child side

def child_backend(spec: dict) -> dict:
    """Speed + peak memory of one backend configuration on one video."""
    from facesynth.extract import extract_faces
    from facesynth.extract.backends import create_backend
    from facesynth.media import iter_frames, probe

    tmp = Path(spec["tmp"])
    t = time.perf_counter()
    backend = create_backend(spec["detector"], device=spec.get("device", "auto"), **spec["options"])
    load_s = time.perf_counter() - t

    # warm-up: one still image through the whole pipeline (first-call costs of PIL, masks, dlib, ...)
    t = time.perf_counter()
    extract_faces(spec["warmup_image"], tmp / "warmup", detector=backend, progress=False)
    warmup_s = time.perf_counter() - t
    shutil.rmtree(tmp / "warmup", ignore_errors=True)

    rss_before = _current_rss_mib()
    peak_before = _peak_rss_mib()
    out = tmp / "faces"
    t = time.perf_counter()
    fs = extract_faces(spec["source"], out, fps=spec["fps"], detector=backend, progress=False)
    seconds = time.perf_counter() - t
    peak = _peak_rss_mib()            # read before the detect-only pass below
    frames = int(fs.settings["frames_read"])
    rec = {
        "source_frames": probe(spec["source"]).frame_count, "frames": frames, "sampling_fps": spec["fps"],
        "seconds": round(seconds, 3), "fps": round(frames / seconds, 2),
        "faces_found": len(fs), "frames_with_face": int(fs.settings["frames_with_face"]),
        "backend_load_s": round(load_s, 3), "warmup_s": round(warmup_s, 3),
        "rss_before_extract_mib": rss_before, "peak_rss_before_extract_mib": peak_before, "peak_rss_mib": peak,
    }
    shutil.rmtree(out, ignore_errors=True)

    # detection only: backend.detect over the same (sampled) frames, streamed, timing only detect itself
    limit = spec["detect_max"]
    n = found = 0
    det_s = 0.0
    batch: list = []

    def run(b: list) -> None:
        nonlocal n, found, det_s
        t0 = time.perf_counter()
        res = backend.detect(b)
        det_s += time.perf_counter() - t0
        n += len(b)
        found += sum(1 for r in res if r)

    for _, frame in iter_frames(spec["source"], fps=spec["fps"]):
        if limit is not None and n + len(batch) >= limit:
            break
        batch.append(frame)
        if len(batch) >= max(1, backend.batch_size):
            run(batch)
            batch = []
    if batch:
        run(batch)
    rec.update(detect_frames=n, detect_frames_limit=limit, detect_seconds=round(det_s, 3),
               detect_fps=round(n / det_s, 2) if det_s else None, detect_frames_with_face=found)
    if rec["detect_fps"]:
        # share of the extract call spent detecting (detect runs once per sampled frame in pass 1)
        rec["detect_share_of_extract"] = round(min(1.0, frames / rec["detect_fps"] / seconds), 3)
    rec["peak_rss_after_detect_only_mib"] = _peak_rss_mib()
    return rec


def child_stream(spec: dict) -> dict:
    """Peak memory of extracting one (long or short) large video."""
    from facesynth.extract import extract_faces
    from facesynth.extract.backends import create_backend
    from facesynth.media import probe

    tmp = Path(spec["tmp"])
    backend = create_backend(spec["detector"], device=spec.get("device", "auto"), **spec["options"])
    rss_before = _current_rss_mib()
    info = probe(spec["source"])
    t = time.perf_counter()
    fs = extract_faces(spec["source"], tmp / "faces", fps=spec["fps"], detector=backend, progress=False)
    seconds = time.perf_counter() - t
    rec = {
        "source_frames": info.frame_count, "width": info.width, "height": info.height,
        "frames_decoded": 2 * info.frame_count,   # two streaming passes over the video
        "frames_sampled": int(fs.settings["frames_read"]), "sampling_fps": spec["fps"],
        "faces_found": len(fs), "seconds": round(seconds, 2),
        "rss_before_extract_mib": rss_before, "peak_rss_mib": _peak_rss_mib(),
    }
    shutil.rmtree(tmp / "faces", ignore_errors=True)
    return rec


def child_main(spec_json: str) -> int:
    import warnings
    spec = json.loads(spec_json)
    warnings.simplefilter("ignore")   # keep the child's output to its one JSON result
    rec = child_backend(spec) if spec["kind"] == "backend" else child_stream(spec)
    Path(spec["result"]).write_text(json.dumps(rec))
    return 0


# --------------------------------------------------------------------------------------------- parent side

def run_child(spec: dict, tmp: Path, name: str) -> dict:
    return _run_child(__file__, spec, tmp, name, log)


def machine_info(device: str = "auto") -> dict:
    import numpy
    import torch
    import facesynth
    from facesynth.gpu import pick_device

    info = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor() or None,
        "python": platform.python_version(), "numpy": numpy.__version__, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "facesynth": facesynth.__version__,
        "device": str(pick_device(device)),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    try:
        import dlib
        info["dlib"] = dlib.__version__
        info["dlib_cuda"] = bool(getattr(dlib, "DLIB_USE_CUDA", False))
    except ImportError:
        info["dlib"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    info["git_commit"] = git_commit(HERE)
    return info


def skip_reason(name: str) -> str:
    """Why a registered backend cannot run here (for the JSON)."""
    if name == "fan":
        try:
            import face_alignment  # noqa: F401
        except ImportError:
            return "the face-alignment package is not installed"
        from facesynth.weights import find, search_dirs
        missing = [w for w in ("s3fd", "2dfan4") if find(w) is None]
        if missing:
            where = ", ".join(str(d) for d in search_dirs())
            return f"weights not present ({', '.join(missing)}); looked in {where}"
    from facesynth.extract.backends import _backend_class
    try:
        _backend_class(name)
    except ImportError as e:
        return f"cannot import: {e}"
    return "is_available() is False"


def make_video(src: Path, dest: Path, size: tuple[int, int], frames: int) -> None:
    """The sample scaled to fit ``size`` (aspect kept, letterboxed) and looped to ``frames`` frames."""
    from facesynth.media import ffmpeg_exe, probe

    w, h = size
    loops = max(0, math.ceil(frames / max(1, probe(src).frame_count)) - 1)
    cmd = [ffmpeg_exe(), "-y", "-hide_banner", "-nostdin", "-loglevel", "error", "-stream_loop", str(loops),
           "-i", str(src), "-vf", f"scale=-2:{h}:flags=bicubic,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2",
           "-frames:v", str(frames), "-an", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "20",
           "-pix_fmt", "yuv420p", str(dest)]
    subprocess.run(cmd, check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file to write (default {DEFAULT_OUT})")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="sampled CNN and a shorter streaming check (~1 min)")
    size.add_argument("--full", action="store_true", help="every frame everywhere and a 1080p streaming check")
    ap.add_argument("--device", default="auto", help="auto (pick_device), cpu, cuda: where the backends run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        return child_main(args.child)

    from facesynth.extract.backends import BACKENDS, available_backends
    from facesynth.media import iter_frames, write_image
    from facesynth.samples import ensure_samples

    mode = "quick" if args.quick else "full" if args.full else "default"
    cfg = MODES[mode]
    started = time.perf_counter()
    result: dict = {
        "benchmark": "extract", "mode": mode,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(args.device),
        "notes": [
            "fps: frames through the whole extract_faces call (detect + landmarks + align + masks + scores + "
            "PNG writes, two decoding passes), after a one-image warm-up; the backend is built beforehand "
            "and its load time is backend_load_s",
            "detect_fps: backend.detect alone over the same frames (decoding not timed)",
            "peak_rss_mib: ru_maxrss of a fresh child process per configuration, read right after "
            "extract_faces; it includes the interpreter, torch and the models (rss_before_extract_mib); "
            "the ffmpeg decoder runs as its own process and is not counted",
        ],
    }
    samples = ensure_samples()
    video = samples.talking_head
    tmp = Path(tempfile.mkdtemp(prefix="facesynth-bench-extract-"))
    failed = False
    try:
        # --- backends on the sample talking head
        warmup = tmp / "warmup.png"
        write_image(warmup, next(iter(iter_frames(video)))[1])
        available = available_backends()
        configs: list[tuple[str, str, dict, float | None, int | None]] = []
        for name in available:
            configs.append((name if name != "dlib" else "dlib-hog", name, {}, None, None))
            if name == "dlib":
                configs.append(("dlib-cnn", "dlib", {"model": "cnn"}, cfg["cnn_fps"], cfg["cnn_detect_max"]))
        records = []
        for label, name, options, fps, detect_max in configs:
            log(f"{label}: extracting {video.name} in a child process ...")
            spec = {"kind": "backend", "detector": name, "device": args.device, "options": options,
                    "source": str(video), "warmup_image": str(warmup), "fps": fps, "detect_max": detect_max}
            rec = {"config": label, "backend": name, "options": options, "source": str(video),
                   **run_child(spec, tmp, label)}
            if label == "dlib-cnn" and (fps is not None or detect_max is not None):
                rec["limited"] = ("CNN on CPU is slow: " + (f"extract_faces sampled at fps={fps}; " if fps else "")
                                  + (f"detect-only over the first {detect_max} frames" if detect_max
                                     else "detect-only over the same sampled frames"))
            failed |= "error" in rec
            log(f"{label}: {rec.get('fps')} fps extract, {rec.get('detect_fps')} fps detect, "
                f"peak {rec.get('peak_rss_mib')} MiB")
            records.append(rec)
        for name in BACKENDS:
            if name not in available:
                records.append({"config": name, "backend": name, "skipped": True, "reason": skip_reason(name)})
                log(f"{name}: skipped ({records[-1]['reason']})")
        result["configs"] = records

        # --- streaming check: short vs long large video
        (w, h), (n_short, n_long) = cfg["stream_size"], cfg["stream_frames"]
        detector = "dlib" if "dlib" in available else (available[0] if available else None)
        stream: dict = {"width": w, "height": h, "detector": detector, "options": {},
                        "sampling_fps": cfg["stream_fps"],
                        "video": f"sample scaled to {h}p (aspect kept, letterboxed), looped; H.264 ultrafast"}
        if detector is None:
            stream.update(skipped=True, reason="no backend available")
        else:
            t = time.perf_counter()
            paths = {"short": tmp / "short.mp4", "long": tmp / "long.mp4"}
            make_video(video, paths["short"], (w, h), n_short)
            make_video(video, paths["long"], (w, h), n_long)
            stream["make_videos_s"] = round(time.perf_counter() - t, 2)
            for key in ("short", "long"):
                log(f"streaming: {key} video ({w}x{h}) in a child process ...")
                spec = {"kind": "stream", "detector": detector, "device": args.device, "options": {},
                        "source": str(paths[key]),
                        "fps": cfg["stream_fps"]}
                stream[key] = run_child(spec, tmp, f"stream-{key}")
                failed |= "error" in stream[key]
                paths[key].unlink(missing_ok=True)
            if "error" not in stream["short"] and "error" not in stream["long"]:
                short, long = stream["short"]["peak_rss_mib"], stream["long"]["peak_rss_mib"]
                frame_bytes = w * h * 3
                n_frames = stream["long"]["source_frames"]
                base_s = stream["short"]["rss_before_extract_mib"] or 0.0
                base_l = stream["long"]["rss_before_extract_mib"] or 0.0
                extra_faces = stream["long"]["faces_found"] - stream["short"]["faces_found"]
                stream.update(
                    peak_ratio_long_to_short=round(long / short, 3),
                    peak_growth_mib=round(long - short, 1),
                    extract_increment_mib={"short": round(short - base_s, 1), "long": round(long - base_l, 1)},
                    peak_growth_per_extra_face_kib=round((long - short) * 1024 / extra_faces, 1) if extra_faces > 0
                    else None,
                    raw_frame_bytes=frame_bytes,
                    raw_long_video_mib=round(frame_bytes * n_frames / 2**20, 1),
                    memory_flat=bool(long < short * (1 + FLAT_TOLERANCE)),
                    criterion=f"memory_flat = long peak_rss_mib < short peak_rss_mib x {1 + FLAT_TOLERANCE} "
                              f"(long video has {n_frames / stream['short']['source_frames']:.0f}x the frames)",
                )
                log(f"streaming: peak {short} MiB short vs {long} MiB long (x{stream['peak_ratio_long_to_short']}); "
                    f"holding the long video whole would take {stream['raw_long_video_mib']} MiB; "
                    f"memory_flat={stream['memory_flat']}")
                if not stream["memory_flat"]:
                    log("WARNING: peak memory grows with video length: extraction is not streaming")
        result["streaming"] = stream
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_result(result, started, args.out, log)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

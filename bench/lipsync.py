#!/usr/bin/env python
"""Benchmark lip sync (Wav2Lip): the network at batch 32 (the default) and 128 against the official per-batch loop,
and the whole ``lipsync`` pipeline, with peak memory and a streaming check.

    python bench/lipsync.py [--quick] [--frames N] [--device auto|cpu|cuda] [--threads N] [--bf16] [--compile]
                            [--out bench/results/lipsync.json]

The Wav2Lip generator with seeded random weights (``randomize_``; speed does not depend on the values), loaded
through an official-layout checkpoint dict. Faces: the astronaut's face box resized to 96x96 (BGR); mel windows
from a 2-second test sound, cycled. Device: ``pick_device()`` (or ``--device``).

* ``official_loop``: the official ``inference.py`` per-batch work written with our modules: the plain network
  (BatchNorm unfused, NCHW), batch 128 (its ``wav2lip_batch_size``), the batch built as the official ``datagen``
  does (mask, concatenate, ``/255.`` in float64, transposed to NCHW), ``torch.no_grad``, the output taken to
  numpy HWC ``* 255``, truncated to uint8 and resized/pasted into a copy of the frame by cv2, with the official
  op sequence (``set_fast_inference(False)``: no folded BatchNorm, no Winograd). It is a rewrite of the official loop
  with the official op sequence, not the official code (which was timed side by side in a scratch folder outside
  the project: README, "Lip sync").
* ``network-bB``: ``InferenceWav2Lip`` (BatchNorm folded, inference mode; on a CPU in fp32 NCHW with the large
  decoder stages frame by frame on NNPACK, ``Wav2Lip.decode``; channels-last otherwise) at batch B, the same
  batch building and paste (``face_batch``, ``paste_prediction``). Each such child also times the official loop
  right after, in the same process (``paired_official``), so ``speedup_vs_official`` compares both under the
  same machine load. ``--bf16`` adds a bfloat16-autocast record; on a GPU fp16 and bf16 at batch 128 are always
  measured (``network-b128-fp16``, ``-bf16``), and fp16 with ``compile=True`` (``network-b128-fp16-compiled``:
  ``torch.compile`` with CUDA graphs; ``warmup_s`` is its compilation and graph recording, two batches before
  timing); ``--compile`` adds a compiled record in the default precision on a CPU too. The fp32 child at the
  default batch also profiles the network step (``profile``): torch.profiler's top ops by self time (on one torch
  thread), GFLOP per frame of the direct convolutions and the direct-equivalent GFLOP/s beside a 2048x2048 fp32
  matmul's; printed too.
* ``pipeline``: ``lipsync()`` end to end on the astronaut portrait (dlib detection, mel, network, paste,
  H.264 + AAC writing) with a test sound of ``--frames`` / 25 seconds: output frames / wall seconds.
* ``streaming``: ``lipsync()`` on the sample talking head scaled to 720p and looped to N and 4N frames, sounds as long,
  fixed box: peak RSS of each child; ``memory_flat`` when the long run's peak is within 64 MiB of the short one
  (holding the extra frames would cost ``holding_extra_frames_would_cost_mib``).
* Memory: every configuration runs in a fresh child process (``--child``), ``peak_rss_mib`` is its
  ``ru_maxrss``; on CUDA also ``gpu_peak_allocated_mib``.

``--quick``: 128 frames per network measurement, a 2-second sound for the pipeline; about 3-4 minutes on two
idle CPU cores. The target (issue 6): at least 2x the official loop's frames/s on the same CPU (the official
network runs at about 8-10 frames/s on 2 cores).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import (current_rss_mib, format_top_ops, git_commit, matmul_gflops, peak_rss_mib,  # noqa: E402
                     run_child as _run_child, top_ops, write_result)

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "lipsync.json"
MIB = 1024 ** 2
OFFICIAL_BATCH = 128
FACE_BOX = (76, 176, 175, 265)       # y1, y2, x1, x2 of the astronaut's face with the official pads (dlib box)
ALLOCATOR_SLACK_MIB = 64.0
STREAM_BOX = [50, 620, 350, 950]     # y1, y2, x1, x2 of the face in the 720p streaming video
TARGET = {"speedup_vs_official_loop": 2.0,
          "what": "the network step at least 2x the official per-batch loop's frames/s on the same CPU "
                  "(the official network: about 8-10 frames/s on 2 cores)"}


def log(msg: str) -> None:
    print(f"[bench/lipsync] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- child side

def _inputs(portrait: str, frames: int):
    import numpy as np

    from facesynth.lipsync import chunk_starts, melspectrogram
    from facesynth.lipsync.pipeline import _crop96
    from facesynth.media import read_image

    image = read_image(portrait)
    crop = _crop96(image, FACE_BOX)
    mel = melspectrogram(_test_sound(2.0))
    starts = np.resize(chunk_starts(mel.shape[1], 25), frames)
    return image, crop, mel, starts


def _test_sound(seconds: float):
    from facesynth.lipsync.audio import synthetic_speech

    return synthetic_speech(seconds)


def official_loop(net, image, crop, mel, starts, device) -> int:
    """The official per-batch work (see the module docstring) with the official op sequence (every ConvBlock's
    inference path off: no folded BatchNorm, no Winograd); returns frames done."""
    from facesynth.lipsync.model import set_fast_inference

    set_fast_inference(net, False)
    try:
        return _official_loop(net, image, crop, mel, starts, device)
    finally:
        set_fast_inference(net, True)


def _official_loop(net, image, crop, mel, starts, device) -> int:
    import cv2
    import numpy as np
    import torch

    y1, y2, x1, x2 = FACE_BOX
    done = 0
    for first in range(0, len(starts), OFFICIAL_BATCH):
        s = starts[first:first + OFFICIAL_BATCH]
        img_batch = np.asarray([crop] * len(s))
        mel_batch = np.asarray([mel[:, k:k + 16] for k in s])
        img_masked = img_batch.copy()
        img_masked[:, 48:] = 0
        img_batch = np.concatenate((img_masked, img_batch), axis=3) / 255.
        mel_batch = np.reshape(mel_batch, [len(mel_batch), mel_batch.shape[1], mel_batch.shape[2], 1])
        img_t = torch.FloatTensor(np.transpose(img_batch, (0, 3, 1, 2))).to(device)
        mel_t = torch.FloatTensor(np.transpose(mel_batch, (0, 3, 1, 2))).to(device)
        with torch.no_grad():
            pred = net(mel_t, img_t)
        pred = pred.cpu().numpy().transpose(0, 2, 3, 1) * 255.
        for p in pred:
            f = image.copy()
            f[y1:y2, x1:x2] = cv2.resize(p.astype(np.uint8), (x2 - x1, y2 - y1))
            done += 1
    return done


def our_loop(fast, image, crop, mel, starts, batch) -> int:
    from facesynth.lipsync import face_batch, mel_windows, paste_prediction

    done = 0
    for first in range(0, len(starts), batch):
        s = starts[first:first + batch]
        pred = fast(mel_windows(mel, s), face_batch([crop] * len(s)))
        for p in pred:
            paste_prediction(image, p, FACE_BOX)
            done += 1
    return done


def _profile(fast, image, crop, mel, starts, batch, device) -> dict:
    """Where the network step's time goes: torch.profiler's top ops by self time over one pass of the frames (on
    a CPU with one torch thread, so that the decoder's per-frame work runs on the profiled thread: the profiler
    does not see the frame workers' threads), GFLOP per frame of the direct convolutions (FlopCounterMode, counted
    with the inference paths off: it sees neither inside NNPACK's op nor the frame workers' threads) and the
    direct-equivalent GFLOP/s, beside a 2048x2048 fp32 matmul's GFLOP/s (the peak)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from facesynth.lipsync import face_batch, mel_windows
    from facesynth.lipsync.model import set_fast_inference

    m = min(len(starts), 4 * batch)
    counter = FlopCounterMode(display=False)
    set_fast_inference(fast.net, False)
    try:
        with counter:
            fast(mel_windows(mel, starts[:batch]), face_batch([crop] * batch))
    finally:
        set_fast_inference(fast.net, True)
    t = time.perf_counter()
    our_loop(fast, image, crop, mel, starts[:m], batch)
    seconds = time.perf_counter() - t
    gflop = counter.get_total_flops() / batch / 1e9
    threads = torch.get_num_threads()
    profile_threads = 1 if torch.device(device).type == "cpu" else threads
    torch.set_num_threads(profile_threads)
    try:
        ops = top_ops(lambda: our_loop(fast, image, crop, mel, starts[:m], batch))
    finally:
        torch.set_num_threads(threads)
    return {"batch": batch, "frames": m, "s_per_frame": round(seconds / m, 4), "gflop_per_frame": round(gflop, 2),
            "gflops": round(gflop * m / seconds, 1), "matmul_2048_fp32_gflops": matmul_gflops(device),
            "top_ops": ops, "top_ops_threads": profile_threads}


def child_main(spec_json: str) -> int:
    import warnings
    warnings.simplefilter("ignore")
    spec = json.loads(spec_json)
    import torch

    from facesynth.gpu import pick_device
    from facesynth.lipsync import InferenceWav2Lip, Wav2Lip, lipsync, official_checkpoint, randomize_
    from facesynth.lipsync.checkpoint import load_wav2lip

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = pick_device(spec["device"])
    cuda = device.type == "cuda"
    rec: dict = {"torch_threads": torch.get_num_threads()}

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def timed(fn) -> tuple[float, float]:
        sync()
        t, cpu0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        seconds = time.perf_counter() - t
        return seconds, (time.process_time() - cpu0) / seconds

    def per_cpu(frames: int, seconds: float, util: float) -> float | None:
        # frames per CPU-second of this process: robust to neighbours taking the cores (CPU only)
        return None if cuda else round(frames / (seconds * util), 2)

    t = time.perf_counter()
    net = load_wav2lip(official_checkpoint(randomize_(Wav2Lip(), 0)), device=device)
    rec["model_build_s"] = round(time.perf_counter() - t, 2)
    kind = spec["kind"]
    if kind in ("official", "network"):
        image, crop, mel, starts = _inputs(spec["portrait"], spec["frames"])
        n = len(starts)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        rec["rss_before_mib"] = current_rss_mib()
        if kind == "official":
            official_loop(net, image, crop, mel, starts[:16], device)           # warm-up
            seconds, util = timed(lambda: official_loop(net, image, crop, mel, starts, device))
            rec.update(batch=OFFICIAL_BATCH)
        else:
            compile_ = bool(spec.get("compile"))
            fast = InferenceWav2Lip(net, device=device, precision=spec.get("precision", "fp32"), compile=compile_)
            batch = spec["batch"]
            t = time.perf_counter()
            # warm-up; compiled: two whole batches (the compilation, then the CUDA graphs' recording)
            our_loop(fast, image, crop, mel, starts[:2 * batch] if compile_ else starts[:min(batch, 16)], batch)
            sync()
            rec["warmup_s"] = round(time.perf_counter() - t, 2)
            seconds, util = timed(lambda: our_loop(fast, image, crop, mel, starts, batch))
            rec.update(batch=batch, precision=fast.precision, compiled=compile_)
        rec.update(frames=n, seconds=round(seconds, 2), fps=round(n / seconds, 2), cpu_utilisation=round(util, 2),
                   fps_per_cpu_second=per_cpu(n, seconds, util), peak_rss_mib=peak_rss_mib())
        if cuda:
            rec["gpu_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / MIB, 1)
        if kind == "network" and spec.get("profile"):
            rec["profile"] = _profile(fast, image, crop, mel, starts, batch, device)
        if kind == "network" and spec.get("paired"):
            m = min(n, spec["paired"])
            seconds, util = timed(lambda: official_loop(net, image, crop, mel, starts[:m], device))
            rec["paired_official"] = {"frames": m, "batch": OFFICIAL_BATCH, "fps": round(m / seconds, 2),
                                      "cpu_utilisation": round(util, 2),
                                      "fps_per_cpu_second": per_cpu(m, seconds, util)}
            rec["speedup_vs_official"] = round(rec["fps"] / rec["paired_official"]["fps"], 2)
            if not cuda:
                rec["speedup_vs_official_per_cpu_second"] = round(
                    rec["fps_per_cpu_second"] / rec["paired_official"]["fps_per_cpu_second"], 2)
    else:   # "pipeline" or "stream": lipsync() end to end
        from facesynth.media import write_wav

        tmp = Path(spec["tmp"])
        sound = write_wav(tmp / "sound.wav", _test_sound(spec["seconds"]), 16000)
        face = spec["face"]
        rec["rss_before_mib"] = current_rss_mib()
        options = {"detector": "dlib"} if kind == "pipeline" else {"box": spec["box"]}
        out = tmp / "out.mp4"
        seconds, util = timed(lambda: lipsync(face, sound, out, checkpoint=net, fps=25, progress=False,
                                              device=spec["device"], **options))
        from facesynth.media import iter_frames
        frames = sum(1 for _ in iter_frames(out))
        rec.update(frames=frames, sound_seconds=spec["seconds"], seconds=round(seconds, 2),
                   fps=round(frames / seconds, 2), cpu_utilisation=round(util, 2),
                   fps_per_cpu_second=per_cpu(frames, seconds, util), peak_rss_mib=peak_rss_mib())
    Path(spec["result"]).write_text(json.dumps(rec))
    return 0


# --------------------------------------------------------------------------------------------- parent side

def machine_info(device) -> dict:
    import numpy
    import torch

    import facesynth

    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "numpy": numpy.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "facesynth": facesynth.__version__, "device": str(device), "git_commit": git_commit(HERE),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _loop_video(src: Path, dest: Path, frames: int) -> Path:
    """The sample talking head scaled to 1280x720 (letterboxed) and looped to ``frames`` frames at 25 fps."""
    import cv2
    import numpy as np

    from facesynth.media import VideoWriter, iter_frames

    with VideoWriter(dest, fps=25, preset="ultrafast") as writer:
        written = 0
        while written < frames:
            for _, frame in iter_frames(src):
                if written == frames:
                    break
                canvas = np.zeros((720, 1280, 3), np.uint8)
                canvas[:, 200:1080] = cv2.resize(frame, (880, 720))
                writer.write(canvas)
                written += 1
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, help="frames per network measurement (default 256; --quick 128)")
    ap.add_argument("--quick", action="store_true", help="fewer frames, a 2 s sound (~3-4 min on 2 CPU cores)")
    ap.add_argument("--device", default="auto", help="auto (pick_device), cpu, cuda, ...")
    ap.add_argument("--threads", type=int, help="torch threads in each child (default: torch's)")
    ap.add_argument("--bf16", action="store_true", help="also measure bfloat16 autocast at the default batch")
    ap.add_argument("--compile", action="store_true",
                    help="on a CPU also measure compile=True (torch.compile) at the default batch (always on a GPU)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file to write (default {DEFAULT_OUT})")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        return child_main(args.child)

    from facesynth.gpu import pick_device
    from facesynth.lipsync.pipeline import DEFAULT_BATCH_SIZE as batch_default
    from facesynth.samples import ensure_samples

    device = pick_device(args.device)
    n = args.frames or (128 if args.quick else 256)
    started = time.perf_counter()
    result: dict = {
        "benchmark": "lipsync", "mode": "quick" if args.quick else "default", "network": "Wav2Lip (random weights)",
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(device),
        "notes": ["official_loop: the official inference.py per-batch work (datagen batch, plain network at batch "
                  "128, numpy *255 uint8 truncation, cv2 resize + paste) rewritten with our modules and the official "
                  "op sequence (BatchNorm unfused, NCHW, no Winograd); not the official code itself",
                  "network-bB: InferenceWav2Lip (BatchNorm folded; CPU fp32: NCHW, large decoder stages frame by "
                  "frame on NNPACK; else channels-last) + face_batch + paste_prediction",
                  "speedup_vs_official: fps / paired_official fps, timed in the same child right after",
                  "pipeline: lipsync() end to end (dlib detection, mel, network, paste, H.264+AAC writing)",
                  "peak_rss_mib: ru_maxrss of a fresh child per configuration; timings on a shared machine are "
                  "noisy: see load averages and cpu_utilisation; fps_per_cpu_second = frames / CPU seconds of "
                  "the child (CPU only), which neighbours taking the cores do not change"]}
    tmp = Path(tempfile.mkdtemp(prefix="facesynth-bench-lipsync-"))
    failed = False

    def child(spec: dict, name: str) -> dict:
        nonlocal failed
        rec = _run_child(__file__, {"device": str(device), "threads": args.threads, **spec}, tmp, name, log)
        failed |= "error" in rec
        return rec

    try:
        samples = ensure_samples()
        portrait = str(samples.root / "portraits" / "astronaut.png")
        base = {"portrait": portrait, "frames": n}
        log(f"official loop, batch {OFFICIAL_BATCH}, {n} frames ...")
        configs = [{"name": "official_loop", **child({**base, "kind": "official"}, "official")}]
        runs = [(batch_default, "fp32"), (128, "fp32")] + ([(batch_default, "bf16")] if args.bf16 else [])
        if device.type == "cuda":          # both half precisions at the official batch (InferenceWav2Lip)
            runs += [(128, "fp16")] + ([] if args.bf16 else [(128, "bf16")]) + [(128, "fp16-compiled")]
        elif args.compile:
            runs.append((batch_default, "fp32-compiled"))
        for batch, variant in runs:
            precision, _, compiled = variant.partition("-")
            name = f"network-b{batch}" + ("" if variant == "fp32" else f"-{variant}")
            log(f"{name}, {n} frames (+ the official loop on {min(n, 128)} frames, paired) ...")
            rec = child({**base, "kind": "network", "batch": batch, "precision": precision, "paired": 128,
                         "compile": bool(compiled), "profile": batch == batch_default and variant == "fp32"}, name)
            configs.append({"name": name, **rec})
            log(f"{name}: {rec.get('fps')} fps (x{rec.get('speedup_vs_official')} vs paired official), "
                f"peak {rec.get('peak_rss_mib')} MiB")
            if "profile" in rec:
                pr = rec["profile"]
                log(f"profile: {pr['gflop_per_frame']} GFLOP/frame at {pr['gflops']} GFLOP/s (a 2048x2048 fp32 "
                    f"matmul: {pr['matmul_2048_fp32_gflops']} GFLOP/s); top ops: {format_top_ops(pr['top_ops'])}")
        result["configs"] = configs

        seconds = 2.0 if args.quick else 8.0
        log(f"pipeline: lipsync() on the portrait with a {seconds:g} s sound ...")
        result["pipeline"] = child({"kind": "pipeline", "face": portrait, "seconds": seconds}, "pipeline")

        short = 48 if args.quick else 100
        stream: dict = {"face": "sample talking head at 1280x720, looped, 25 fps, fixed box; sound as long"}
        for key, frames in (("short", short), ("long", 4 * short)):
            video = _loop_video(samples.talking_head, tmp / f"{key}.mp4", frames)
            log(f"streaming: {key} ({frames} frames) ...")
            stream[key] = child({"kind": "stream", "face": str(video), "seconds": frames / 25,
                                 "box": STREAM_BOX}, f"stream-{key}")
        if "error" not in stream["short"] and "error" not in stream["long"]:
            growth = stream["long"]["peak_rss_mib"] - stream["short"]["peak_rss_mib"]
            extra = stream["long"]["frames"] - stream["short"]["frames"]
            stream.update(peak_growth_mib=round(growth, 1),
                          holding_extra_frames_would_cost_mib=round(extra * 720 * 1280 * 3 / MIB, 1),
                          memory_flat=bool(growth < ALLOCATOR_SLACK_MIB))
        result["streaming"] = stream

        fast_rec = next((c for c in configs if c["name"] == f"network-b{batch_default}"), {})
        official = next((c for c in configs if c["name"] == "official_loop"), {})
        target = dict(TARGET)
        target["measured_speedup_paired"] = fast_rec.get("speedup_vs_official")
        if fast_rec.get("fps") and official.get("fps"):
            target["measured_speedup_separate_children"] = round(fast_rec["fps"] / official["fps"], 2)
        target["met"] = bool(target["measured_speedup_paired"] and target["measured_speedup_paired"] >= 2.0)
        result["summary"] = {"fps": {c["name"]: c.get("fps") for c in configs},
                             "peak_rss_mib": {c["name"]: c.get("peak_rss_mib") for c in configs},
                             "pipeline_fps": result["pipeline"].get("fps"),
                             "memory_flat": stream.get("memory_flat"), "target": target}
        if device.type == "cpu":
            target["measured_speedup_per_cpu_second"] = fast_rec.get("speedup_vs_official_per_cpu_second")
            target["met"] = bool((target["measured_speedup_per_cpu_second"] or 0) >= 2.0)
            bf = next((c for c in configs if c["name"] == f"network-b{batch_default}-bf16"), {})
            if bf:
                target["bf16_speedup_paired"] = bf.get("speedup_vs_official")
                target["bf16_speedup_per_cpu_second"] = bf.get("speedup_vs_official_per_cpu_second")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_result(result, started, args.out, log)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

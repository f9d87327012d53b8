"""``facesynth demo``: the whole face-swap pipeline on the embedded real sample media."""
from __future__ import annotations

import json
from pathlib import Path

from facesynth.cli.common import add_provenance_flag, gallery, loss_summary, provenance_arg, provenance_note

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
    add_provenance_flag(p)


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
        gallery_png = out / f"gallery_{name}.png"
        gallery(fs, gallery_png, title=f"face set {name}: {label}, {len(fs)} faces")
        s = fs.settings
        print(f"face set {name}: {len(fs)} faces from {s['frames_with_face']}/{s['frames_read']} frames of "
              f"{label} → {fs.root}; gallery → {gallery_png}")
        summary[name] = {"faces": len(fs), "frames_read": s["frames_read"], "detector": s["detector"],
                         "faceset": str(fs.root), "gallery": str(gallery_png), "source": str(source)}
    if args.swap_iterations > 0:
        summary["swap"] = _demo_swap(out, samples.talking_head, args.swap_iterations, args.detector,
                                     provenance_arg(args))
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    print(f"summary → {out / 'demo.json'}")
    return 0


def _demo_swap(out: Path, video: Path, iterations: int, detector: str, provenance: bool | None) -> dict:
    """Quick preset on A/B, prune A's worst 10 % by loss at 3/4 (the study's finding), convert A → B, evaluate."""
    import shutil
    import time

    import matplotlib.pyplot as plt

    from facesynth.evaluate import evaluate_swap, format_table, write_report
    from facesynth.evaluate.report import SUMMARY_KEYS
    from facesynth.notebook import LivePlot, before_after, swap_preview
    from facesynth.provenance import sidecar_path
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
    print(f"swap: trained {prune_at} iterations ({time.time() - start:.0f} s); {loss_summary(workdir)}")
    pruned = prune(out / "A", worst_loss=0.1)
    trainer.reload_faces()
    print(f"pruned A's worst 10 % by loss: {len(pruned)} faces {pruned}")
    trainer.train(iterations, callbacks=[plot])
    train_s = time.time() - start
    fig = swap_preview(trainer.preview(), title=f"quick preset, {iterations} iterations ({train_s / 60:.1f} min "
                                                f"on this machine)", path=out / "preview.png")
    plt.close(fig)
    print(f"swap: trained on to {iterations} in {train_s:.0f} s; {loss_summary(workdir)}; loss plot → {plot.path}; "
          f"labelled preview → {out / 'preview.png'}")
    video_out = convert_video(video, out / "swap_a2b.mp4", workdir, "a2b", detector=detector, progress=False,
                              provenance=provenance)
    print(f"swap: {video_out}; {provenance_note(video_out)}")
    plt.close(before_after(video, video_out, n=5, title="the talking head (A) with the astronaut's face (B)",
                           path=out / "before_after.png"))
    scores = evaluate_swap(video, video_out, out / "B", progress=False)
    write_report(scores, out / "evaluation_swap.json")
    print(format_table(scores, SUMMARY_KEYS["swap"], title=f"A → B swap, evaluated ({out / 'evaluation_swap.json'})"))
    return {"workdir": str(workdir), "iterations": iterations, "train_seconds": round(train_s, 1),
            "pruned_a": pruned, "loss_plot": str(plot.path), "preview": str(out / "preview.png"),
            "before_after": str(out / "before_after.png"), "video": str(video_out),
            "provenance": str(sidecar_path(video_out)) if sidecar_path(video_out).is_file() else None,
            "evaluation": {k: scores[k] for k in SUMMARY_KEYS["swap"]},
            "evaluation_file": str(out / "evaluation_swap.json")}


COMMANDS = {"demo": (_add_demo, _run_demo)}

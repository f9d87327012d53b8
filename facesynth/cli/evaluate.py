"""``facesynth evaluate swap|reenact|lipsync|generate``: metrics of a result as JSON plus a short table."""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_evaluate", "run_evaluate"]

def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics of a swap, reenactment, lip sync or generated faces (JSON + table)",
                       description="Measure a result: identity, pose, expression, stability, FOMM's L1/AKD/AED, "
                                   "lip sync, FID. Writes every value with its definition, the weights and versions "
                                   "used to a JSON file and prints a short table.")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")

    s = kinds.add_parser("swap", help="a face swap: identity against the target and the original, pose, stability")
    s.add_argument("--original", required=True, help="the video before the swap")
    s.add_argument("--swapped", required=True, help="the converted video (same length and rate)")
    s.add_argument("--target", required=True, help="the person swapped in: face set folder, photos, image or video")
    _common(s)

    r = kinds.add_parser("reenact", help="an animation: FOMM's L1 (self-reenactment), AKD, AED, identity kept")
    r.add_argument("--source", required=True, help="the source image (portrait) that was animated")
    r.add_argument("--driving", required=True, help="the driving video (cropped as the model saw it)")
    r.add_argument("--result", required=True, help="the animation")
    mode = r.add_mutually_exclusive_group()
    mode.add_argument("--self", dest="self_reenactment", action="store_const", const=True, default=None,
                      help="driving is the ground truth (same person): report L1")
    mode.add_argument("--cross", dest="self_reenactment", action="store_const", const=False,
                      help="another person drives the portrait: no L1")
    _common(r)

    ls = kinds.add_parser("lipsync", help="lip sync: LSE-D/LSE-C (SyncNet weights) and mouth-audio correlation")
    ls.add_argument("video", help="the lip-synced video")
    ls.add_argument("--audio", default=None, help="the sound it should follow (default: the video's own track)")
    ls.add_argument("--syncnet", default="syncnet",
                    help="SyncNet weights file or registry name (default syncnet = syncnet_v2.model); without them "
                         "only the mouth-audio correlation is reported")
    _common(ls, align=False)

    g = kinds.add_parser("generate", help="generated faces: FID and KID against real faces (Inception weights)")
    g.add_argument("--generated", required=True, help="folder of generated images, an image grid's frames or a video")
    g.add_argument("--real", required=True, help="folder of real face images (or a face set, or a video)")
    g.add_argument("--weights", default="inception", help="Inception weights file or registry name")
    g.add_argument("--device", default="auto")
    g.add_argument("--json", default=None, help="where to write the JSON (default: evaluation-generate.json "
                                                "inside --generated's folder)")


def _common(p: argparse.ArgumentParser, align: bool = True) -> None:
    p.add_argument("--detector", default="dlib", choices=["dlib", "fan", "auto"],
                   help="landmark backend (default dlib: offline, same numbers everywhere)")
    if align:
        p.add_argument("--align", default="error", choices=["error", "time"],
                       help="videos of different lengths or rates: error (default) or time (compare at the "
                            "lower rate up to the shorter)")
    p.add_argument("--json", default=None, help="where to write the JSON (default: <result>.evaluation.json)")


def run_evaluate(args) -> int:
    from facesynth.evaluate.report import SUMMARY_KEYS, format_table, write_report

    result, default_json = _evaluate(args)
    path = Path(args.json) if args.json else default_json
    write_report(result, path)
    print(format_table(result, SUMMARY_KEYS[args.kind], title=f"evaluate {args.kind}"))
    for note in result.get("notes", []):
        print(f"note: {note}")
    print(f"→ {path}")
    return 0


def _evaluate(args) -> tuple[dict, Path]:
    if args.kind == "swap":
        from facesynth.evaluate import evaluate_swap
        return (evaluate_swap(args.original, args.swapped, args.target, detector=args.detector, align=args.align),
                _beside(args.swapped))
    if args.kind == "reenact":
        from facesynth.evaluate import evaluate_reenactment
        return (evaluate_reenactment(args.source, args.driving, args.result, self_reenactment=args.self_reenactment,
                                     detector=args.detector, align=args.align), _beside(args.result))
    if args.kind == "lipsync":
        from facesynth.evaluate import evaluate_lipsync
        return (evaluate_lipsync(args.video, audio=args.audio, syncnet=args.syncnet, detector=args.detector),
                _beside(args.video))
    from facesynth.evaluate import evaluate_generation
    generated = Path(args.generated)
    folder = generated if generated.is_dir() else generated.parent
    return (evaluate_generation(args.generated, args.real, weights=args.weights, device=args.device),
            folder / "evaluation-generate.json")


def _beside(result: str) -> Path:
    p = Path(result)
    return p.with_name(f"{p.name}.evaluation.json")


COMMANDS = {"evaluate": (add_evaluate, run_evaluate)}

"""``facesynth reenact``: the First Order Motion Model."""
from __future__ import annotations


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


COMMANDS = {"reenact": (_add_reenact, _run_reenact)}

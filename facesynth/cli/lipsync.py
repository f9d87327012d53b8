"""``facesynth lipsync`` (Wav2Lip) and ``talking-portrait`` (FOMM, then Wav2Lip)."""
from __future__ import annotations

from facesynth.cli.common import (add_compile_flag, add_provenance_flag, check_suffix, positive_float, provenance_arg,
                                  provenance_note)

# facesynth.lipsync.pipeline.DEFAULT_BATCH_SIZE, not imported so that building the parser loads no torch
# (tests/test_cli.py checks that they agree)
DEFAULT_BATCH_SIZE = 32


def _add_lipsync(sub) -> None:
    p = sub.add_parser("lipsync", help="make a face video or portrait speak a soundtrack (Wav2Lip)",
                       description="Wav2Lip: the lips of the face follow the sound; one frame per official mel "
                                   "window, the sound muxed in.")
    p.add_argument("output", help="output video (.mp4)")
    p.add_argument("--face", required=True, help="face video, or a still image (repeated)")
    p.add_argument("--audio", required=True, help="sound: wav, mp3, or any file with an audio track")
    p.add_argument("--checkpoint", default="wav2lip-gan",
                   help="official checkpoint file or registry name (default wav2lip-gan = wav2lip_gan.pth)")
    p.add_argument("--fps", type=positive_float, default=25.0, help="frame rate for a still image (default 25)")
    p.add_argument("--detector", default="auto", choices=["auto", "fan", "dlib"])
    p.add_argument("--pads", type=int, nargs=4, default=[0, 10, 0, 0], metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="padding of the face box in pixels (official default 0 10 0 0)")
    p.add_argument("--box", type=int, nargs=4, default=None, metavar=("Y1", "Y2", "X1", "X2"),
                   help="fixed face box for every frame instead of detection (official --box)")
    p.add_argument("--nosmooth", action="store_true", help="no temporal smoothing of the face boxes")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"frames per network call (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--blend", type=float, default=0.0,
                   help="feather the pasted box's border over this fraction of its side (0 = official hard paste)")
    _add_precision_flags(p, "")
    add_compile_flag(p, "the network", "most of a minute")
    p.add_argument("--device", default="auto")
    add_provenance_flag(p)


def _add_precision_flags(p, what: str) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--bf16", action="store_true",
                       help=f"{what}bfloat16 autocast (faster on GPUs and CPUs with bf16, not bit-equal)")
    group.add_argument("--fp16", action="store_true",
                       help=f"{what}float16 autocast, for a GPU (tensor cores run it at the bf16 rate; 8 times "
                            "finer rounding)")


def _precision(args) -> str:
    return "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"


def _run_lipsync(args) -> int:
    from facesynth.lipsync import plan_lipsync, write_lipsync

    plan = plan_lipsync(args.face, args.audio, fps=args.fps, detector=args.detector, pads=args.pads,
                        smooth=not args.nosmooth, box=args.box, device=args.device)
    out = write_lipsync(plan, args.output, args.checkpoint, provenance=provenance_arg(args),
                        batch_size=args.batch_size, blend=args.blend, device=args.device,
                        precision=_precision(args), compile=args.compile)
    print(f"{plan.num_frames} frames at {plan.fps:g} fps → {out} (with the sound of {args.audio})")
    print(provenance_note(out))
    return 0


def _add_talking_portrait(sub) -> None:
    p = sub.add_parser("talking-portrait", help="a portrait that moves like a driving video and speaks a sound "
                                                "track (FOMM, then Wav2Lip)",
                       description="Animate the portrait with the head motion of the driving video (First Order "
                                   "Motion Model, relative motion with adapted scale, as the official demo's "
                                   "--relative --adapt_scale), then redraw its lips to follow the sound (Wav2Lip). "
                                   "Both need their released weights (see `facesynth weights`).")
    p.add_argument("output", help="output video (.mp4)")
    p.add_argument("--portrait", required=True, help="still image with one face (a painting works)")
    p.add_argument("--driving", required=True, help="talking-head video whose head motion is copied")
    p.add_argument("--audio", default=None, help="sound to lip-sync to (default: the driving video's own sound)")
    p.add_argument("--fomm-checkpoint", default="fomm-vox",
                   help="official FOMM checkpoint file or registry name (default fomm-vox = vox-cpk.pth.tar)")
    p.add_argument("--config", default="vox-256", help="FOMM config: vox-256, vox-adv-256, or an official YAML file")
    p.add_argument("--wav2lip-checkpoint", default="wav2lip-gan",
                   help="official Wav2Lip checkpoint file or registry name (default wav2lip-gan = wav2lip_gan.pth)")
    p.add_argument("--size", type=int, default=256, help="crop side FOMM runs at (vox: 256)")
    p.add_argument("--absolute", action="store_true",
                   help="absolute key point motion instead of relative (moves the portrait's face to the driver's)")
    p.add_argument("--no-adapt-scale", action="store_true", help="do not adapt the movement scale to the faces")
    p.add_argument("--paste-back", action="store_true", help="paste the animated face into the full portrait")
    p.add_argument("--face-box", default="detect", choices=["detect", "source"],
                   help="lip-sync box: detect the face on every animated frame, or use the portrait's own box")
    p.add_argument("--max-frames", type=int, default=None, help="animate only this many driving frames (looped)")
    p.add_argument("--detector", default="auto", choices=["auto", "fan", "dlib"])
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"Wav2Lip frames per network call (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--blend", type=float, default=0.0,
                   help="feather Wav2Lip's pasted box over this fraction of its side (0 = official hard paste)")
    _add_precision_flags(p, "Wav2Lip in ")
    add_compile_flag(p, "both networks", "a minute or more")
    p.add_argument("--device", default="auto")
    add_provenance_flag(p)


def _run_talking_portrait(args) -> int:
    from facesynth.lipsync import talking_portrait
    from facesynth.media import MP4_EXTS, probe

    check_suffix(args.output, MP4_EXTS, "OUTPUT", "the talking portrait is an H.264 MP4, so the output")
    out = talking_portrait(args.portrait, args.driving, args.audio, args.output, fomm=args.fomm_checkpoint,
                           wav2lip=args.wav2lip_checkpoint, config=args.config, size=args.size,
                           detector=args.detector, relative=not args.absolute,
                           adapt_movement_scale=not args.no_adapt_scale, paste_back=args.paste_back,
                           face_box=args.face_box, max_frames=args.max_frames, device=args.device,
                           batch_size=args.batch_size, blend=args.blend, precision=_precision(args),
                           provenance=provenance_arg(args), compile=args.compile)
    info = probe(out)
    print(f"{info.duration:.1f} s at {info.fps:g} fps, {info.width}x{info.height} → {out} (sound of "
          f"{args.audio or args.driving})")
    print(provenance_note(out))
    return 0


COMMANDS = {"lipsync": (_add_lipsync, _run_lipsync), "talking-portrait": (_add_talking_portrait, _run_talking_portrait)}

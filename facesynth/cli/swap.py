"""``facesynth train-swap``, ``prune`` and ``convert``: the autoencoder face swap."""
from __future__ import annotations

import json
from pathlib import Path

from facesynth.cli.common import (add_provenance_flag, cleanup_new_folder, loss_summary, positive_float,
                                  provenance_arg, provenance_note, train_to)


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
    p.add_argument("--lr", type=positive_float, default=None, help="base learning rate")
    p.add_argument("--schedule", default=None, choices=["constant", "cosine", "step"],
                   help="learning-rate schedule (cosine anneals until --iterations)")
    p.add_argument("--warmup", type=int, default=None, help="linear learning-rate warm-up iterations")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--plot", default=None, help="keep a loss/learning-rate plot PNG here, updated while training")


def _run_train_swap(args) -> int:
    from facesynth.errors import ConfigError
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
    if not saved.is_file() and not (args.faces_a and args.faces_b):
        missing = " and ".join(f for f, v in (("--faces-a", args.faces_a), ("--faces-b", args.faces_b)) if not v)
        raise ConfigError(f"{workdir} holds no model yet: give {missing} (face-set folders made by "
                          f"`facesynth extract`)")
    with cleanup_new_folder(workdir):
        trainer = SwapTrainer(config, args.faces_a, args.faces_b, workdir, device=args.device)
    c = trainer.config
    active = {k: f"{len(d)}/{len(d.faceset)}" for k, d in trainer.data.items()}
    where = f"resuming at iteration {trainer.iteration}" if trainer.iteration else "new model"
    print(f"{workdir}: {where}; preset {c.preset_name} ({c.architecture} {c.resolution}px, batch {c.batch_size}, "
          f"lr {c.lr:g} {c.lr_schedule}, warm-up {c.warmup}) on {trainer.device}; "
          f"active faces A {active['a']}, B {active['b']}")
    train_to(trainer, args.iterations, args.plot)
    print(f"iteration {trainer.iteration}: {loss_summary(workdir)}; checkpoint → {trainer.checkpoint_path}"
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
    add_provenance_flag(p)


def _run_convert(args) -> int:
    from facesynth.media import is_image
    from facesynth.swap import convert_image, convert_video

    convert = convert_image if is_image(args.input) else convert_video
    out = convert(args.input, args.output, args.model, args.direction, detector=args.detector,
                  color_transfer=args.color_transfer, blend=args.blend, sharpen=args.sharpen, device=args.device,
                  provenance=provenance_arg(args))
    print(f"{args.input} → {out} ({args.direction}, colour {args.color_transfer}, blend {args.blend})")
    print(provenance_note(out))
    return 0


COMMANDS = {"train-swap": (_add_train_swap, _run_train_swap), "prune": (_add_prune, _run_prune), "convert": (_add_convert, _run_convert)}

"""``facesynth reenact`` and ``train-fomm``: the First Order Motion Model."""
from __future__ import annotations

import argparse
from pathlib import Path

from facesynth.cli.common import (add_compile_flag, add_provenance_flag, cleanup_new_folder, positive_float,
                                  provenance_arg, provenance_note, train_to)


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
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "mixed", "fp16", "bf16"],
                   help="auto: mixed on GPU, fp32 on CPU (the official numbers); mixed is fp16 on a GPU (falls "
                        "back to bf16 with a warning where fp16 overflows) and on a CPU runs the generator in bf16, "
                        "~1e-3 from fp32 and no faster than fp32 there (its NNPACK convolutions); fp16 or bf16 "
                        "name the half precision (fp16 has no fast kernels on a CPU)")
    add_compile_flag(p, "the networks", "a minute or more")
    p.add_argument("--device", default="auto")
    add_provenance_flag(p)


def _run_reenact(args) -> int:
    from facesynth.gpu import HALF_PRECISIONS
    from facesynth.reenact import load_fomm, reenact

    model = load_fomm(args.checkpoint, config=args.config, device=args.device)
    result = reenact(model, args.source, args.driving, args.output, size=args.size, relative=args.relative,
                     adapt_movement_scale=args.adapt_scale, best_frame=args.best_frame, paste=args.paste_back,
                     detector=args.detector, keep=0,
                     autocast={"auto": None, "fp32": False, "mixed": True, **HALF_PRECISIONS}[args.precision],
                     provenance=provenance_arg(args), compile=args.compile)
    clip = result.clip
    start = "" if result.best_frame is None else f", from driving frame {result.best_frame}"
    print(f"{result.frames} frames → {args.output} ({'relative' if args.relative else 'absolute'} motion{start}, "
          f"driving crop {clip.box}, fps {clip.fps:g}{', with audio' if clip.has_audio else ''})")
    print(provenance_note(result.video))
    return 0


def _batch_size(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (BatchNorm in train mode needs two samples), got {text}")
    return value


def _add_train_fomm(sub) -> None:
    p = sub.add_parser("train-fomm", help="train, fine-tune or resume a First Order Motion Model on videos",
                       description="The official self-supervised FOMM training on short videos of talking faces "
                                   "(whole frames), optionally from an official checkpoint. A workdir that holds "
                                   "a model resumes where it stands with no other argument (its config.json keeps "
                                   "the config, videos and settings); --iterations is the target count. Runs "
                                   "under torchrun (one process per GPU, or gloo on CPUs).")
    p.add_argument("videos", nargs="*", metavar="VIDEO", help="training videos; a workdir remembers them")
    p.add_argument("--videos", dest="video_flags", nargs="+", default=[], metavar="VIDEO",
                   help="training videos, as a flag (added to the positional ones)")
    p.add_argument("--still", action="append", default=[], metavar="IMAGE",
                   help="a portrait to fine-tune on: its face crop becomes a clip of random small warps "
                        "(still_as_video, as notebook 02 does); repeatable. Videos and stills given replace the "
                        "workdir's recorded ones")
    p.add_argument("--workdir", required=True, help="config.json, checkpoints and log.jsonl go here")
    p.add_argument("--config", default=None,
                   help="vox-256, vox-adv-256, quick-64, or an official YAML file (its train_params too) "
                        "(default: the workdir's own; vox-256 for a new one)")
    p.add_argument("--checkpoint", default=None,
                   help="official checkpoint file or registry name (e.g. fomm-vox) to fine-tune from")
    p.add_argument("--iterations", type=int, default=None,
                   help="train until this iteration count (default: the official run, num_epochs official epochs)")
    p.add_argument("--size", type=int, default=None,
                   help="frame side the videos are resized to (default: the YAML's frame_shape; 64 for quick-64, "
                        "256 for vox-256)")
    p.add_argument("--batch-size", type=_batch_size, default=None, help="frame pairs per step (per process)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="learning rate of the generator, key point detector and discriminator (official 2e-4)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--plot", default=None, help="keep a loss/learning-rate plot PNG here, updated while training")


def _run_train_fomm(args) -> int:
    from facesynth.errors import ConfigError
    from facesynth.media import is_image
    from facesynth.reenact.train import CONFIG_FILE, FOMMTrainer

    workdir = Path(args.workdir)
    videos = [*args.videos, *args.video_flags]
    for still in args.still:
        if not is_image(still):
            raise ConfigError(f"--still {still}: not an image file; give a portrait (.png, .jpg...)")
    if not videos and not args.still and not (workdir / CONFIG_FILE).is_file():
        raise ConfigError(f"{workdir} holds no model yet: give the training videos (positional or --videos) "
                          f"or a portrait (--still)")
    overrides = {"batch_size": args.batch_size} if args.batch_size else {}
    size = args.size or (64 if (args.config or "").lower() == "quick-64" else None)   # quick-64 runs at 64x64
    if size:
        overrides["frame_size"] = size
    if args.lr:
        overrides.update(lr_generator=args.lr, lr_kp_detector=args.lr, lr_discriminator=args.lr)
    with cleanup_new_folder(workdir):       # a failed start leaves no empty workdir behind
        trainer = FOMMTrainer(args.config, [*videos, *args.still], workdir, checkpoint=args.checkpoint,
                              device=args.device, **overrides)
    main = trainer.dist.is_main
    c, target = trainer.config, args.iterations or trainer.num_iterations
    if main:
        where = (f"resuming at iteration {trainer.iteration}" if trainer.iteration
                 else f"fine-tuning {args.checkpoint}" if args.checkpoint else "new model")
        ranks = f" x {trainer.dist.world_size} processes" if trainer.dist.enabled else ""
        print(f"{workdir}: {where}; config {trainer.model_config.name} ({c.frame_size}px, batch {c.batch_size}{ranks}, "
              f"lr {c.lr_generator:g}) on {trainer.device}; {len(trainer.data)} training clip(s)")
    train_to(trainer, target, args.plot)
    if main:
        print(f"iteration {trainer.iteration}: {_fomm_loss_summary(workdir)}; checkpoint → {trainer.checkpoint_path}"
              + (f"; loss plot → {args.plot}" if args.plot else ""))
    return 0


def _fomm_loss_summary(workdir: Path, last: int = 50) -> str:
    from facesynth.training import read_log

    losses = [r["loss_generator_total"] for r in read_log(workdir) if "loss_generator_total" in r][-last:]
    if not losses:
        return "no losses logged yet"
    return f"generator loss {sum(losses) / len(losses):.4f} (mean of the last {len(losses)} records)"


COMMANDS = {"reenact": (_add_reenact, _run_reenact), "train-fomm": (_add_train_fomm, _run_train_fomm)}

"""``facesynth generate`` and ``project``: StyleGAN."""
from __future__ import annotations

import json
from pathlib import Path

from facesynth.cli.common import (add_provenance_flag, check_suffix, cleanup_new_folder, positive_float,
                                  provenance_arg, provenance_note, train_to)


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
    p.add_argument("--fps", type=positive_float, default=30.0)
    p.add_argument("--cols", type=int, default=None, help="grid columns (default: square)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    add_provenance_flag(p)


def _run_generate(args) -> int:
    from facesynth.generate import load_stylegan
    from facesynth.generate import sampling as S
    from facesynth.gpu import pick_device
    from facesynth.media import IMAGE_EXTS, MP4_EXTS
    from facesynth.provenance import write_image

    out = Path(args.output)
    if args.mode == "video":
        check_suffix(out, MP4_EXTS, "OUTPUT", "--mode video writes an H.264 MP4, so the output")
    elif args.mode == "images":
        check_suffix(out, IMAGE_EXTS | {""}, "OUTPUT",
                     "--mode images writes a grid image or a folder of images, so the output")
    else:
        check_suffix(out, IMAGE_EXTS, "OUTPUT", f"--mode {args.mode} writes one grid image, so the output")
    seeds = S.parse_seeds(args.seeds)
    G = load_stylegan(args.pkl, device=pick_device(args.device))
    note = f"{G.resolution}x{G.resolution}, psi {args.trunc:g}, cutoff {args.cutoff}, noise {args.noise_mode}"
    if args.mode == "video":
        S.write_interpolation_video(G, out, seeds, steps=args.steps, space=args.space, fps=args.fps,
                                    truncation_psi=args.trunc, truncation_cutoff=args.cutoff,
                                    noise_mode=args.noise_mode, provenance=provenance_arg(args))
        print(f"interpolation ({'slerp Z' if args.space == 'z' else 'lerp W'}) through seeds {args.seeds} → {out} ({note})")
        print(provenance_note(out))
        return 0
    cols, recorded = args.cols, {}
    if args.mode == "images":
        images = S.generate_images(G, seeds, args.trunc, args.cutoff, args.noise_mode, args.batch_size)
        if out.suffix == "":
            prov = S.generation_provenance(G, provenance_arg(args), mode="images", truncation_psi=args.trunc,
                                           truncation_cutoff=args.cutoff, noise_mode=args.noise_mode)
            files = [out / f"seed{seed:04d}.png" for seed in seeds]
            for path, seed, img in zip(files, seeds, images):
                write_image(path, S.to_unit(img), prov and prov.with_parameters(seeds=[seed]))
            print(f"{len(seeds)} images → {out}/ ({note})")
            print(provenance_note(*files))
            return 0
    elif args.mode == "truncation":
        psis = (1.0, 0.7, 0.5, 0.0, -0.5, -1.0)
        images, cols = S.truncation_sweep(G, seeds, psis, args.cutoff, args.noise_mode), len(psis)
        recorded = {"truncation_psi": list(psis)}
    elif args.mode == "mixing":
        dst = S.parse_seeds(args.dst_seeds)
        images = S.style_mixing_grid(G, seeds, dst, args.styles, args.trunc, args.noise_mode)
        cols = len(seeds) + 1
        recorded = {"dst_seeds": dst, "styles": args.styles}
    else:
        images, _ = S.noise_variation(G, seeds[0], n=8, truncation_psi=args.trunc, truncation_cutoff=args.cutoff)
        seeds, recorded = seeds[:1], {"noise_mode": "random", "noise_seed": 0, "n": 8}
    prov = S.generation_provenance(G, provenance_arg(args), mode=args.mode, seeds=seeds, **{
        "truncation_psi": args.trunc, "truncation_cutoff": args.cutoff, "noise_mode": args.noise_mode, **recorded})
    write_image(out, S.to_unit(S.image_grid(images, cols)), prov)
    print(f"{args.mode}: {len(images)} images → {out} ({note})")
    print(provenance_note(out))
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
    p.add_argument("--lr", type=positive_float, default=0.05)
    p.add_argument("--no-align", action="store_true", help="the target is already an aligned crop")
    p.add_argument("--detector", default="auto", choices=["auto", "fan", "dlib"])
    p.add_argument("--mix-seeds", default=None,
                   help="generated faces to mix with: each row shows the face, it with the projection's coarse "
                        "styles, and it with the projection's fine styles")
    p.add_argument("--device", default="auto")
    add_provenance_flag(p)


def _run_project(args) -> int:
    import torch

    from facesynth.generate import load_stylegan
    from facesynth.generate import sampling as S
    from facesynth.generate.project import project, project_face
    from facesynth.gpu import pick_device
    from facesynth.media import read_image
    from facesynth.provenance import write_image
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
    # the generator's drawing of the photo's face: made (c2pa.created) from that photo, not an edit of it
    prov = S.generation_provenance(G, provenance_arg(args), inputs=[args.target], mode="projection",
                                   steps=args.steps, w_plus=args.wplus, lr=args.lr, align=not args.no_align,
                                   detector=None if args.no_align else args.detector, perceptual=res.perceptual)
    files = [out / "projected.png", out / "compare.png"]
    write_image(files[0], S.to_unit(res.image[0]).cpu(), prov)
    write_image(files[1], S.to_unit(S.image_grid(torch.cat([res.target, res.image]).cpu(), cols=2)),
                prov and prov.with_parameters(layout="target | projection"))
    if args.mix_seeds:
        seeds = S.parse_seeds(args.mix_seeds)
        w_gen = G.mapping(S.seed_latents(seeds, G.z_dim).to(res.w.device))
        cells = []
        for j in range(len(seeds)):
            cells += [G.synthesis(w_gen[j:j + 1]).cpu(), S.style_mixing(G, res.w, w_gen[j:j + 1], "coarse"),
                      S.style_mixing(G, res.w, w_gen[j:j + 1], "fine" if G.num_layers > 8 else range(4, G.num_layers))]
        files.append(out / "mixing.png")
        write_image(files[2], S.to_unit(S.image_grid(torch.cat(cells), cols=3)),
                    prov and prov.with_parameters(mix_seeds=seeds, layout="generated | coarse | fine"))
    space = "W+" if args.wplus else "W"
    print(f"projected into {space} in {args.steps} steps (pixel loss {res.pixel_losses[-1]:.4f}"
          f"{', with VGG16 perceptual loss' if res.perceptual else ', pixel loss only'}) → {out}")
    print(provenance_note(*files))
    return 0


def _add_train_stylegan(sub) -> None:
    p = sub.add_parser("train-stylegan", help="train (or resume) a StyleGAN on the faces of a face set",
                       description="Train a StyleGAN (official v1 architecture, official losses: non-saturating G, "
                                   "logistic D with R1) on every active face of a face set. A workdir that holds a "
                                   "model resumes where it stands; --iterations is the target count. The smoothed "
                                   "generator is kept as WORKDIR/generator.pt, which `facesynth generate --pkl` reads.")
    p.add_argument("--faces", help="face set (from `facesynth extract`); a workdir remembers it")
    p.add_argument("--workdir", required=True, help="checkpoints, log.jsonl, snapshots and generator.pt go here")
    p.add_argument("--preset", default=None, choices=["quick", "quick-faces", "64", "128"],
                   help="quick-faces: 32 px, draws faces in minutes on a CPU; 64, 128: small GPU runs (default: the "
                        "workdir's own settings; quick-faces for a new one)")
    p.add_argument("--iterations", type=int, default=1600, help="train until this iteration count (default 1600)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default: the preset's)")
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate of G and D (default: the preset's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--plot", default=None, help="keep a loss plot PNG here, updated while training")


def _run_train_stylegan(args) -> int:
    import dataclasses

    from facesynth.errors import ConfigError
    from facesynth.generate import StyleGANTrainer
    from facesynth.generate.train import CONFIG_FILE, GENERATOR_FILE, StyleGANTrainConfig

    workdir = Path(args.workdir)
    overrides = {k: v for k, v in {"batch_size": args.batch_size, "lr": args.lr}.items() if v is not None}
    resuming = (workdir / CONFIG_FILE).is_file()
    if not resuming and not args.faces:
        raise ConfigError(f"{workdir} holds no model yet: give --faces (a face set made by `facesynth extract`)")
    config = None
    if args.preset or not resuming:
        config = StyleGANTrainConfig.preset(args.preset or "quick-faces")
    if overrides:
        if config is None:
            config = StyleGANTrainConfig.from_dict(json.loads((workdir / CONFIG_FILE).read_text())["config"])
        config = dataclasses.replace(config, **overrides)
    with cleanup_new_folder(workdir):
        trainer = StyleGANTrainer(config, args.faces, workdir, device=args.device, progress=None)
    c = trainer.config
    where = f"resuming at iteration {trainer.iteration}" if trainer.iteration else "new model"
    print(f"{workdir}: {where}; {c.model.resolution} px StyleGAN, batch {c.batch_size}, lr {c.lr:g}, "
          f"{len(trainer.images)} faces from {trainer.faces_path}, on {trainer.device}")
    train_to(trainer, args.iterations, args.plot)     # the last iteration writes the checkpoint
    print(f"iteration {trainer.iteration}: generator → {workdir / GENERATOR_FILE} (use it with `facesynth generate "
          f"--pkl {workdir / GENERATOR_FILE}`); snapshots → {workdir / 'snapshots'}"
          + (f"; loss plot → {args.plot}" if args.plot else ""))
    return 0


COMMANDS = {"generate": (_add_generate, _run_generate), "project": (_add_project, _run_project),
            "train-stylegan": (_add_train_stylegan, _run_train_stylegan)}

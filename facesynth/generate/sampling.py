"""Sampling tools: seeds → images and grids, truncation sweeps, the style-mixing grid of the StyleGAN paper,
interpolation videos (slerp in Z, lerp in W) and noise variation.

Images come out as the generator makes them, float [N, 3, H, W] in about [-1, 1]; ``to_unit`` maps them to
[0, 1] for ``facesynth.media`` (which writes files and videos). Latents for a seed are drawn as the official
scripts draw them: ``np.random.RandomState(seed).randn(z_dim)``. ``write_interpolation_video`` writes its video with
provenance (``generation_provenance``: ``c2pa.created``, the weights' SHA-256, seeds and truncation) unless
``provenance=False``.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from facesynth.errors import ConfigError
from facesynth.generate.model import StyleGAN

__all__ = ["parse_seeds", "seed_latents", "generate_images", "to_unit", "image_grid", "truncation_sweep",
           "style_mixing", "style_mixing_grid", "slerp", "interpolation_frames", "write_interpolation_video",
           "noise_variation", "generation_provenance", "MIXING_ROWS"]

# rows of W that the paper's Fig. 3 swaps: coarse (4²-8²), middle (16²-32²), fine (64² and up)
MIXING_ROWS = {"coarse": range(0, 4), "middle": range(4, 8), "fine": range(8, 18)}


def parse_seeds(text: str | int | Sequence[int]) -> list[int]:
    """``"0-15"``, ``"1,5,9"``, ``"0-3,10"`` or a list of ints → list of seeds (ranges inclusive)."""
    if isinstance(text, int):
        return [text]
    if not isinstance(text, str):
        return [int(s) for s in text]
    seeds: list[int] = []
    for part in text.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ConfigError(f"seeds must look like 0-15 or 1,5,9 (non-negative integers), got {text!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ConfigError(f"seed range {part} runs backwards; write {hi}-{lo}")
        seeds.extend(range(lo, hi + 1))
    return seeds


def seed_latents(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """z [len(seeds), z_dim]: one official-style draw per seed, so a seed gives the same face at any batch size."""
    return torch.from_numpy(np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds]).astype(np.float32))


def _device(G: StyleGAN) -> torch.device:
    return G.dlatent_avg.device


@torch.no_grad()
def generate_images(G: StyleGAN, seeds: Sequence[int] | str, truncation_psi: float | None = 0.7,
                    truncation_cutoff: int | None = 8, noise_mode: str = "const", batch_size: int = 16,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
    """Images of the given seeds. Shape: [len(seeds), 3, H, W] float on the CPU, about [-1, 1]."""
    seeds = parse_seeds(seeds)
    if not seeds:
        raise ConfigError("give at least one seed")
    z = seed_latents(seeds, G.z_dim)
    out = []
    for i in range(0, len(seeds), batch_size):
        c = labels[i:i + batch_size].to(_device(G)) if labels is not None else None
        out.append(G(z[i:i + batch_size].to(_device(G)), c, truncation_psi=truncation_psi,
                     truncation_cutoff=truncation_cutoff, noise_mode=noise_mode).float().cpu())
    return torch.cat(out)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] → [0, 1], clipped (the official ``convert_images_to_uint8`` range)."""
    return ((images.float() + 1) / 2).clamp(0, 1)


def image_grid(images: torch.Tensor, cols: int | None = None, pad: int = 0, fill: float = 1.0) -> torch.Tensor:
    """Tile images [N, C, H, W] into one [C, rows*H, cols*W] image (row-major); missing cells are ``fill``."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ConfigError(f"image_grid needs images [N, C, H, W] with N >= 1, got {list(images.shape)}")
    n, c, h, w = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.full((c, rows * (h + pad) - pad, cols * (w + pad) - pad), fill, dtype=images.dtype)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        grid[:, r * (h + pad): r * (h + pad) + h, k * (w + pad): k * (w + pad) + w] = img
    return grid


@torch.no_grad()
def truncation_sweep(G: StyleGAN, seeds: Sequence[int] | str, psis: Sequence[float] = (1.0, 0.7, 0.5, 0.0, -0.5, -1.0),
                     truncation_cutoff: int | None = None, noise_mode: str = "const") -> torch.Tensor:
    """Each seed at each truncation psi (the paper's Fig. 8): [len(seeds) * len(psis), 3, H, W], row-major by
    seed. ``truncation_cutoff=None`` truncates every layer; psi 0 is the average face."""
    seeds = parse_seeds(seeds)
    w = G.mapping(seed_latents(seeds, G.z_dim).to(_device(G)))
    cutoff = truncation_cutoff if truncation_cutoff is not None else G.num_layers
    rows = []
    for i in range(len(seeds)):
        ws = torch.cat([G.truncate(w[i:i + 1], psi, cutoff) for psi in psis])
        rows.append(G.synthesis(ws, noise_mode=noise_mode).float().cpu())
    return torch.cat(rows)


@torch.no_grad()
def style_mixing(G: StyleGAN, w_src: torch.Tensor, w_dst: torch.Tensor, rows: Iterable[int] | str = "coarse",
                 noise_mode: str = "const") -> torch.Tensor:
    """Images of ``w_dst`` whose W rows ``rows`` are taken from ``w_src`` (as ``generate_figures.py`` mixes).

    Shapes: w_src, w_dst [N, L, D] (or [1, L, D], broadcast) → [N, 3, H, W]. ``rows``: indices or "coarse",
    "middle", "fine" (rows beyond L are ignored, so "fine" works at any resolution).
    """
    idx = list(MIXING_ROWS[rows] if isinstance(rows, str) else rows)
    idx = [i for i in idx if i < G.num_layers]
    w_src, w_dst = torch.broadcast_tensors(w_src, w_dst)
    mixed = w_dst.clone()
    mixed[:, idx] = w_src[:, idx]
    return G.synthesis(mixed.to(_device(G)), noise_mode=noise_mode).float().cpu()


@torch.no_grad()
def style_mixing_grid(G: StyleGAN, src_seeds: Sequence[int] | str, dst_seeds: Sequence[int] | str,
                      rows: Iterable[int] | str | Sequence[Iterable[int] | str] = "coarse",
                      truncation_psi: float | None = None, noise_mode: str = "const", fill: float = 1.0) -> torch.Tensor:
    """The paper's Fig. 3 as a [(1 + len(dst)) * (1 + len(src)), 3, H, W] batch to tile with
    ``image_grid(…, cols=1 + len(src))``: a blank corner, the sources along the top, each destination down the
    left, and in each cell the destination with ``rows`` of its W taken from that column's source. ``rows``
    may also be one entry per destination (the figure uses coarse, middle and fine for successive rows)."""
    src, dst = parse_seeds(src_seeds), parse_seeds(dst_seeds)
    dev = _device(G)
    w_src = G.truncate(G.mapping(seed_latents(src, G.z_dim).to(dev)), truncation_psi, G.num_layers)
    w_dst = G.truncate(G.mapping(seed_latents(dst, G.z_dim).to(dev)), truncation_psi, G.num_layers)
    per_row = list(rows) if isinstance(rows, (list, tuple)) and not all(isinstance(r, int) for r in rows) else [rows] * len(dst)
    if len(per_row) != len(dst):
        raise ConfigError(f"give one rows entry per destination seed ({len(dst)}), got {len(per_row)}")
    src_img = G.synthesis(w_src, noise_mode=noise_mode).float().cpu()
    dst_img = G.synthesis(w_dst, noise_mode=noise_mode).float().cpu()
    blank = torch.full_like(src_img[:1], fill * 2 - 1)      # "fill" is given in [0, 1] like image_grid's
    cells = [blank, src_img]
    for j in range(len(dst)):
        cells.append(dst_img[j:j + 1])
        cells.append(style_mixing(G, w_src, w_dst[j:j + 1], per_row[j], noise_mode))
    return torch.cat(cells)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation along the last dimension (for Gaussian Z; lerp when a and b are parallel)."""
    an, bn = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    out = (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b
    return torch.where(so.abs() < 1e-6, a + (b - a) * t, out)


@torch.no_grad()
def interpolation_frames(G: StyleGAN, seeds: Sequence[int] | str, steps: int = 30, space: str = "z",
                         truncation_psi: float | None = 0.7, truncation_cutoff: int | None = 8,
                         noise_mode: str = "const", loop: bool = False) -> Iterator[torch.Tensor]:
    """Frames [3, H, W] in about [-1, 1] moving through the seeds' faces: slerp in Z (``space="z"``) or lerp in W
    (``"w"``), ``steps`` frames per pair, ending on the last seed (or back on the first with ``loop``)."""
    if space not in ("z", "w"):
        raise ConfigError(f"space must be 'z' (slerp) or 'w' (lerp), got {space!r}")
    seeds = parse_seeds(seeds)
    if len(seeds) < 2 or steps < 1:
        raise ConfigError("interpolation needs at least two seeds and steps >= 1")
    if loop:
        seeds = seeds + seeds[:1]
    dev = _device(G)
    z = seed_latents(seeds, G.z_dim).to(dev)
    w = G.mapping(z)
    for k in range(len(seeds) - 1):
        for s in range(steps):
            t = s / steps
            if space == "z":
                wk = G.mapping(slerp(z[k:k + 1], z[k + 1:k + 2], t))
            else:
                wk = w[k:k + 1] + (w[k + 1:k + 2] - w[k:k + 1]) * t
            yield G.synthesis(G.truncate(wk, truncation_psi, truncation_cutoff), noise_mode=noise_mode)[0].float().cpu()
    if not loop:
        yield G.synthesis(G.truncate(w[-1:], truncation_psi, truncation_cutoff), noise_mode=noise_mode)[0].float().cpu()


def write_interpolation_video(G: StyleGAN, path: str | os.PathLike, seeds: Sequence[int] | str, steps: int = 30,
                              space: str = "z", fps: float = 30, truncation_psi: float | None = 0.7,
                              truncation_cutoff: int | None = 8, noise_mode: str = "const", loop: bool = False,
                              provenance: bool | None = None) -> Path:
    """An MP4 of ``interpolation_frames`` (its options as there).

    ``provenance``: sign a C2PA manifest into it (``c2pa.created``, ``G``'s weights file by SHA-256, the seeds and
    options), mark its frames and write ``<path>.provenance.json``; on by default (None: unless
    ``$FACESYNTH_PROVENANCE=0``), False for a plain video.
    """
    from facesynth.provenance import VideoWriter

    options = dict(truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, noise_mode=noise_mode, loop=loop)
    prov = generation_provenance(G, provenance, mode="interpolation", seeds=parse_seeds(seeds), steps=steps,
                                 space=space, fps=fps, **options)
    with VideoWriter(path, fps, provenance=prov) as writer:
        for frame in interpolation_frames(G, seeds, steps, space, **options):
            writer.write(to_unit(frame))
    return Path(path)


def generation_provenance(G: StyleGAN, provenance: bool | None = None, inputs: Sequence[str | os.PathLike] = (),
                          **parameters):
    """The record of images or videos drawn from ``G`` (``c2pa.created``; a projection names its target photo in
    ``inputs``), or None when ``provenance`` is off (False, or None with ``$FACESYNTH_PROVENANCE=0``)."""
    from facesynth import provenance as pv

    if not pv.enabled(provenance):
        return None
    weights, noted = pv.model_weights(G)
    return pv.Provenance("generate", inputs=inputs, weights=weights,
                         parameters={"resolution": G.resolution, **parameters, **noted})


@torch.no_grad()
def noise_variation(G: StyleGAN, seed: int, n: int = 8, truncation_psi: float | None = 0.7,
                    truncation_cutoff: int | None = 8, noise_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The same W with ``n`` different random noise inputs (the paper's Fig. 4): images [n, 3, H, W] and the
    per-pixel standard deviation across them [1, H, W] (where the noise acts: hair, skin, background)."""
    dev = _device(G)
    w = G.truncate(G.mapping(seed_latents([seed], G.z_dim).to(dev)), truncation_psi, truncation_cutoff)
    g = torch.Generator(device=dev).manual_seed(noise_seed)
    images = G.synthesis(w.expand(n, -1, -1), noise_mode="random", generator=g).float().cpu()
    return images, images.std(0).mean(0, keepdim=True)

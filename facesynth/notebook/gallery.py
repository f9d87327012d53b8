"""A grid of aligned faces captioned with their scores, for notebooks and the demo."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from facesynth.extract.faceset import Face, FaceSet

__all__ = ["face_gallery", "frame_rows", "swap_preview", "before_after", "PREVIEW_COLUMNS"]

PREVIEW_COLUMNS = ("A", "A→A", "A→B", "B", "B→B", "B→A")   # SwapTrainer.preview's column order

_FORMATS = {"blur": "blur {:.0f}", "yaw": "yaw {:+.0f}°", "pitch": "pitch {:+.0f}°", "roll": "roll {:+.0f}°",
            "confidence": "conf {:.2f}", "size": "{:.0f}px", "motion": "mot {:.3f}", "loss": "loss {:.4f}"}


def face_gallery(faces: FaceSet | str | os.PathLike | Iterable[Face], cols: int = 8,
                 captions: Sequence[str] = ("blur", "yaw", "pitch"), max_faces: int = 48, mask: str | None = None,
                 title: str | None = None, path: str | os.PathLike | None = None, tile_inches: float = 1.6):
    """Draw aligned faces in a grid, each captioned with its frame and chosen scores.

    Args:
        faces: a FaceSet, a face-set folder, or Face records. More than ``max_faces`` are sampled evenly.
        captions: score names to print under each face (see ``Face.scores``).
        mask: overlay this stored mask (e.g. ``"extended"``) as a tinted outline area.
        path: also save the figure there (PNG), creating folders.
    Returns:
        The matplotlib Figure (shown inline in notebooks). Excluded faces get a red frame.
    """
    import matplotlib.pyplot as plt

    if isinstance(faces, (str, os.PathLike)):
        faces = FaceSet.open(faces)
    items = list(faces)
    if not items:
        raise ValueError("face_gallery needs at least one face")
    if len(items) > max_faces:
        pick = np.linspace(0, len(items) - 1, max_faces).round().astype(int)
        items = [items[i] for i in pick]
    cols = max(1, min(cols, len(items)))
    rows = int(np.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * tile_inches, rows * (tile_inches + 0.45)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, face in zip(axes.flat, items):
        img = face.image
        if mask is not None:
            m = face.mask(mask) > 0
            img = img.copy()
            img[~m] = (img[~m] * 0.35).astype(np.uint8)
        ax.imshow(img)
        text = [f"#{face.id} f{face.frame}"] + [_FORMATS.get(k, k + " {:.3g}").format(face.scores[k])
                                                 for k in captions if k in face.scores]
        ax.set_title("\n".join([text[0], " ".join(text[1:3])] + ([" ".join(text[3:])] if len(text) > 3 else [])),
                     fontsize=6.5, color="red" if face.excluded else "black")
        if face.excluded:
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2.5)
    return _finish(fig, title, path)


def frame_rows(rows: Sequence[tuple[str, Sequence[np.ndarray]]], captions: Sequence[str] = (),
               title: str | None = None, path: str | os.PathLike | None = None, tile_inches: float = 1.8):
    """A figure of labelled rows of uint8 ``H×W×3`` images (e.g. source | driving | result over time).

    ``rows``: ``(label, images)`` pairs; a row with one image shows it in the first column only.
    ``captions``: one per column, under the top row. Saved to ``path`` when given; returns the figure.
    """
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("frame_rows needs at least one row of images")
    cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(tile_inches * cols, tile_inches * len(rows) + 0.4),
                             squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                ax.imshow(images[c])
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
            if r == 0 and c < len(captions):
                ax.set_title(captions[c], fontsize=8)
    return _finish(fig, title, path)


def swap_preview(grid: np.ndarray, title: str | None = None, path: str | os.PathLike | None = None,
                 inches: float = 9.0):
    """``SwapTrainer.preview()``'s grid with a title over each of its six columns (A, A→A, A→B, B, B→B, B→A).

    Saved to ``path`` when given (the titles are in the PNG); returns the figure.
    """
    import matplotlib.pyplot as plt

    h, w = grid.shape[:2]
    fig, ax = plt.subplots(figsize=(inches, inches * h / w + 0.5))
    ax.imshow(grid)
    step = w / len(PREVIEW_COLUMNS)
    ax.set_xticks([step * (i + 0.5) for i in range(len(PREVIEW_COLUMNS))], PREVIEW_COLUMNS, fontsize=10)
    ax.xaxis.tick_top()
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return _finish(fig, title, path)


def before_after(original: str | os.PathLike, swapped: str | os.PathLike, n: int = 4,
                 labels: tuple[str, str] = ("original (A)", "swapped A→B"), title: str | None = None,
                 path: str | os.PathLike | None = None):
    """``n`` frames spread over two videos of the same length, the original above the swapped (streamed)."""
    from facesynth.media import iter_frames, probe

    count = probe(original).frame_count or n
    picks = set(np.linspace(0, max(count - 1, 0), n).round().astype(int).tolist())
    before = {i: f for i, f in iter_frames(original) if i in picks}
    after = {i: f for i, f in iter_frames(swapped) if i in picks}
    shown = sorted(set(before) & set(after))
    return frame_rows([(labels[0], [before[i] for i in shown]), (labels[1], [after[i] for i in shown])],
                      captions=[f"frame {i}" for i in shown], title=title, path=path, tile_inches=2.4)


def _finish(fig, title: str | None, path: str | os.PathLike | None):
    """Title, tight layout, and a PNG at ``path`` when given; returns the figure."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig

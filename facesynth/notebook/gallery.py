"""A grid of aligned faces captioned with their scores, for notebooks and the demo."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from facesynth.extract.faceset import Face, FaceSet

__all__ = ["face_gallery", "frame_rows", "swap_preview", "before_after", "draw_keypoints", "lipsync_preview",
           "PREVIEW_COLUMNS"]

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


def draw_keypoints(image: np.ndarray, keypoints, size: int = 256, radius: int | None = None) -> np.ndarray:
    """A frame with FOMM key points drawn as numbered dots, one colour per key point, enlarged to ``size``.

    ``image``: uint8 ``S×S×3`` (the model's input); ``keypoints``: ``(K, 2)`` (x, y) in [-1, 1], as
    ``FOMM.keypoints(frames)["value"][i]`` gives them (the official visualiser's convention: pixel =
    (value + 1) / 2 · side). Returns a new uint8 ``size×size×3`` image; the same index has the same colour in
    every frame, so one can follow a key point from the source to the driving frames.
    """
    import cv2
    from matplotlib import colormaps

    kp = np.asarray(keypoints.detach().cpu() if hasattr(keypoints, "detach") else keypoints, np.float64)
    if kp.ndim != 2 or kp.shape[1] != 2:
        raise ValueError(f"keypoints must be (K, 2) values in [-1, 1], got shape {kp.shape}")
    canvas = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_CUBIC)
    radius = radius or max(2, size // 64)
    colours = colormaps["gist_rainbow"](np.linspace(0, 1, max(len(kp), 1), endpoint=False))[:, :3] * 255
    for i, (x, y) in enumerate((kp + 1) / 2 * size):
        centre = (int(round(x)), int(round(y)))
        cv2.circle(canvas, centre, radius + 1, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(canvas, centre, radius, tuple(float(c) for c in colours[i]), -1, cv2.LINE_AA)
        cv2.putText(canvas, str(i), (centre[0] + radius + 1, centre[1] - radius), cv2.FONT_HERSHEY_SIMPLEX,
                    size / 700, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def lipsync_preview(plan, n: int = 4, title: str | None = None, path: str | os.PathLike | None = None):
    """What Wav2Lip is given, without running it: ``n`` output frames with the face box it crops (the lower half,
    which it redraws, shaded) above the 0.2 s mel-spectrogram window it hears for each frame.

    ``plan``: a ``facesynth.lipsync.LipsyncPlan`` (``plan_lipsync``). Frames and sound are streamed. Saved to
    ``path`` when given; returns the figure.
    """
    import cv2
    import matplotlib.pyplot as plt

    from facesynth.lipsync.audio import MEL_FPS, MelWindows
    from facesynth.media import iter_frames, read_image

    picks = np.linspace(0, plan.num_frames - 1, n).round().astype(int)
    wanted = {int(i) % (1 if plan.still else len(plan.coords)) for i in picks}
    if plan.still:
        frames = {0: read_image(plan.face)}
    else:
        frames = {}
        for i, frame in iter_frames(plan.face):
            if i in wanted:
                frames[i] = frame
            if len(frames) == len(wanted):
                break
    mels = MelWindows(plan.audio).take(plan.starts[picks]).numpy()
    fig, axes = plt.subplots(2, n, figsize=(2.4 * n, 5.0), squeeze=False, gridspec_kw={"height_ratios": [3, 2]})
    for c, i in enumerate(picks):
        src = 0 if plan.still else int(i) % len(plan.coords)
        y1, y2, x1, x2 = (int(v) for v in plan.coords[src])
        image = frames[src].copy()
        lower = image[(y1 + y2) // 2:y2, x1:x2]
        image[(y1 + y2) // 2:y2, x1:x2] = (lower * 0.55 + np.array([255, 0, 255]) * 0.45).astype(np.uint8)
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), (255, 255, 0), max(1, image.shape[0] // 200))
        ax = axes[0][c]
        ax.imshow(image)
        ax.set_title(f"frame {i} ({i / plan.fps:.2f} s)", fontsize=8)
        ax.axis("off")
        ax = axes[1][c]
        start = int(plan.starts[i])
        ax.imshow(mels[c, 0], origin="lower", aspect="auto", cmap="magma",
                  extent=(start / MEL_FPS, (start + mels.shape[-1]) / MEL_FPS, 0, mels.shape[2]))
        ax.set_xlabel("seconds", fontsize=7)
        ax.tick_params(labelsize=6)
        if c == 0:
            ax.set_ylabel("mel bin", fontsize=7)
            axes[0][0].text(0, -0.02, "box: the face crop; shaded: the half Wav2Lip redraws",
                            transform=axes[0][0].transAxes, fontsize=7, va="top")
    return _finish(fig, title, path)


def _finish(fig, title: str | None, path: str | os.PathLike | None):
    """Title, tight layout, and a PNG at ``path`` when given; returns the figure."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig

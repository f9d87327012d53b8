"""``reenact``: portrait + driving video → animated video, the whole path the CLI and notebook 02 take.

Crop the portrait and the driving video around the face (``prepare_source``, ``prepare_driving``), animate in
batches (``iter_animate``), optionally paste the animated face back into the full portrait, and write an MP4
with the driving video's sound, frame by frame: memory does not grow with the video's length. A few evenly
spaced (driving, result) frame pairs are kept for galleries. The video carries provenance (``facesynth.provenance``)
unless ``provenance=False``: ``c2pa.created`` for the model's square crop, ``c2pa.edited`` of the portrait when the
face is pasted back into it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from facesynth.errors import ConfigError
from facesynth.media import read_image, to_image
from facesynth.reenact.animate import find_best_frame, iter_animate
from facesynth.reenact.checkpoint import FOMM
from facesynth.reenact.prepare import DrivingClip, FaceCrop, paste_back, prepare_driving, prepare_source, \
    write_animation

__all__ = ["reenact", "self_reenact", "Reenactment"]


@dataclass
class Reenactment:
    """What ``reenact`` wrote and a few frames of it.

    ``source``: the model's input, uint8 ``S×S×3``; ``samples``: ``{frame index: (driving crop, result)}``, uint8
    ``S×S×3`` each (the result is the model's output, before any paste-back). ``source_frame`` and ``baseline``
    are set by ``self_reenact``: the driving frame used as the source, and the copy-the-source video.
    """
    video: Path
    source: np.ndarray
    crop: FaceCrop
    clip: DrivingClip
    frames: int
    best_frame: int | None
    samples: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    source_frame: int | None = None
    baseline: Path | None = None


def reenact(model: FOMM, source: str | os.PathLike | np.ndarray, driving: str | os.PathLike | DrivingClip,
            out_path: str | os.PathLike, size: int = 256, relative: bool = True, adapt_movement_scale: bool = True,
            best_frame: bool = False, paste: bool = False, detector: str = "auto", keep: int = 6,
            batch_size: int | None = None, autocast: bool | torch.dtype | None = None,
            provenance: bool | None = None, compile: bool | str = False) -> Reenactment:
    """Animate the face of ``source`` with the motion of ``driving`` and write the result to ``out_path``.

    Args:
        model: a loaded FOMM (``load_fomm``).
        source: a portrait file, or uint8 ``H×W×3`` RGB pixels.
        driving: a video file, or a ``DrivingClip`` already prepared at ``size``.
        size: the side the model runs at (256 for the released vox weights).
        relative, adapt_movement_scale: the official ``--relative`` / ``--adapt_scale``.
        best_frame: start from the driving frame whose pose is closest to the portrait's (official
            ``--find_best_frame``).
        paste: write the full portrait with the animated face pasted back, instead of the square crop.
        keep: how many evenly spaced frames to keep in ``Reenactment.samples``.
        batch_size, autocast: as ``iter_animate`` (autocast: None = on GPU only, fp16; True on a CPU = bf16 generator).
        compile: as ``iter_animate``: ``torch.compile`` (CUDA graphs on a GPU), off by default.
        provenance: sign a C2PA manifest into the video (the portrait's and driving video's SHA-256, the
            checkpoint's when the model was loaded from a file, these settings), mark its frames and write
            ``<out_path>.provenance.json``; on by default (None: unless ``$FACESYNTH_PROVENANCE=0``), False for a
            plain file.

    Raises:
        NoFaceError: no face in the portrait or the driving video. MediaError: unreadable input.
    """
    if keep < 0:
        raise ConfigError(f"keep must be >= 0, got {keep}")
    src, crop = prepare_source(source, size=size, detector=detector)
    clip = driving if isinstance(driving, DrivingClip) else prepare_driving(driving, size=size, detector=detector)
    if clip.size != size:
        raise ConfigError(f"the driving clip was prepared at {clip.size} px but size is {size}")
    wanted = set(np.linspace(0, clip.num_frames - 1, keep).round().astype(int).tolist()) if keep else set()
    results: dict[int, np.ndarray] = {}
    portrait = None
    if paste:
        portrait = source if isinstance(source, np.ndarray) else read_image(source)
    initial = find_best_frame(src, clip, detector=detector) if best_frame else None
    state = {"frames": 0}

    def frames() -> Iterator[np.ndarray]:
        for batch in iter_animate(model, src, clip, relative=relative, adapt_movement_scale=adapt_movement_scale,
                                  best_frame=initial, detector=detector, batch_size=batch_size,
                                  autocast=autocast, compile=compile):
            for face in to_image(batch.cpu()):
                if state["frames"] in wanted:
                    results[state["frames"]] = face
                state["frames"] += 1
                yield paste_back(portrait, face, crop.box) if paste else face

    in_file = not isinstance(source, np.ndarray)
    prov = _provenance(provenance, model, [source, clip.path] if in_file else [clip.path],
                       # pasted back, the result is the portrait with its face changed: an edit of that file
                       edited=paste and in_file, size=size, relative=relative,
                       adapt_movement_scale=adapt_movement_scale, best_frame=initial, paste=paste, detector=detector,
                       autocast=autocast, compile=compile,
                       **({} if in_file else {"source": "pixels passed in memory"}))
    video = write_animation(frames(), out_path, fps=clip.fps, audio_from=clip.path, provenance=prov)
    samples = {i: (to_image(batch[i - start].unsqueeze(0))[0], results[i])
               for start, batch in _batches_with_start(clip) for i in sorted(wanted)
               if start <= i < start + batch.shape[0] and i in results}
    return Reenactment(video=video, source=to_image(src)[0], crop=crop, clip=clip, frames=state["frames"],
                       best_frame=initial, samples=samples)


def self_reenact(model: FOMM, driving: str | os.PathLike | DrivingClip, out_path: str | os.PathLike,
                 size: int = 256, source_frame: int = 0, baseline_path: str | os.PathLike | None = None,
                 detector: str = "auto", keep: int = 6, batch_size: int | None = None,
                 autocast: bool | torch.dtype | None = None, provenance: bool | None = None) -> Reenactment:
    """Self-reenactment, the FOMM paper's reconstruction protocol: one frame of a video animated by the video.

    The source is frame ``source_frame`` of the driving video's fixed face crop (``prepare_driving``), and every
    frame is generated from it with the driving frame's key points as they are (absolute motion, as the official
    ``reconstruction.py``), so each result frame has a ground truth: the driving frame itself. Evaluate with
    ``evaluate_reenactment(result.source, clip frames, result.video, self_reenactment=True)``.

    Args:
        model, size, detector, keep, batch_size, autocast: as ``reenact``.
        driving: a video file, or a ``DrivingClip`` already prepared at ``size``.
        source_frame: the index of the driving frame that serves as the source.
        baseline_path: also write the trivial baseline there: the source frame repeated for every frame ("copy the
            source"), the result a model must beat to have learned any motion. It is a real frame, not a model's
            output, so it gets no provenance (its manifest would say trainedAlgorithmicMedia).
        provenance: as ``reenact``, for the reenacted video (``c2pa.created`` from the driving video).

    Raises:
        ConfigError: ``source_frame`` outside the video, or a clip prepared at another size. NoFaceError,
        MediaError as ``prepare_driving``.
    """
    if keep < 0:
        raise ConfigError(f"keep must be >= 0, got {keep}")
    clip = driving if isinstance(driving, DrivingClip) else prepare_driving(driving, size=size, detector=detector)
    if clip.size != size:
        raise ConfigError(f"the driving clip was prepared at {clip.size} px but size is {size}")
    if not 0 <= source_frame < clip.num_frames:
        raise ConfigError(f"source_frame {source_frame} is outside the driving video's {clip.num_frames} frames")
    src = next(batch[source_frame - start:source_frame - start + 1] for start, batch in _batches_with_start(clip)
               if start <= source_frame < start + batch.shape[0])
    wanted = set(np.linspace(0, clip.num_frames - 1, keep).round().astype(int).tolist()) if keep else set()
    samples: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    state = {"frames": 0}

    def frames() -> Iterator[np.ndarray]:
        reals = (image for batch in clip for image in to_image(batch))    # the ground truth, frame by frame
        for batch in iter_animate(model, src, clip, relative=False, batch_size=batch_size, autocast=autocast):
            for face in to_image(batch.cpu()):
                real = next(reals)
                if state["frames"] in wanted:
                    samples[state["frames"]] = (real, face)
                state["frames"] += 1
                yield face

    prov = _provenance(provenance, model, [clip.path], edited=False, protocol="self-reenactment",
                       source_frame=source_frame, size=size, relative=False, autocast=autocast)
    video = write_animation(frames(), out_path, fps=clip.fps, provenance=prov)
    source_image = to_image(src)[0]
    baseline = None
    if baseline_path is not None:
        baseline = write_animation((source_image for _ in range(state["frames"])), baseline_path, fps=clip.fps)
    return Reenactment(video=video, source=source_image, crop=clip.crop, clip=clip, frames=state["frames"],
                       best_frame=None, samples=samples, source_frame=source_frame, baseline=baseline)


def _provenance(provenance: bool | None, model: FOMM, inputs: list, edited: bool, **parameters):
    """The record of a reenactment, or None when provenance is off."""
    from facesynth import provenance as pv

    if not pv.enabled(provenance):
        return None
    weights, noted = pv.model_weights(model)
    config = Path(model.config.name).name if model.config.name else None     # a YAML's name, not its folder
    if isinstance(parameters.get("autocast"), torch.dtype):       # the record is JSON: a dtype by its name
        parameters["autocast"] = str(parameters["autocast"]).removeprefix("torch.")
    return pv.Provenance("reenact", inputs=inputs, weights=weights, edited=edited,
                         parameters={"config": config, **parameters, **noted})


def _batches_with_start(clip: DrivingClip) -> Iterator[tuple[int, torch.Tensor]]:
    start = 0
    for batch in clip:
        yield start, batch
        start += batch.shape[0]

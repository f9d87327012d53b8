"""Talking portraits (the study's Fig. 10): a still portrait animated by a driving video (FOMM), then lip-synced
to a soundtrack (Wav2Lip).

The FOMM animation is streamed into a temporary video at the driving video's rate (never held whole), and
``lipsync`` then runs on it exactly as on any face video: one output frame per mel window, the animation looping
when the sound is longer. The mouth box comes from a detector on the animated frames (``face_box="detect"``), or,
for animations a detector may not trust (random demo weights, stylised portraits), from the portrait's own face
landmarks (``face_box="source"``): the FOMM crop keeps the head in place, so that box stays on the face.

Only the final video carries provenance (``c2pa.created`` from the portrait, the driving video and the sound, with
both checkpoints); the temporary animation gets none.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from facesynth.errors import ConfigError
from facesynth.lipsync.pipeline import DEFAULT_PADS, lipsync, pad_box
from facesynth.provenance import Provenance, enabled, model_weights

__all__ = ["talking_portrait", "portrait_face_box"]

_RECORDED = ("pads", "smooth", "blend", "precision")     # the lip-sync options that change the result


def talking_portrait(portrait: str | os.PathLike, driving_video: str | os.PathLike,
                     audio: str | os.PathLike | None = None, out: str | os.PathLike = "talking_portrait.mp4",
                     fomm="fomm-vox", wav2lip="wav2lip-gan", config="vox-256", size: int = 256,
                     detector="auto", relative: bool = True, adapt_movement_scale: bool = True,
                     paste_back: bool = False, face_box: str = "detect", max_frames: int | None = None,
                     device: str = "auto", provenance: bool | None = None, compile: bool | str = False,
                     **lipsync_options) -> Path:
    """Animate ``portrait`` with the head motion of ``driving_video``, then make its lips follow ``audio``.

    Args:
        portrait: a still image with one face.
        driving_video: a talking-head video (its face is cropped automatically, see ``reenact.prepare_driving``).
        audio: the soundtrack; None uses the driving video's own sound.
        out: the MP4 to write (sound muxed in).
        fomm: a FOMM checkpoint (path or registry name, ``"fomm-vox"``) or a loaded ``FOMM``; ``config`` its config.
        wav2lip: a Wav2Lip checkpoint (path, ``"wav2lip"``, ``"wav2lip-gan"``) or a loaded network.
        size: FOMM's frame side (256 for vox-256); the result is size x size, or the portrait's size with
            ``paste_back``.
        relative, adapt_movement_scale: FOMM's relative motion options (official ``--relative --adapt_scale``).
        paste_back: paste the animated square back into the full portrait before lip sync.
        face_box: ``"detect"`` (a detector on every animated frame) or ``"source"`` (the portrait's face box).
        max_frames: animate only the first frames of the driving video (quick runs); the animation loops.
        provenance: sign a C2PA manifest into ``out`` (the portrait's, driving video's, sound's and both
            checkpoints' SHA-256, these settings), mark its frames and write ``<out>.provenance.json``; on by default
            (None: unless ``$FACESYNTH_PROVENANCE=0``), False for a plain file.
        compile: both networks through ``torch.compile`` (``iter_animate``'s and ``lipsync``'s ``compile``: on a
            GPU as CUDA graphs); off by default, meant for a GPU, and each network's first batch compiles.
        lipsync_options: passed to ``lipsync`` (``batch_size``, ``blend``, ``pads``, ``precision``…).

    Returns:
        ``out``: one frame per Wav2Lip mel window at the driving video's rate.

    Raises:
        ConfigError: no sound given and none in the driving video, or a bad option. NoFaceError, MediaError,
        CheckpointError as the steps they come from.
    """
    from facesynth.media import VideoWriter, has_audio, read_image, to_image
    from facesynth.reenact import FOMM, iter_animate, load_fomm
    from facesynth.reenact.prepare import paste_back as paste, prepare_driving, prepare_source

    if face_box not in ("detect", "source"):
        raise ConfigError(f"face_box must be 'detect' or 'source', got {face_box!r}")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"max_frames must be at least 1, got {max_frames}")
    if audio is None:
        if not has_audio(driving_video):
            raise ConfigError(f"{driving_video} has no sound: give the audio to lip-sync to")
        audio = driving_video
    model = fomm if isinstance(fomm, FOMM) else load_fomm(fomm, config=config, device=device)
    detector_name = detector if isinstance(detector, str) else "auto"
    source, crop = prepare_source(portrait, size=size, detector=detector_name)
    clip = prepare_driving(driving_video, size=size, detector=detector_name)
    full = read_image(portrait) if paste_back else None

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".mp4", prefix=f".{out.stem}.fomm.", dir=out.parent)
    os.close(fd)
    try:
        written = 0
        with VideoWriter(tmp, clip.fps, crf=12) as writer:
            for batch in iter_animate(model, source, clip, relative=relative,
                                      adapt_movement_scale=adapt_movement_scale, compile=compile):
                for face in to_image(batch.cpu()):
                    if max_frames is not None and written >= max_frames:
                        break
                    writer.write(paste(full, face, crop.box) if full is not None else face)
                    written += 1
                if max_frames is not None and written >= max_frames:
                    break
        box = None
        if face_box == "source":
            box = portrait_face_box(crop, full.shape[:2] if full is not None else (size, size), paste_back,
                              lipsync_options.pop("pads", DEFAULT_PADS))
        prov = _provenance(provenance, portrait, driving_video, audio, (model, wav2lip), size=size,
                           relative=relative, adapt_movement_scale=adapt_movement_scale, paste_back=paste_back,
                           face_box=face_box, box=box, max_frames=max_frames, detector=detector_name, compile=compile,
                           fomm_config=Path(model.config.name).name if model.config.name else None,
                           **{k: v for k, v in lipsync_options.items() if k in _RECORDED})
        return lipsync(tmp, audio, out, checkpoint=wav2lip, box=box, detector=detector, device=device,
                       provenance=prov, compile=compile, **lipsync_options)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _provenance(provenance: bool | None, portrait, driving_video, audio, models, **parameters) -> Provenance | bool:
    """The record of a talking portrait (a new video made from a still: ``c2pa.created``), or False when off."""
    if not enabled(provenance):
        return False
    weights, noted = model_weights(*models)
    sound = [] if Path(audio) == Path(driving_video) else [audio]
    return Provenance("talking-portrait", inputs=[portrait, driving_video, *sound], weights=weights,
                      parameters={**parameters, **noted})


def portrait_face_box(crop, frame_hw: tuple[int, int], in_portrait: bool, pads=DEFAULT_PADS) -> tuple[int, int, int, int]:
    """The portrait's face box for lip sync (``face_box="source"``), in the animated frames' pixels.

    ``crop``: the ``FaceCrop`` of ``prepare_source`` (``Reenactment.crop``); ``frame_hw``: the animated frames'
    (height, width); ``in_portrait``: True when the animation was pasted back into the full portrait. The
    landmarks' extent, padded by ``pads`` (top, bottom, left, right) → ``(y1, y2, x1, x2)``, the ``box`` that
    ``plan_lipsync`` and ``lipsync`` take.
    """
    points = np.asarray(crop.landmarks, np.float64)
    if in_portrait:   # crop pixels → portrait pixels
        points = points * (crop.side / crop.size) + np.array(crop.box[:2], np.float64)
    x1, y1 = points.min(0)
    x2, y2 = points.max(0)
    h, w = frame_hw
    bx1, by1, bx2, by2 = pad_box([x1, y1, x2, y2], pads, (w, h))
    return by1, by2, bx1, bx2

"""``evaluate_generation``: generated faces against real ones — FID/KID where the Inception weights are, and
identity statistics that run offline.

- ``fid``, ``kid``, ``kid_std``: see ``facesynth.evaluate.fid`` (None, with a note naming the file, when the
  Inception weights are not on disk).
- ``face_rate``: fraction of generated images in which dlib finds a face (a GAN that has not learnt faces yet
  scores near 0).
- ``identity_diversity``: mean pairwise dlib descriptor distance between the generated faces (different people
  are more than 0.6 apart; a collapsed generator that draws one person scores low). ``real_diversity`` is the
  same over the real faces, the value to aim for.
- ``nearest_real``: mean distance from each generated face to its nearest real face (under 0.6: the generator
  draws people of the real set rather than new ones, as a small GAN trained on one person's video does).
- with ``others`` (other people's photos, by name): ``distance_real`` and ``distance_others``, the mean distance
  of the generated faces to the real set's identity and to each other person's, and ``closest_real_rate``, the
  fraction of generated faces whose closest identity is the real set's. A generator trained on one person should
  draw faces nearer to that person than to anybody else.

dlib's HOG detector misses faces smaller than about 80 px, so a 32 px sample that is a face counts as none:
``upsample_to`` enlarges small images (bicubic) before detection.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from facesynth.errors import WeightsNotFoundError
from facesynth.evaluate.frames import FrameSource, iter_rgb, source_label
from facesynth.evaluate.identity import FaceEmbedder, is_faceset
from facesynth.evaluate.report import definitions, provenance

__all__ = ["evaluate_generation", "PEOPLE_DEFINITIONS"]

PEOPLE_DEFINITIONS = {
    "distance_real": "mean descriptor distance of the generated faces to the real set's mean descriptor (< 0.6: "
                     "the same person by dlib's rule)",
    "distance_others": "the same distance to each other person's mean descriptor (what 'somebody else' scores)",
    "closest_real_rate": "fraction of generated faces nearer to the real set's identity than to every other person",
}


def evaluate_generation(generated: FrameSource, real: FrameSource, weights: str | os.PathLike | None = "inception",
                        detector: str = "dlib", max_images: int | None = None, device: str = "cpu",
                        embedder: FaceEmbedder | None = None, upsample_to: int | None = None,
                        others: Mapping[str, FrameSource] | None = None, **fid_options) -> dict:
    """FID/KID (when the Inception weights resolve) and the offline identity statistics of generated faces.

    Args:
        generated, real: frame sources that can be read twice (folder of images, video, image, uint8
            ``[N,H,W,3]``, float ``[N,3,H,W]`` in [0, 1]); a face set folder counts as its aligned crops.
        weights: Inception weights (registry name or path); None skips FID/KID.
        max_images: at most this many images of each source.
        upsample_to: images whose shorter side is below this many pixels are enlarged to it (bicubic) before
            face detection (256 suits 32-64 px samples); None detects at the given size. FID/KID see the
            images as given.
        others: other people, name → frame source (photos of one person each), to compare identities with.
        fid_options: passed to ``facesynth.evaluate.fid.fid_kid`` (``batch_size``, ``kid_subsets``...).

    Returns:
        dict with ``fid``, ``kid``, ``kid_std`` (None without weights), ``face_rate``, ``identity_diversity``,
        ``real_diversity``, ``nearest_real``, ``n_generated``, ``n_real``, ``definitions``, ``weights``, ``notes``;
        with ``others`` also ``distance_real``, ``distance_others`` (name → distance), ``closest_real_rate``.
    """
    from facesynth.evaluate import fid as fid_module

    embedder = embedder or FaceEmbedder(detector)
    gen_desc, n_gen = _descriptors(generated, embedder, max_images, upsample_to)
    real_desc, n_real = _descriptors(real, embedder, max_images, upsample_to)
    result = {"fid": None, "kid": None, "kid_std": None, "face_rate": len(gen_desc) / n_gen if n_gen else float("nan"),
              "identity_diversity": _mean_pairwise(gen_desc), "real_diversity": _mean_pairwise(real_desc),
              "nearest_real": _mean_nearest(gen_desc, real_desc), "n_generated": n_gen, "n_real": n_real,
              "faces_generated": len(gen_desc), "faces_real": len(real_desc),
              "inputs": {"generated": source_label(generated), "real": source_label(real)}, "upsample_to": upsample_to,
              "notes": []}
    if others:
        result.update(_distances_to_people(gen_desc, real_desc, others, embedder))
    extra = {}
    if weights is None:
        result["notes"].append("FID/KID skipped (weights=None)")
    else:
        try:
            scores = fid_module.fid_kid(_images(generated), _images(real), weights=weights, max_images=max_images,
                                        device=device, **fid_options)
        except WeightsNotFoundError as e:
            result["notes"].append(f"FID/KID not computed: {e}")
        else:
            result.update({k: scores[k] for k in ("fid", "kid", "kid_std", "kid_subsets", "kid_subset_size")})
            result["notes"].extend(scores["notes"])
            extra["inception"] = scores["weights"]["file"]
            result["inception_official"] = scores["weights"]["official"]
    result["definitions"] = {**definitions("face_rate", "identity_diversity", "real_diversity", "nearest_real"),
                             **(PEOPLE_DEFINITIONS if others else {}),
                             **{k: v for k, v in fid_module.DEFINITIONS.items() if k in ("fid", "kid")}}
    result.update(provenance(embedder, extra_weights=extra))
    return result


def _images(source: FrameSource) -> FrameSource:
    """A face set folder's aligned crops (read lazily, one at a time), any other source as it is."""
    if isinstance(source, (str, os.PathLike)) and is_faceset(Path(source)):
        from facesynth.extract import FaceSet
        return (face.image for face in FaceSet.open(source))
    return source


def _descriptors(source: FrameSource, embedder: FaceEmbedder, max_images: int | None,
                 upsample_to: int | None = None) -> tuple[list, int]:
    out, n = [], 0
    for image in iter_rgb(_images(source)):
        if max_images is not None and n >= max_images:
            break
        n += 1
        d = embedder.embed(_enlarged(image, upsample_to))
        if d is not None:
            out.append(d)
    return out, n


def _enlarged(image: np.ndarray, upsample_to: int | None) -> np.ndarray:
    """``image`` scaled up (bicubic, aspect kept) so that its shorter side is ``upsample_to``, if it is shorter."""
    short = min(image.shape[:2])
    if not upsample_to or short >= upsample_to:
        return image
    import cv2

    scale = upsample_to / short
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)


def _distances_to_people(gen: list[np.ndarray], real: list[np.ndarray], others: Mapping[str, FrameSource],
                         embedder: FaceEmbedder) -> dict:
    """Mean distance of the generated faces to the real identity and to each other person's (mean descriptors)."""
    people = {name: embedder.embed_set(source).mean(0) for name, source in others.items()}
    if not gen or not real:
        return {"distance_real": float("nan"), "distance_others": {name: float("nan") for name in people},
                "closest_real_rate": float("nan")}
    g = np.stack(gen)
    to_real = np.linalg.norm(g - np.stack(real).mean(0), axis=1)
    to_others = {name: np.linalg.norm(g - d, axis=1) for name, d in people.items()}
    nearest_other = np.min(np.stack(list(to_others.values())), axis=0)
    return {"distance_real": float(to_real.mean()),
            "distance_others": {name: float(d.mean()) for name, d in to_others.items()},
            "closest_real_rate": float((to_real < nearest_other).mean())}


def _mean_pairwise(desc: list[np.ndarray]) -> float:
    if len(desc) < 2:
        return float("nan")
    d = np.stack(desc)
    dist = np.linalg.norm(d[:, None] - d[None], axis=-1)
    return float(dist[np.triu_indices(len(d), 1)].mean())


def _mean_nearest(gen: list[np.ndarray], real: list[np.ndarray]) -> float:
    if not gen or not real:
        return float("nan")
    dist = np.linalg.norm(np.stack(gen)[:, None] - np.stack(real)[None], axis=-1)
    return float(dist.min(1).mean())

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
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facesynth.errors import WeightsNotFoundError
from facesynth.evaluate.frames import FrameSource, iter_rgb, source_label
from facesynth.evaluate.identity import FaceEmbedder, is_faceset
from facesynth.evaluate.report import definitions, provenance

__all__ = ["evaluate_generation"]


def evaluate_generation(generated: FrameSource, real: FrameSource, weights: str | os.PathLike | None = "inception",
                        detector: str = "dlib", max_images: int | None = None, device: str = "cpu",
                        embedder: FaceEmbedder | None = None, **fid_options) -> dict:
    """FID/KID (when the Inception weights resolve) and the offline identity statistics of generated faces.

    Args:
        generated, real: frame sources that can be read twice (folder of images, video, image, uint8
            ``[N,H,W,3]``, float ``[N,3,H,W]`` in [0, 1]); a face set folder counts as its aligned crops.
        weights: Inception weights (registry name or path); None skips FID/KID.
        max_images: at most this many images of each source.
        fid_options: passed to ``facesynth.evaluate.fid.fid_kid`` (``batch_size``, ``kid_subsets``...).

    Returns:
        dict with ``fid``, ``kid``, ``kid_std`` (None without weights), ``face_rate``, ``identity_diversity``,
        ``real_diversity``, ``nearest_real``, ``n_generated``, ``n_real``, ``definitions``, ``weights``, ``notes``.
    """
    from facesynth.evaluate import fid as fid_module

    embedder = embedder or FaceEmbedder(detector)
    gen_desc, n_gen = _descriptors(generated, embedder, max_images)
    real_desc, n_real = _descriptors(real, embedder, max_images)
    result = {"fid": None, "kid": None, "kid_std": None, "face_rate": len(gen_desc) / n_gen if n_gen else float("nan"),
              "identity_diversity": _mean_pairwise(gen_desc), "real_diversity": _mean_pairwise(real_desc),
              "nearest_real": _mean_nearest(gen_desc, real_desc), "n_generated": n_gen, "n_real": n_real,
              "faces_generated": len(gen_desc), "faces_real": len(real_desc),
              "inputs": {"generated": source_label(generated), "real": source_label(real)}, "notes": []}
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
                             **{k: v for k, v in fid_module.DEFINITIONS.items() if k in ("fid", "kid")}}
    result.update(provenance(embedder, extra_weights=extra))
    return result


def _images(source: FrameSource) -> FrameSource:
    """A face set folder's aligned crops (read lazily, one at a time), any other source as it is."""
    if isinstance(source, (str, os.PathLike)) and is_faceset(Path(source)):
        from facesynth.extract import FaceSet
        return (face.image for face in FaceSet.open(source))
    return source


def _descriptors(source: FrameSource, embedder: FaceEmbedder, max_images: int | None) -> tuple[list, int]:
    out, n = [], 0
    for image in iter_rgb(_images(source)):
        if max_images is not None and n >= max_images:
            break
        n += 1
        d = embedder.embed(image)
        if d is not None:
            out.append(d)
    return out, n


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

"""Provenance on every image and video facesynth writes: a signed C2PA manifest, an invisible watermark and a
per-segment hash chain; ``verify`` says what was changed.

* ``Provenance(technique, inputs, weights, parameters, edited)``: what a result came from (record.py).
* ``write_image`` / ``VideoWriter``: drop-in for ``facesynth.media``'s, with ``provenance=None`` meaning plain
  (stamp.py); ``finalize_image`` / ``finalize_video`` for files written otherwise.
* ``enabled(arg)``: the on-by-default switch (``--no-provenance`` → False; ``FACESYNTH_PROVENANCE=0``).
* ``model_weights(*models)``: the weights files behind paths, registry names and loaded models (their loaders note
  the file with ``remember_weights``), for ``Provenance(weights=...)``.
* ``watermark_frame`` / ``watermark_frames`` / ``read_watermark`` (watermark.py), ``compute_chain`` (chain.py).
* ``verify(path) -> VerifyReport`` (verify.py), also ``facesynth verify FILE``.

Each output ``out.ext`` gets ``out.ext.provenance.json`` beside it (the sidecar: the record, the watermark, and the
hash chain with its per-frame thumbnails). The manifest is signed with ``FACESYNTH_C2PA_CERT``/``FACESYNTH_C2PA_KEY``
when set, else with a self-issued local signer that readers show as untrusted (signer.py explains).
"""
from facesynth.provenance.chain import compute_chain
from facesynth.provenance.errors import ProvenanceError, ProvenanceWarning
from facesynth.provenance.manifest import LABEL, TRAINED_ALGORITHMIC_MEDIA, read_manifest
from facesynth.provenance.record import Provenance, enabled, model_weights, remember_weights
from facesynth.provenance.stamp import Stamp, VideoWriter, finalize_image, finalize_video, sidecar_path, write_image
from facesynth.provenance.verify import VerifyReport, verify
from facesynth.provenance.watermark import read_watermark, watermark_frame, watermark_frames

__all__ = ["Provenance", "enabled", "model_weights", "remember_weights", "write_image", "VideoWriter",
           "finalize_image", "finalize_video", "Stamp", "sidecar_path", "verify", "VerifyReport", "read_watermark",
           "watermark_frame", "watermark_frames", "compute_chain", "read_manifest", "ProvenanceError",
           "ProvenanceWarning", "LABEL", "TRAINED_ALGORITHMIC_MEDIA"]

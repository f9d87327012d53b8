"""The provenance error: a FacesynthError, so the CLI prints it on one line and exits 2."""
from __future__ import annotations

from facesynth.errors import FacesynthError

__all__ = ["ProvenanceError", "ProvenanceWarning"]


class ProvenanceError(FacesynthError):
    """Provenance cannot be written or checked: no facesynth provenance in a file, a sidecar that belongs to another
    file or was edited, a signing certificate that cannot be used."""


class ProvenanceWarning(UserWarning):
    """Part of the provenance was skipped (an image too small for the watermark, a format C2PA cannot embed in)."""

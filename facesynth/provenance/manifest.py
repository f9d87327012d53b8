"""The C2PA manifest: what it says (actions, digital source type, facesynth's assertion), signing, reading back.

The manifest holds a ``c2pa.actions`` assertion (``c2pa.created``, or ``c2pa.opened`` of the real input then
``c2pa.edited``) whose digital source type is IPTC's ``trainedAlgorithmicMedia``, and a facesynth assertion
(``org.facesynth.provenance``) with the technique, facesynth's version, the inputs' and weights' SHA-256, the
parameters, the watermark and the hash chain. c2pa-python adds the hard binding (a hash over the file's bytes,
``c2pa.hash.data`` for images, ``c2pa.hash.bmff.v3`` for MP4) and signs the claim with the signer's chain.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facesynth.fileio import atomic_write
from facesynth.provenance.errors import ProvenanceError
from facesynth.provenance.signer import SignerFiles

__all__ = ["LABEL", "TRAINED_ALGORITHMIC_MEDIA", "MIME_TYPES", "mime_type", "manifest_definition", "sign_file",
           "ManifestReading", "read_manifest"]

LABEL = "org.facesynth.provenance"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MIME_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
              ".tif": "image/tiff", ".tiff": "image/tiff", ".mp4": "video/mp4", ".m4v": "video/mp4",
              ".mov": "video/quicktime"}
# c2pa-python refuses a manifest definition of 1 MiB or more ("StringTooLong: manifest_json"); above this the
# chain goes into the manifest without its per-frame thumbnails (they stay in the sidecar, bound by their digests)
_MANIFEST_JSON_LIMIT = 900_000


def mime_type(path: str | os.PathLike) -> str | None:
    """The MIME type C2PA signs ``path`` as, or None when C2PA cannot embed a manifest in that format."""
    return MIME_TYPES.get(Path(path).suffix.lower())


def manifest_definition(path: str | os.PathLike, record: dict, chain: dict, watermark: dict) -> dict:
    """The manifest JSON for c2pa-python's Builder. ``record`` is ``Provenance.to_dict()``."""
    agent = {"name": "facesynth", "version": record["facesynth_version"]}
    action = {"action": "c2pa.edited" if record["edited"] else "c2pa.created",
              "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA, "softwareAgent": agent,
              "description": f"facesynth {record['technique']}"}
    actions, ingredients = [action], []
    if record["edited"]:
        # C2PA: the first action must be c2pa.created or c2pa.opened; an edit opens its parent ingredient first
        parent = record["inputs"][0]
        ingredients.append({"title": parent["name"], "relationship": "parentOf", "label": "input-0",
                            "format": mime_type(parent["name"]) or "application/octet-stream",
                            "instance_id": f"sha256:{parent['sha256']}"})
        actions.insert(0, {"action": "c2pa.opened", "softwareAgent": agent,
                           "parameters": {"ingredientIds": ["input-0"]}})
    data = {**record, "watermark": watermark, "chain": chain}
    definition = {"claim_generator_info": [agent], "title": Path(path).name, "format": mime_type(path),
                  "ingredients": ingredients,
                  "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}},
                                 {"label": LABEL, "data": data}]}
    if len(json.dumps(definition)) > _MANIFEST_JSON_LIMIT:
        lean = {**chain, "segments": [{k: v for k, v in s.items() if k != "luma16"} for s in chain["segments"]],
                "luma16": "in the sidecar only: too large for the manifest, bound here by each luma16_sha256"}
        data["chain"] = lean
    return definition


def sign_file(path: str | os.PathLike, definition: dict, signer: SignerFiles) -> None:
    """Embed and sign the manifest into ``path``; the signed file replaces it atomically."""
    import c2pa

    p = Path(path)
    mime = mime_type(p)
    if mime is None:
        raise ProvenanceError(f"{p}: C2PA cannot embed a manifest in {p.suffix or 'a file without extension'}; "
                              f"write PNG, JPEG or MP4")
    chain, key = signer.chain.read_bytes(), signer.key.read_bytes()
    try:
        info = c2pa.C2paSignerInfo(signer.algorithm(), chain, key, None)
        context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
        with c2pa.Signer.from_info(info) as c2pa_signer, c2pa.Builder(definition, context) as builder, \
                open(p, "rb") as source:
            atomic_write(p, lambda dest: builder.sign(c2pa_signer, mime, source, dest))
    except c2pa.C2paError as e:
        where = "your certificate (FACESYNTH_C2PA_CERT/KEY)" if not signer.self_issued else "the local signer"
        raise ProvenanceError(f"{p}: C2PA signing failed with {where}: {' '.join(str(e).split())}") from None


@dataclass
class ManifestReading:
    """What c2pa.Reader found in a file. ``state``: valid (signature and hard binding check out, whether or not the
    signer is on a trust list), invalid (see ``failures``), missing (no manifest) or unreadable (see ``error``)."""
    state: str
    validation_state: str | None = None            # c2pa's own word: Valid, Trusted or Invalid
    signature: str | None = None                   # valid / invalid
    hard_binding: str | None = None                # match / mismatch
    trusted: bool | None = None                    # the signer chains to a trust anchor the reader knows
    signer: dict = field(default_factory=dict)     # issuer, common_name, alg
    actions: list = field(default_factory=list)
    failures: list = field(default_factory=list)   # c2pa failure codes with explanations
    facesynth: dict | None = field(default=None, repr=False)  # the org.facesynth.provenance assertion
    error: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("facesynth")
        return d

    @property
    def digital_source_types(self) -> list[str]:
        return [a["digitalSourceType"] for a in self.actions if "digitalSourceType" in a]


def read_manifest(path: str | os.PathLike) -> ManifestReading:
    import c2pa

    p = Path(path)
    mime = mime_type(p)
    if mime is None:
        return ManifestReading("missing", error=f"C2PA cannot embed a manifest in {p.suffix or 'this file'}")
    try:
        with open(p, "rb") as f, c2pa.Reader(mime, f) as reader:
            store = json.loads(reader.json())
            ours = _facesynth_assertion(json.loads(reader.crjson()), store.get("active_manifest"))
    except c2pa.C2paError.ManifestNotFound:
        return ManifestReading("missing")
    except c2pa.C2paError as e:
        return ManifestReading("unreadable", error=" ".join(str(e).split()))
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    success = [r["code"] for r in results.get("success", [])]
    failures = [{"code": r["code"], "explanation": r.get("explanation", "")} for r in results.get("failure", [])
                if r["code"] != "signingCredential.untrusted"]
    codes = [f["code"] for f in failures]
    binding = None
    if any(_is_binding(c) and c.endswith(".mismatch") for c in codes):
        binding = "mismatch"
    elif any(_is_binding(c) and c.endswith(".match") for c in success):
        binding = "match"
    signature = "invalid" if any(c.startswith("claimSignature.") for c in codes) else (
        "valid" if "claimSignature.validated" in success else None)
    assertions = {a["label"]: a.get("data") for a in manifest.get("assertions", [])}
    actions = (assertions.get("c2pa.actions.v2") or assertions.get("c2pa.actions") or {}).get("actions", [])
    state = "valid" if not failures and binding == "match" and signature == "valid" else "invalid"
    return ManifestReading(state, store.get("validation_state"), signature, binding,
                           "signingCredential.trusted" in success, manifest.get("signature_info", {}),
                           actions, failures, ours)


def _facesynth_assertion(crjson: dict, label: str | None) -> dict | None:
    """The facesynth assertion as written. Taken from ``Reader.crjson()``, not ``Reader.json()``: c2pa 0.91.3's
    ``json()`` turns a list of numbers into a base64 byte string, mod 256 ([300, 2] reads back as "LAI="), while
    ``crjson()`` keeps it. The chain holds no such list, so other readers see it intact either way."""
    for manifest in crjson.get("manifests", []):
        if manifest.get("label") == label:
            return (manifest.get("assertions") or {}).get(LABEL)
    return None


def _is_binding(code: str) -> bool:
    return code.split(".")[:2][-1] in ("dataHash", "bmffHash", "boxesHash", "collectionHash")

"""What a result came from: the technique, its inputs and weights (by SHA-256), and the parameters that matter."""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from facesynth.provenance.chain import SEGMENT_FRAMES
from facesynth.provenance.errors import ProvenanceError

__all__ = ["Provenance", "enabled", "ENV", "remember_weights", "model_weights"]

ENV = "FACESYNTH_PROVENANCE"
WEIGHTS_ATTR = "weights_path"      # where loaders note the file a model was read from


def enabled(provenance: bool | None = None) -> bool:
    """Whether a writer adds provenance: the caller's ``provenance`` argument (``--no-provenance`` gives False) when
    it is given, else ``$FACESYNTH_PROVENANCE`` (0, false, no or off turn it off), else on."""
    if provenance is not None:
        return bool(provenance)
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass
class Provenance:
    """The record a writer passes to ``write_image``/``VideoWriter``/``finalize_*``.

    ``technique``: what made the result ("swap", "reenact", "lipsync", "generate", ...). ``inputs``: the media
    files or folders (a face set) it was made from; ``weights``: checkpoints, official weights or a training
    workdir. Both are recorded by name and SHA-256 (a folder by a digest over its files), never by full path, so a
    manifest does not reveal the user's folders. ``parameters``: the settings that matter (preset, iterations,
    truncation, seeds...), JSON-like values. ``edited``: True when a real photo or video was changed (a face swap into
    a real video): the manifest says ``c2pa.opened`` the first input then ``c2pa.edited``, otherwise ``c2pa.created``.
    Digests are computed once per record, so one record can serve many outputs.
    """
    technique: str
    inputs: Sequence[str | os.PathLike] = ()
    weights: Sequence[str | os.PathLike] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    edited: bool = False
    segment_frames: int = SEGMENT_FRAMES
    watermark: bool = True
    _files: dict | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if isinstance(self.inputs, (str, os.PathLike)):
            self.inputs = [self.inputs]
        if isinstance(self.weights, (str, os.PathLike)):
            self.weights = [self.weights]
        if self.edited and not self.inputs:
            raise ProvenanceError("an edited result needs the input it was edited from: pass inputs=[...]")

    def files(self) -> dict:
        """``{"inputs": [...], "weights": [...]}``, each item ``{"name", "sha256", "bytes"}`` (folders: ``"files"``)."""
        if self._files is None:
            self._files = {"inputs": [describe_file(p) for p in self.inputs],
                           "weights": [describe_file(p) for p in self.weights]}
        return self._files

    def with_parameters(self, **parameters) -> "Provenance":
        """A copy with ``parameters`` added (the seed of one image among many), sharing the digests: the inputs and
        weights are hashed once however many outputs the copies sign."""
        copy = dataclasses.replace(self, parameters={**self.parameters, **parameters})
        copy._files = self.files()
        return copy

    def to_dict(self) -> dict:
        from facesynth import __version__

        return {"technique": self.technique, "facesynth_version": __version__, "edited": self.edited,
                **self.files(), "parameters": jsonable(dict(self.parameters))}


def remember_weights(model, path: str | os.PathLike):
    """Note on a loaded model the file it was read from (``model.weights_path``), so that the results it makes can
    name that file by SHA-256. Returns ``model``."""
    setattr(model, WEIGHTS_ATTR, Path(path))
    return model


def model_weights(*models) -> tuple[list[Path], dict]:
    """``(files, parameters)`` for a ``Provenance``: the weights files behind ``models``, and what could not be named.

    A path or registry name gives its file (``facesynth.weights.resolve``); a loaded model the file its loader noted
    (``remember_weights``). A model built, trained or changed in memory, or a checkpoint dict, has no file: its class
    name goes into ``{"weights_in_memory": [...]}``. ``None`` items are skipped.
    """
    from facesynth.weights import resolve

    files: list[Path] = []
    in_memory: list[str] = []
    for model in models:
        if model is None:
            continue
        if isinstance(model, (str, os.PathLike)):
            files.append(resolve(model))
        elif isinstance(getattr(model, WEIGHTS_ATTR, None), Path):
            files.append(getattr(model, WEIGHTS_ATTR))
        else:
            in_memory.append(type(model).__name__)
    return files, ({"weights_in_memory": in_memory} if in_memory else {})


def describe_file(path: str | os.PathLike) -> dict:
    p = Path(path)
    if p.is_file():
        return {"name": p.name, "sha256": _sha256(p), "bytes": p.stat().st_size}
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.is_file())
        tree = hashlib.sha256()
        for q in files:
            tree.update(f"{q.relative_to(p).as_posix()}\0{_sha256(q)}\n".encode())
        return {"name": p.name, "sha256": tree.hexdigest(), "files": len(files),
                "bytes": sum(q.stat().st_size for q in files),
                "digest": "sha256 over 'relative/path NUL sha256 LF' of every file, sorted by path"}
    raise ProvenanceError(f"{p}: provenance input not found; pass the files the result was made from")


def _sha256(path: Path) -> str:
    from facesynth.weights import sha256sum

    return sha256sum(path)


def jsonable(value: Any) -> Any:
    """Parameters as JSON values: paths by name, tuples as lists, numpy scalars as numbers, NaN/inf as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return Path(value).name
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if callable(getattr(value, "tolist", None)):      # numpy / torch scalars and small arrays
        return jsonable(value.tolist())
    return str(value)

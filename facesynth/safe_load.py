"""The only way facesynth reads checkpoints: nothing in a weights file is ever executed.

``load_torch`` uses ``torch.load(weights_only=True)``: tensors, containers and plain numbers load; a file that
asks for any other global (a class, a function such as ``os.system``) is refused with
UnsafeCheckpointError before anything runs. ``RestrictedUnpickler`` is the same idea for plain pickles (the
official StyleGAN TensorFlow files): only globals named in an allow-list resolve.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch

from facesynth.errors import CheckpointError, FacesynthError, UnsafeCheckpointError

__all__ = ["load_torch", "load_state_dict", "RestrictedUnpickler", "restricted_load", "LazyBytes",
           "restricted_load_lazy", "TorchVersionError", "TORCH_FLOOR"]

# The oldest torch (and its torchvision) the test suite passes on; pyproject.toml declares the same floor.
TORCH_FLOOR = "2.3"
TORCHVISION_FLOOR = "0.18"


class TorchVersionError(FacesynthError):
    """The installed torch lacks an API facesynth needs to read a checkpoint; the file itself may be fine."""


def _too_old(what: str) -> TorchVersionError:
    return TorchVersionError(
        f"the installed torch {torch.__version__} is too old to read checkpoints safely ({what}); facesynth needs "
        f"torch>={TORCH_FLOOR} with torchvision>={TORCHVISION_FLOOR}. The checkpoint file is not at fault: upgrade "
        f"with `pip install -U 'torch>={TORCH_FLOOR}' 'torchvision>={TORCHVISION_FLOOR}'` (on Colab, restart the "
        f"runtime afterwards)")


def _check_torch_load() -> None:
    """torch.load must take ``weights_only`` (torch >= 1.13); without it the file would be unpickled unguarded."""
    try:
        params = inspect.signature(torch.load).parameters
    except (TypeError, ValueError):  # no signature to read (a C wrapper): let torch.load itself decide
        return
    if "weights_only" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise _too_old("torch.load has no weights_only argument")


@contextlib.contextmanager
def _trusted_globals(extra: list[Any]) -> Iterator[None]:
    """Let ``torch.load(weights_only=True)`` also resolve ``extra``, for this load only.

    torch >= 2.5 has the ``safe_globals`` context manager; 2.4 only a process-wide list (``add_safe_globals``),
    restored afterwards. With nothing extra no torch API is touched, so older torch loads plain weights too.
    """
    if not extra:
        yield
        return
    ser = torch.serialization
    if hasattr(ser, "safe_globals"):
        with ser.safe_globals(extra):
            yield
    elif all(hasattr(ser, n) for n in ("add_safe_globals", "get_safe_globals", "clear_safe_globals")):
        before = list(ser.get_safe_globals())
        ser.add_safe_globals(extra)
        try:
            yield
        finally:
            ser.clear_safe_globals()
            ser.add_safe_globals(before)
    else:
        raise _too_old("torch.serialization has neither safe_globals nor add_safe_globals, needed for "
                       "extra_globals")


# an exception from torch's own API (a name or argument this torch does not have), not from the file's bytes
_API_ERROR = re.compile(r"module 'torch[\w.]*' has no attribute|unexpected keyword argument|"
                        r"takes \d+ positional arguments? but")

# how torch names a refused global: "Unsupported global: GLOBAL os.system" (>= 2.4), "Unsupported class
# posix.system" (2.1 - 2.3), "unsupported GLOBAL" (the legacy format)
_BLOCKED_GLOBAL = re.compile(r"(?:unsupported GLOBAL|Unsupported global:|Unsupported class)\s*(?:GLOBAL\s*)?([\w.]+)")
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def _check_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found; check the path (facesynth.weights.resolve finds "
                              f"official files by name)")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder, expected a checkpoint file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: checkpoint is empty (0 bytes); the download failed, fetch it again")
    return p


def load_torch(path: str | os.PathLike, map_location: str | torch.device = "cpu",
               extra_globals: Iterable[Any] = ()) -> Any:
    """Load a torch checkpoint (zip format or the pre-1.6 legacy format) with ``weights_only=True``.

    ``extra_globals`` lists further classes/functions the caller trusts this file to need (rarely useful).

    Raises:
        CheckpointError: missing, empty, truncated or non-torch file.
        UnsafeCheckpointError: the file references a global outside the weights-only allow-list;
            nothing in it was executed.
        TorchVersionError: the installed torch lacks an API this needs (older than ``TORCH_FLOOR``); never
            reported as a damaged file.
    """
    p = _check_path(path)
    _check_torch_load()
    # set up outside the try below: a missing torch API is a version problem, never a damaged file
    with _trusted_globals(list(extra_globals)):
        return _load_weights_only(p, map_location)


def _load_weights_only(p: Path, map_location: str | torch.device) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        blocked = _BLOCKED_GLOBAL.search(msg)
        culprit = blocked.group(1) if blocked else _first_global(p)
        if culprit:
            newer = (f" If it was saved by a torch newer than this one ({torch.__version__}), which may allow "
                     f"{culprit} in weights files, upgrading torch may read it." if culprit.startswith("torch.") else "")
            raise UnsafeCheckpointError(
                f"{p}: refused to load: the file references the Python global {culprit}, which a weights file "
                f"never needs and which could run code when unpickled; nothing was executed. Use the official "
                f"weights file, or re-save the state_dict from a trusted session.{newer}") from None
        raise CheckpointError(f"{p}: not a readable torch checkpoint (its bytes are neither a torch zip archive "
                              f"nor a weights pickle); the file is damaged or not a torch file, download it "
                              f"again") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, AttributeError,
            IndexError, TypeError) as e:
        if isinstance(e, (AttributeError, TypeError)) and _API_ERROR.search(str(e)):
            raise _too_old(f"{type(e).__name__}: {_first_line(str(e))}; or {p.name} was saved by a newer torch "
                           f"than this one") from e
        raise CheckpointError(f"{p}: not a readable torch checkpoint ({type(e).__name__}: {_first_line(str(e))}); "
                              f"the file is damaged, truncated or not a torch file, download it again") from None


def load_state_dict(path: str | os.PathLike, key: str | None = None, strip_prefix: str = "",
                    map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a checkpoint and return one state dict from it.

    ``key`` picks an entry of a checkpoint dict (``"generator"``, ``"state_dict"``...); ``strip_prefix`` removes
    a prefix such as ``"module."`` that DataParallel adds. Raises CheckpointError when the entry is missing or
    is not a mapping of names to tensors.
    """
    obj = load_torch(path, map_location=map_location)
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            keys = list(obj.keys())[:10] if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointError(f"{path}: has no {key!r} entry (it has {keys}); is this the right checkpoint?")
        obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict (names → tensors), got {type(obj).__name__}")
    if strip_prefix:
        obj = {(k[len(strip_prefix):] if k.startswith(strip_prefix) else k): v for k, v in obj.items()}
    return dict(obj)


def _first_global(path: Path, limit: int = 64 << 20) -> str | None:
    """The first global a plain pickle references, found by reading its opcodes without executing any.

    torch's weights-only reader stops at opcodes it does not support before naming a global; this static
    scan tells a pickle that imports something (unsafe) from bytes that are simply not a pickle (damaged).
    """
    import pickletools

    recent: list[str] = []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(io.BytesIO(f.read(limit))):
                if op.name == "GLOBAL":
                    return str(arg).replace(" ", ".")
                if op.name == "STACK_GLOBAL" and len(recent) >= 2:
                    return f"{recent[-2]}.{recent[-1]}"
                if op.name in _STRING_OPS:
                    recent.append(str(arg))
    except Exception:  # not a pickle: nothing that could run
        return None
    return None


def _first_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[0][:200] if lines else "no detail"


class RestrictedUnpickler(pickle._Unpickler):   # the pure-Python unpickler: BUILD can be checked
    """A pickle reader for which only allow-listed globals exist.

    ``allowed`` maps ``(module, name)`` to the object to use in its place: the real one when it is harmless
    (``collections.OrderedDict``), or a stand-in class that only records its state. Any other global, and any
    persistent id, raises UnsafeCheckpointError; since REDUCE can only call what ``find_class`` returned,
    nothing outside the allow-list can run. BUILD is allowed only on objects that define ``__setstate__``.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, allowed: Mapping[tuple[str, str], Any], source: str = "pickle"):
        super().__init__(file)
        self._allowed = dict(allowed)
        self._source = source

    def _load_build(self) -> None:
        # BUILD on an object without __setstate__ would set attributes with setattr: on an allowed class or
        # function that is a change to this process's code (a later load would see it), so only stand-ins
        # that define __setstate__ may be built
        inst = self.stack[-2] if len(self.stack) >= 2 else None
        if getattr(type(inst), "__setstate__", None) is None:
            raise UnsafeCheckpointError(f"{self._source}: refused to load: it sets attributes of a "
                                        f"{type(inst).__name__} object, which a weights file never does; nothing "
                                        f"was executed")
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = _load_build

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._source}: refused to load: it references {module}.{name}, which this file format never "
                f"needs; nothing was executed. Is it the official file?") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(f"{self._source}: refused to load: unexpected persistent id {pid!r}")


def restricted_load(path_or_bytes: str | os.PathLike | bytes, allowed: Mapping[tuple[str, str], Any],
                    on_error: Callable[[Exception], Exception] | None = None) -> Any:
    """Unpickle a file (or bytes) with RestrictedUnpickler; damaged data raises CheckpointError."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        return _restricted_load_stream(io.BytesIO(bytes(path_or_bytes)), "pickle", allowed, on_error)
    p = _check_path(path_or_bytes)
    with open(p, "rb") as f:      # streamed, not read whole: a large file is not held twice in memory
        return _restricted_load_stream(f, str(p), allowed, on_error)


def _restricted_load_stream(f, source: str, allowed: Mapping[tuple[str, str], Any],
                            on_error: Callable[[Exception], Exception] | None) -> Any:
    return _unpickle(RestrictedUnpickler(f, allowed, source=source), source, on_error)


def _unpickle(unpickler: pickle._Unpickler, source: str,
              on_error: Callable[[Exception], Exception] | None) -> Any:
    try:
        return unpickler.load()
    except (UnsafeCheckpointError, CheckpointError):
        raise
    except Exception as e:  # any parse failure of untrusted bytes is the file's fault
        err = on_error(e) if on_error else CheckpointError(
            f"{source}: not a readable pickle ({type(e).__name__}: {_first_line(str(e))}); download it again")
        raise err from None


class LazyBytes:
    """A ``bytes`` value of a pickle left in its file: where it is, and ``read()`` to fetch it (into a fresh,
    writable bytearray). The unpickler's memo then holds this small record instead of the data."""

    __slots__ = ("path", "offset", "size")

    def __init__(self, path: Path, offset: int, size: int):
        self.path, self.offset, self.size = path, offset, size

    def __len__(self) -> int:
        return self.size

    def read(self) -> bytearray:
        buf = bytearray(self.size)
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            if f.readinto(buf) != self.size:
                raise CheckpointError(f"{self.path}: ends inside a stored array; the file is truncated, download it again")
        return buf


class _LazyRestrictedUnpickler(RestrictedUnpickler):  # pure Python: its byte reads can be overridden
    """RestrictedUnpickler's allow-list, and every BINBYTES value left in the file as a LazyBytes.

    A pickle of several networks (StyleGAN's (G, D, Gs)) then costs memory only for the arrays the caller reads.
    Works whether a value sits inside a protocol-4 frame (Python <= 3.6 pickles) or after it (3.7+).
    """

    dispatch = dict(RestrictedUnpickler.dispatch)

    def __init__(self, file, path: Path, allowed: Mapping[tuple[str, str], Any]):
        super().__init__(file, allowed, source=str(path))
        self._fileobj, self._path, self._size = file, path, path.stat().st_size
        self._frame_start = 0

    def _load_frame(self) -> None:
        import struct

        frame_size, = struct.unpack("<Q", self.read(8))
        self._frame_start = self._fileobj.tell()
        self._unframer.load_frame(frame_size)

    def _lazy(self, size: int) -> None:
        frame = self._unframer.current_frame
        if frame is not None:
            pos = frame.tell()
            if pos + size > len(frame.getbuffer()):
                raise pickle.UnpicklingError("pickle exhausted before end of frame")
            frame.seek(size, 1)
            offset = self._frame_start + pos
        else:
            offset = self._fileobj.tell()
            self._fileobj.seek(size, 1)
        if offset + size > self._size:
            raise pickle.UnpicklingError(f"a {size}-byte value runs past the end of the file")
        self.append(LazyBytes(self._path, offset, size))

    def _load_binbytes(self) -> None:
        import struct

        self._lazy(struct.unpack("<I", self.read(4))[0])

    def _load_binbytes8(self) -> None:
        import struct

        self._lazy(struct.unpack("<Q", self.read(8))[0])

    dispatch[pickle.FRAME[0]] = _load_frame
    dispatch[pickle.BINBYTES[0]] = _load_binbytes
    dispatch[pickle.BINBYTES8[0]] = _load_binbytes8


def restricted_load_lazy(path: str | os.PathLike, allowed: Mapping[tuple[str, str], Any],
                         on_error: Callable[[Exception], Exception] | None = None) -> Any:
    """``restricted_load`` for large files: ``bytes`` values (array data) come back as LazyBytes, read on demand."""
    p = _check_path(path)
    with open(p, "rb") as f:
        return _unpickle(_LazyRestrictedUnpickler(f, p, allowed), str(p), on_error)


def check_state_dict(expected: Mapping[str, Any], found: Mapping[str, Any], what: str, hint: str = "",
                     show: int = 5) -> None:
    """Raise CheckpointError naming the first ``show`` missing, unexpected and mis-shaped keys of ``found``
    against ``expected`` (a model's state dict); ``hint`` ends the message (which file or config fits)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    misshaped = [f"{k} {tuple(found[k].shape)} (model: {tuple(v.shape)})"
                 for k, v in expected.items() if k in found and found[k].shape != v.shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            more = f" and {len(keys) - show} more" if len(keys) > show else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:show])}{more}")
    if problems:
        raise CheckpointError(f"{what} does not match the model: {'; '.join(problems)}. {hint}".rstrip())


def load_checkpoint(checkpoint: str | os.PathLike | Mapping[str, Any]) -> tuple[Any, str]:
    """``(data, source)`` of a checkpoint given as a file, a registry name (``facesynth.weights.resolve``) or an
    already loaded dict; ``source`` names it in messages. Files are read with ``load_torch`` (weights only)."""
    if isinstance(checkpoint, Mapping):
        return checkpoint, "checkpoint"
    from facesynth.weights import resolve

    path = resolve(checkpoint)
    return load_torch(path, map_location="cpu"), str(path)

"""StyleGAN checkpoints in and out: NVIDIA's TensorFlow pickles read without TensorFlow, and our own format.

The official files (``training/misc.py: save_pkl``) pickle the tuple ``(G, D, Gs)`` of
``dnnlib.tflib.network.Network`` objects. The official ``Network.__setstate__`` executes the Python source
stored in the file (``build_module_src``) to rebuild its graph; we never do. The pickle is read with
``facesynth.safe_load.RestrictedUnpickler`` where only five globals exist, each replaced by an inert stand-in:

* ``dnnlib.tflib.network.Network`` → ``_NetworkState`` (keeps the state dict, runs nothing)
* ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype`` → a float32 tensor built from the
  raw little-endian bytes (any other dtype is refused)
* ``numpy.core.multiarray.scalar`` → a Python float (the ``lod`` variables)

Anything else the file asks for (``os.system``, ``builtins.eval``, a ``copyreg`` trick…) raises
UnsafeCheckpointError before it exists, so nothing in the file can run. The architecture is derived from
the variables' names and shapes; switches that shapes cannot show (activation, blur filter, fused
upsampling, normalisations, truncation defaults) come from the networks' ``static_kwargs``, with the
official defaults where absent.

Memory: the pickle is parsed with ``facesynth.safe_load.restricted_load_lazy``, which leaves every array's
bytes in the file; only the chosen network's variables are then read, one at a time, and converted. Loading
the 1024² files (three networks, ~310 MB) needs about the size of Gs's weights (~110 MB) plus one array.

Our own format (``save_stylegan``) is a ``torch.save`` zip of plain data — the config as a dict and the
state dict — read back with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import math
import os
import re
import struct
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from facesynth.errors import CheckpointError, ConfigError
from facesynth.generate.config import StyleGANConfig
from facesynth.generate.model import StyleGAN
from facesynth.safe_load import LazyBytes, load_torch, restricted_load_lazy

__all__ = ["load_stylegan", "save_stylegan", "read_tf_pickle", "convert_tf_generator", "FORMAT"]

FORMAT = "facesynth-stylegan"
_NETWORK_KEYS = ("G", "D", "Gs")
# kwargs of G_style / G_mapping / G_synthesis that the variables' shapes do not reveal
_FLAGS = ("mapping_lrmul", "mapping_nonlinearity", "normalize_latents", "nonlinearity", "use_wscale",
          "use_pixel_norm", "use_instance_norm", "fused_scale", "blur_filter", "truncation_psi",
          "truncation_cutoff", "dlatent_avg_beta", "style_mixing_prob")


def load_stylegan(path: str | os.PathLike, device: str | torch.device = "cpu", network: str = "Gs") -> StyleGAN:
    """A StyleGAN generator in eval mode from an official TF pickle, our own ``save_stylegan`` file, or a
    registry name (``"stylegan-celebahq"``, ``"stylegan-ffhq"``; see ``facesynth.weights``).

    ``network`` picks ``"Gs"`` (the moving average the official images come from) or ``"G"`` from an official
    ``(G, D, Gs)`` pickle. Example::

        G = load_stylegan("karras2019stylegan-celebahq-1024x1024.pkl")
        img = G(torch.randn(1, 512), truncation_psi=0.7, truncation_cutoff=8, noise_mode="const")  # [1,3,1024,1024]

    Raises:
        WeightsNotFoundError: a registry name whose file is not on disk (the message says where to put it).
        UnsafeCheckpointError: the file references a global a weights file never needs; nothing was executed.
        CheckpointError: damaged, not a StyleGAN v1 generator, or inconsistent variables.
    """
    from facesynth.provenance.record import remember_weights
    from facesynth.weights import resolve

    p = resolve(path)
    if zipfile.is_zipfile(p):
        G = _load_own(p)
    else:
        G = convert_tf_generator(read_tf_pickle(p, network), source=str(p))
    return remember_weights(G.to(device).eval().requires_grad_(False), p)   # results name the file they came from


def save_stylegan(G: StyleGAN, path: str | os.PathLike) -> Path:
    """Write ``G`` in facesynth's weights-only format (atomic). ``load_stylegan`` reads it back."""
    from facesynth.training import atomic_torch_save

    state = {"format": FORMAT, "version": 1, "config": G.cfg.to_dict(),
             "state_dict": {k: v.detach().cpu() for k, v in G.state_dict().items()}}
    return atomic_torch_save(state, path)


def _load_own(path: Path) -> StyleGAN:
    obj = load_torch(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a torch file but not a facesynth StyleGAN checkpoint (no format "
                              f"{FORMAT!r}); give an official StyleGAN .pkl or a file written by save_stylegan")
    try:
        cfg = StyleGANConfig.from_dict(obj["config"])
    except (ConfigError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path}: its config is not a StyleGAN config ({e})") from None
    return _assemble(cfg, obj["state_dict"], str(path))


def _assemble(cfg: StyleGANConfig, state: dict[str, torch.Tensor], source: str) -> StyleGAN:
    with torch.device("meta"):
        G = StyleGAN(cfg)
    expected = G.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
           if k in state and state[k].shape != v.shape]
    if missing or unexpected or bad:
        raise CheckpointError(f"{source}: does not match its StyleGAN configuration (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, mis-shaped {bad[:5]}); the file is damaged or was "
                              f"written by another version")
    G.load_state_dict(state, assign=True)
    # buffers that are not saved (blur kernels) are rebuilt on the CPU
    for module in G.modules():
        if getattr(module, "blur_kernel", None) is not None and module.blur_kernel.is_meta:
            f = torch.tensor(cfg.blur_filter, dtype=torch.float32)
            f = torch.outer(f, f)
            module.blur_kernel = (f / f.sum()).expand(module.blur_kernel.shape[0], 1, *f.shape).clone()
    return G


# --- the official pickle ---------------------------------------------------------------------------------------
class _NetworkState:
    """Stand-in for ``dnnlib.tflib.network.Network``: stores the state dict, executes nothing."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise CheckpointError("a Network's state is not a dict; the file is damaged or not a StyleGAN pickle")
        self.state = state

    def get(self, key: str, default: Any = None) -> Any:
        return self.state.get(key, default)


class _DType:
    """Stand-in for ``numpy.dtype``: remembers the type code and byte order."""

    def __init__(self, code: Any = None, align: Any = False, copy: Any = True):
        self.code, self.order = code, "<"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and isinstance(state[1], str):
            self.order = state[1]

    @property
    def is_float32(self) -> bool:
        return self.code == "f4" and self.order in ("<", "|", "=")


class _NDArrayTag:
    """Stand-in for ``numpy.ndarray`` (only ever passed to ``_reconstruct``)."""


class _Array:
    """Stand-in for a numpy array: its shape, and where its float32 bytes are (read on demand by ``tensor()``)."""

    shape: tuple[int, ...]

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise CheckpointError("an array in the pickle has an unexpected state; the file is damaged")
        _version, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DType) or not dtype.is_float32:
            code = getattr(dtype, "code", type(dtype).__name__)
            raise CheckpointError(f"an array in the pickle has dtype {code!r}; StyleGAN pickles hold float32 only")
        if not isinstance(raw, (bytes, LazyBytes)) or not isinstance(shape, tuple) or \
                not all(isinstance(s, int) and s >= 0 for s in shape):
            raise CheckpointError("an array in the pickle has no raw float32 data; the file is damaged")
        if len(raw) != 4 * math.prod(shape):
            raise CheckpointError(f"an array of shape {shape} has {len(raw)} bytes of data; the file is damaged")
        self.shape, self._raw, self._fortran = shape, raw, bool(fortran)

    def tensor(self) -> torch.Tensor:
        """The array as a float32 tensor (read from the file now: nothing of it stays in memory before)."""
        buf = self._raw.read() if isinstance(self._raw, LazyBytes) else bytearray(self._raw)
        t = torch.frombuffer(buf, dtype=torch.float32) if buf else torch.zeros(0)
        if sys.byteorder == "big":
            t = t.view(torch.int32).byteswap().view(torch.float32)    # pragma: no cover
        shape = self.shape
        if self._fortran:
            return t.reshape(tuple(reversed(shape))).permute(*reversed(range(len(shape))))
        return t.reshape(shape)


def _reconstruct(cls: Any, shape: Any, code: Any) -> _Array:
    if cls is not _NDArrayTag:
        raise CheckpointError("the pickle rebuilds an array of an unexpected class; the file is damaged")
    return _Array()


def _scalar(dtype: Any, raw: Any) -> float:
    if not isinstance(dtype, _DType) or not dtype.is_float32 or not isinstance(raw, bytes) or len(raw) != 4:
        raise CheckpointError("a scalar in the pickle is not float32; the file is damaged or not a StyleGAN pickle")
    return struct.unpack("<f", raw)[0]


_ALLOWED = {("dnnlib.tflib.network", "Network"): _NetworkState, ("numpy", "ndarray"): _NDArrayTag,
            ("numpy", "dtype"): _DType}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):   # numpy 2 renamed numpy.core to numpy._core
    _ALLOWED[(_mod, "_reconstruct")] = _reconstruct
    _ALLOWED[(_mod, "scalar")] = _scalar


def read_tf_pickle(path: str | os.PathLike, network: str = "Gs") -> _NetworkState:
    """The state of one network of an official pickle (``"G"``, ``"D"`` or ``"Gs"``), read safely.

    A file holding a single Network (rather than the (G, D, Gs) tuple) is accepted as that network.
    """
    if network not in _NETWORK_KEYS:
        raise ConfigError(f"network must be one of {_NETWORK_KEYS}, got {network!r}")
    obj = restricted_load_lazy(path, _ALLOWED, on_error=lambda e: CheckpointError(
        f"{path}: not a readable StyleGAN pickle ({type(e).__name__}: {e}); the file is damaged or truncated, "
        f"download it again"))
    if isinstance(obj, _NetworkState):
        return obj
    if isinstance(obj, tuple) and len(obj) == 3 and all(isinstance(n, _NetworkState) for n in obj):
        return obj[_NETWORK_KEYS.index(network)]
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not the official (G, D, Gs) tuple of Networks; "
                          f"is it a StyleGAN v1 pickle?")


def _variables(net: _NetworkState, what: str) -> dict[str, Any]:
    version = net.get("version")
    if version not in (2, 3):
        hint = " (version 4 is StyleGAN2; this loader reads StyleGAN v1)" if version == 4 else ""
        raise CheckpointError(f"{what}: Network state version {version!r} is not supported{hint}")
    variables = net.get("variables")
    if not isinstance(variables, list) or not all(isinstance(v, tuple) and len(v) == 2 for v in variables):
        raise CheckpointError(f"{what}: its variables are not a list of (name, value) pairs; the file is damaged")
    out = {}
    for name, value in variables:
        if not isinstance(name, str) or not isinstance(value, (_Array, float)):
            raise CheckpointError(f"{what}: variable {name!r} is not a float32 array; the file is damaged")
        out[name] = value
    return out


def convert_tf_generator(gs: _NetworkState, source: str = "pickle") -> StyleGAN:
    """A StyleGAN module from the state of an official ``G_style`` network (its mapping and synthesis parts).

    TensorFlow layouts become PyTorch ones: dense ``[in, out]`` → ``[out, in]``; convs HWIO → OIHW (the fused
    up-convolution too: the model applies the official pad-and-sum at run time). Variables are read from the
    file one at a time, so loading holds the converted Gs plus one array (the other networks of the file are
    never read).
    """
    if gs.get("build_func_name") != "G_style":
        raise CheckpointError(f"{source}: the network is a {gs.get('build_func_name')!r}, not a StyleGAN generator "
                              f"(G_style); use the G or Gs network of an official StyleGAN v1 pickle")
    comps = gs.get("components") or {}
    if not isinstance(comps, dict) or not all(isinstance(comps.get(k), _NetworkState) for k in ("mapping", "synthesis")):
        raise CheckpointError(f"{source}: the generator has no mapping/synthesis components; the file is damaged")
    own = _variables(gs, source)
    mapping = _variables(comps["mapping"], source)
    synthesis = _variables(comps["synthesis"], source)
    cfg = _derive_config(gs, comps, mapping, synthesis, source)
    state: dict[str, torch.Tensor] = {}
    _convert_mapping(mapping, state, source)
    _convert_synthesis(synthesis, cfg, state, source)
    state["dlatent_avg"] = _take(own, "dlatent_avg", source).contiguous()
    lod = own.get("lod", 0.0)
    state["synthesis.lod"] = torch.tensor(float(lod))     # G_style copies its own lod into G_synthesis
    if float(lod) != 0.0:
        warnings.warn(f"{source}: lod = {float(lod):g}: a network in the middle of progressive growing; its images "
                      f"blend two resolutions as the official one does", stacklevel=3)
    return _assemble(cfg, state, source)


def _take(vars_: dict, name: str, source: str) -> torch.Tensor:
    """Read one variable from the file and forget it: at most one array is held besides the converted ones."""
    if name not in vars_ or not isinstance(vars_[name], _Array):
        raise CheckpointError(f"{source}: variable {name!r} is missing; the file is damaged or not StyleGAN v1")
    return vars_.pop(name).tensor()


def _derive_config(gs: _NetworkState, comps: dict, mapping: dict, synthesis: dict, source: str) -> StyleGANConfig:
    dense = sorted(int(m.group(1)) for k in mapping if (m := re.fullmatch(r"Dense(\d+)/weight", k)))
    if not dense or dense != list(range(len(dense))):
        raise CheckpointError(f"{source}: the mapping network has no Dense0..N layers; not a StyleGAN v1 generator")
    res = sorted(int(m.group(1)) for k in synthesis if (m := re.fullmatch(r"(\d+)x\1/Conv1/weight", k)))
    log2 = int(math.log2(res[-1])) if res else 2
    if res != [2 ** r for r in range(3, log2 + 1)] or "4x4/Conv/weight" not in synthesis:
        raise CheckpointError(f"{source}: synthesis blocks {res} are not 8, 16, … up to the output resolution")
    channels = [synthesis["4x4/Conv/weight"].shape[3]] + [synthesis[f"{r}x{r}/Conv1/weight"].shape[3] for r in res]
    label = mapping.get("LabelConcat/weight")
    first = mapping["Dense0/weight"].shape
    kwargs: dict[str, Any] = dict(
        resolution=2 ** log2, num_channels=int(synthesis["ToRGB_lod0/weight"].shape[3]) if "ToRGB_lod0/weight" in synthesis else 3,
        label_size=int(label.shape[0]) if label is not None else 0,
        latent_size=int(label.shape[1]) if label is not None else int(first[0]),
        dlatent_size=int(mapping[f"Dense{dense[-1]}/weight"].shape[1]), mapping_layers=len(dense),
        mapping_fmaps=int(first[1]), channels=tuple(int(c) for c in channels),
        use_styles=any(k.endswith("StyleMod/weight") for k in synthesis),
        const_input_layer="4x4/Const/const" in synthesis, use_noise="noise0" in synthesis)
    extra = {}
    for net in (gs, comps["mapping"], comps["synthesis"]):
        static = net.get("static_kwargs") or {}
        if not isinstance(static, dict):
            raise CheckpointError(f"{source}: static_kwargs is not a dict; the file is damaged")
        for k, v in static.items():
            if k in _FLAGS:
                kwargs[k] = tuple(v) if isinstance(v, list) else v
            elif k not in kwargs:
                extra[k] = v
    kwargs["extra"] = extra
    try:
        return StyleGANConfig(**kwargs)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{source}: unsupported StyleGAN settings ({e})") from None


def _convert_mapping(m: dict, state: dict, source: str) -> None:
    if "LabelConcat/weight" in m:
        state["mapping.label_embed"] = _take(m, "LabelConcat/weight", source).contiguous()
    i = 0
    while f"Dense{i}/weight" in m:
        state[f"mapping.dense.{i}.weight"] = _take(m, f"Dense{i}/weight", source).t().contiguous()
        state[f"mapping.dense.{i}.bias"] = _take(m, f"Dense{i}/bias", source).contiguous()
        i += 1


def _convert_synthesis(s: dict, cfg: StyleGANConfig, state: dict, source: str) -> None:
    def conv(name: str) -> torch.Tensor:           # HWIO → OIHW
        return _take(s, name, source).permute(3, 2, 0, 1).contiguous()

    def epilogue(tf: str, pt: str) -> None:
        if cfg.use_noise:
            state[f"{pt}.noise_strength"] = _take(s, f"{tf}/Noise/weight", source).contiguous()
        state[f"{pt}.bias"] = _take(s, f"{tf}/bias", source).contiguous()
        if cfg.use_styles:
            state[f"{pt}.style.weight"] = _take(s, f"{tf}/StyleMod/weight", source).t().contiguous()
            state[f"{pt}.style.bias"] = _take(s, f"{tf}/StyleMod/bias", source).contiguous()

    for i in range(cfg.num_layers if cfg.use_noise else 0):
        state[f"synthesis.noise{i}"] = _take(s, f"noise{i}", source).contiguous()
    if cfg.const_input_layer:
        state["synthesis.const"] = _take(s, "4x4/Const/const", source).contiguous()
        epilogue("4x4/Const", "synthesis.input_epilogue")
    else:
        state["synthesis.dense.weight"] = _take(s, "4x4/Dense/weight", source).t().contiguous()
        epilogue("4x4/Dense", "synthesis.input_epilogue")
    state["synthesis.convs.0.weight"] = conv("4x4/Conv/weight")
    epilogue("4x4/Conv", "synthesis.convs.0.epilogue")
    for b in range(1, len(cfg.channels)):
        r = 4 << b
        for j, part in ((2 * b - 1, "Conv0_up"), (2 * b, "Conv1")):
            state[f"synthesis.convs.{j}.weight"] = conv(f"{r}x{r}/{part}/weight")
            epilogue(f"{r}x{r}/{part}", f"synthesis.convs.{j}.epilogue")
    for k in range(len(cfg.channels)):
        state[f"synthesis.torgb.{k}.weight"] = conv(f"ToRGB_lod{k}/weight")
        state[f"synthesis.torgb.{k}.bias"] = _take(s, f"ToRGB_lod{k}/bias", source).contiguous()
    s.pop("lod", None)
    if s:
        raise CheckpointError(f"{source}: unexpected synthesis variables {sorted(s)[:5]}; not a StyleGAN v1 "
                              f"generator this loader knows")

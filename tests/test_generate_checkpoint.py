"""load_stylegan reads official pickles safely: hostile files are refused before anything runs, the embedded
build source is never executed, bad input says what to do; our own format is weights-only and round-trips."""
from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from facesynth.errors import CheckpointError, ConfigError, UnsafeCheckpointError, WeightsNotFoundError
from facesynth.generate import StyleGAN, StyleGANConfig, load_stylegan, save_stylegan

DATA = Path(__file__).parent / "data" / "stylegan"


class _Payload:
    """Unpickling this runs ``os.system``: what a hostile weights file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def fake_dnnlib(monkeypatch):
    """A class pickled under the official name dnnlib.tflib.network.Network, with an official-style state."""
    module = types.ModuleType("dnnlib.tflib.network")

    class Network:
        def __init__(self, state):
            self._state = state

        def __getstate__(self):
            return self._state

    Network.__module__ = "dnnlib.tflib.network"
    Network.__qualname__ = "Network"
    module.Network = Network
    for name in ("dnnlib", "dnnlib.tflib"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "dnnlib.tflib.network", module)
    return Network


def _state(name, variables, components=None, func="G_style"):
    return {"version": 3, "name": name, "static_kwargs": {}, "components": components or {},
            "build_module_src": "", "build_func_name": func, "variables": variables}


def test_payload_at_top_level_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps((_Payload(marker), None, None), protocol=4))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_stylegan(path)
    assert not marker.exists()


def test_payload_hidden_in_network_variables_is_refused_and_not_run(tmp_path, fake_dnnlib):
    marker = tmp_path / "pwned"
    mapping = fake_dnnlib(_state("G_mapping", [("Dense0/weight", np.ones((4, 4), np.float32)),
                                                ("Dense0/bias", _Payload(marker))], func="G_mapping"))
    gs = fake_dnnlib(_state("Gs", [("lod", np.float32(0)), ("dlatent_avg", np.zeros(4, np.float32))],
                            {"mapping": mapping}))
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps((gs, gs, gs), protocol=4))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_stylegan(path)
    assert not marker.exists()


def test_embedded_build_source_is_never_executed(tmp_path, monkeypatch):
    # the fixture's placeholder source, swapped (same length, so the pickle stays valid) for code that would
    # leave a file behind if the official Network.__setstate__ ran it
    placeholder = b"# official build source removed: facesynth never executes it\n"
    code = b"open('pwned', 'w').write('ran')"
    code = code.ljust(len(placeholder) - 1, b" ") + b"\n"
    data = (DATA / "r32.pkl").read_bytes()
    assert data.count(placeholder) == 1        # pickle memoizes the string: every Network refers to this copy
    path = tmp_path / "src.pkl"
    path.write_bytes(data.replace(placeholder, code))
    monkeypatch.chdir(tmp_path)
    G = load_stylegan(path)
    assert G.resolution == 32 and not (tmp_path / "pwned").exists()


def test_other_numpy_dtypes_are_refused(tmp_path, fake_dnnlib):
    gs = fake_dnnlib(_state("Gs", [("dlatent_avg", np.zeros(4, np.float64))]))
    path = tmp_path / "f64.pkl"
    path.write_bytes(pickle.dumps((gs, gs, gs), protocol=4))
    with pytest.raises(CheckpointError, match="float32"):
        load_stylegan(path)


def test_discriminator_is_not_a_generator():
    with pytest.raises(CheckpointError, match="D_basic"):
        load_stylegan(DATA / "r32.pkl", network="D")


def test_truncated_pickle_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes((DATA / "r32.pkl").read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="download it again"):
        load_stylegan(path)


def test_missing_file_and_absent_registry_weights_say_what_to_do(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"nope\.pkl: no such file\. Give the path of a weights file"):
        load_stylegan(tmp_path / "nope.pkl")
    with pytest.raises(WeightsNotFoundError, match="karras2019stylegan-celebahq-1024x1024.pkl"):
        load_stylegan("stylegan-celebahq")


def test_own_format_round_trips_and_is_weights_only(tmp_path):
    G = load_stylegan(DATA / "variant.pkl")
    path = save_stylegan(G, tmp_path / "g.pt")
    H = load_stylegan(path)
    assert H.cfg == G.cfg
    ref = np.load(DATA / "variant.npz")
    z, c = torch.from_numpy(ref["z"]), torch.from_numpy(ref["labels"])
    with torch.no_grad():
        assert torch.equal(G(z, c), H(z, c))
    torch.save({"format": "facesynth-stylegan", "evil": _Payload(tmp_path / "pwned")}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError):
        load_stylegan(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_bad_inputs_raise_clear_errors():
    G = StyleGAN(StyleGANConfig(resolution=8, latent_size=8, dlatent_size=8, mapping_fmaps=8, fmap_base=16, fmap_max=8))
    with pytest.raises(ConfigError, match=r"z must have shape \[N, 8\]"):
        G(torch.zeros(2, 5))
    with pytest.raises(ConfigError, match="noise_mode"):
        G(torch.zeros(2, 8), noise_mode="loud")
    with pytest.raises(ConfigError, match="power of two"):
        StyleGANConfig(resolution=48)


def test_only_the_chosen_networks_arrays_are_read(monkeypatch):
    # the (G, D, Gs) file's arrays stay in the file until converted, and only Gs's are read: loading the
    # 1024² files then needs about Gs's weights in memory, not the whole file (bench/generate.py measures it)
    from facesynth.safe_load import LazyBytes

    read = []
    original = LazyBytes.read
    monkeypatch.setattr(LazyBytes, "read", lambda self: read.append(self.size) or original(self))
    G = load_stylegan(DATA / "r32.pkl")
    sizes = [v.numel() * 4 for k, v in G.state_dict().items() if k != "synthesis.lod"]
    assert sum(read) == sum(n for n in sizes if n >= 256)      # smaller values are inline (SHORT_BINBYTES)
    assert (DATA / "r32.pkl").stat().st_size > 2.5 * sum(sizes)


def test_arrays_inside_protocol_4_frames_load_too(tmp_path):
    # Python 3.6 (the released files) kept large values inside frames; 3.7+ writes them after. The same stream
    # re-framed as one big frame must load to the same network.
    import pickletools
    import struct

    data = (DATA / "r128.pkl").read_bytes()         # its 128x128 noise maps (64 KiB) were written after frames
    ops = list(pickletools.genops(data))
    assert ops[0][0].name == "PROTO"
    body, last = bytearray(), 2
    for op, _, pos in ops[1:]:
        if op.name == "FRAME":
            body += data[last:pos]
            last = pos + 9
    body += data[last:]
    path = tmp_path / "one_frame.pkl"
    path.write_bytes(data[:2] + b"\x95" + struct.pack("<Q", len(body)) + bytes(body))
    assert sum(op.name == "FRAME" for op, _, _ in pickletools.genops(path.read_bytes())) == 1
    z = torch.from_numpy(np.load(DATA / "r128.npz")["z"])
    with torch.no_grad():
        assert torch.equal(load_stylegan(path)(z), load_stylegan(DATA / "r128.pkl")(z))


def test_setting_attributes_of_the_allowed_classes_is_refused(tmp_path):
    # BUILD applied to an allowed class itself (the numpy.ndarray stand-in) rather than an instance would set
    # class attributes with setattr: a change to this process's code that every later load would see
    from facesynth.generate import checkpoint

    data = (b"\x80\x04\x8c\x05numpy\x94\x8c\x07ndarray\x94\x93\x94"        # the class numpy.ndarray
            b"N}\x8c\x06hacked\x88s\x86b.")               # BUILD (None, {"hacked": True}), STOP
    (tmp_path / "build.pkl").write_bytes(data)
    with pytest.raises(UnsafeCheckpointError, match="sets attributes"):
        load_stylegan(tmp_path / "build.pkl")
    assert not hasattr(checkpoint._NDArrayTag, "hacked")

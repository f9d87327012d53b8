"""facesynth.safe_load: weights load, anything that would run code is refused before it runs."""
from __future__ import annotations

import collections
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from facesynth.errors import CheckpointError, UnsafeCheckpointError
from facesynth.safe_load import (TORCH_FLOOR, RestrictedUnpickler, TorchVersionError, load_state_dict, load_torch,
                                 restricted_load)

FORMATS = {"zip": {}, "legacy": {"_use_new_zipfile_serialization": False}}


def _state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(8, 3, 3, 3, generator=g),
        "conv.bias": torch.randn(8, generator=g),
        "bn.running_mean": torch.randn(8, generator=g),
        "bn.num_batches_tracked": torch.tensor(17, dtype=torch.long),
        "half": torch.randn(4, 4, generator=g).half(),
    }


def _assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
        assert torch.equal(a[k], b[k]), k


class _Evil:
    """Pickles as a call to os.system: loading it unguarded would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ------------------------------------------------------------------------------------------------ round trips

@pytest.mark.parametrize("fmt", FORMATS)
def test_state_dict_round_trip(tmp_path, fmt):
    sd = _state_dict()
    torch.save(sd, tmp_path / "sd.pth", **FORMATS[fmt])
    if fmt == "zip":
        assert zipfile.is_zipfile(tmp_path / "sd.pth")
    else:
        assert not zipfile.is_zipfile(tmp_path / "sd.pth")
    _assert_same(load_torch(tmp_path / "sd.pth"), sd)
    _assert_same(load_state_dict(tmp_path / "sd.pth"), sd)


def test_ordered_dict_from_module_round_trip(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    torch.save(net.state_dict(), tmp_path / "net.pth")
    loaded = load_torch(tmp_path / "net.pth")
    assert isinstance(loaded, collections.OrderedDict)
    net2 = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    net2.load_state_dict(loaded)
    x = torch.randn(1, 3, 8, 8)
    net.eval(), net2.eval()
    assert torch.equal(net(x), net2(x))


@pytest.mark.parametrize("fmt", FORMATS)
def test_nested_checkpoint_with_ints(tmp_path, fmt):
    ckpt = {
        "generator": _state_dict(1),
        "kp_detector": _state_dict(2),
        "optimizer_generator": {"state": {}, "param_groups": [{"lr": 2e-4, "betas": (0.5, 0.999), "params": [0, 1]}]},
        "epoch": 149,
        "note": "vox",
        "flags": [True, None, 3.5],
    }
    torch.save(ckpt, tmp_path / "vox-cpk.pth.tar", **FORMATS[fmt])
    got = load_torch(tmp_path / "vox-cpk.pth.tar")
    assert got["epoch"] == 149 and isinstance(got["epoch"], int)
    assert got["note"] == "vox" and got["flags"] == [True, None, 3.5]
    assert got["optimizer_generator"]["param_groups"][0]["betas"] == (0.5, 0.999)
    _assert_same(got["generator"], ckpt["generator"])
    _assert_same(got["kp_detector"], ckpt["kp_detector"])


def test_load_state_dict_key_and_strip_prefix(tmp_path):
    sd = _state_dict()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {}, "global_step": 3}
    torch.save(wrapped, tmp_path / "wav2lip.pth")
    got = load_state_dict(tmp_path / "wav2lip.pth", key="state_dict", strip_prefix="module.")
    _assert_same(got, sd)
    kept = load_state_dict(tmp_path / "wav2lip.pth", key="state_dict")
    assert sorted(kept) == sorted(f"module.{k}" for k in sd)


def test_load_state_dict_missing_key_names_available(tmp_path):
    torch.save({"generator": _state_dict(), "epoch": 5}, tmp_path / "ck.pth")
    with pytest.raises(CheckpointError) as ei:
        load_state_dict(tmp_path / "ck.pth", key="kp_detector")
    msg = str(ei.value)
    assert "kp_detector" in msg and "generator" in msg and "epoch" in msg
    assert not isinstance(ei.value, UnsafeCheckpointError)


def test_load_state_dict_rejects_non_state_dict(tmp_path):
    torch.save({"generator": _state_dict(), "epoch": 5}, tmp_path / "ck.pth")
    with pytest.raises(CheckpointError, match="state dict"):
        load_state_dict(tmp_path / "ck.pth")                 # the top level holds an int
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="has no 'x' entry"):
        load_state_dict(tmp_path / "list.pth", key="x")


# ------------------------------------------------------------------------------------------------ malicious

@pytest.mark.parametrize("how", ["zip", "legacy", "pickle"])
def test_malicious_checkpoint_refused_without_running(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if how == "pickle":
        payload = {"epoch": 3, "trap": _Evil(marker)}
        path.write_bytes(pickle.dumps(payload))
    else:
        payload = {"state_dict": _state_dict(), "trap": _Evil(marker)}
        torch.save(payload, path, **FORMATS[how])
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError) as ei:
        load_torch(path)
    assert "system" in str(ei.value) and "nothing was executed" in str(ei.value)
    with pytest.raises(UnsafeCheckpointError):
        load_state_dict(path, key="state_dict")
    assert not marker.exists()
    # the payload is real: an unguarded pickle.load would have run it
    if how == "pickle":
        pickle.loads(path.read_bytes())
        assert marker.exists()


def test_plain_pickle_with_tensors_and_payload_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"w": torch.ones(3), "trap": _Evil(marker)}))
    with pytest.raises(UnsafeCheckpointError):
        load_torch(path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ damaged

def _damaged(tmp_path, kind):
    p = tmp_path / f"{kind}.pth"
    if kind == "random":
        p.write_bytes(np.random.default_rng(3).bytes(4096))
    elif kind == "truncated_zip":
        torch.save(_state_dict(), tmp_path / "full.pth")
        data = (tmp_path / "full.pth").read_bytes()
        p.write_bytes(data[:len(data) // 2])
    elif kind == "truncated_legacy":
        torch.save(_state_dict(), tmp_path / "full.pth", _use_new_zipfile_serialization=False)
        data = (tmp_path / "full.pth").read_bytes()
        p.write_bytes(data[:len(data) // 2])
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("<html>Google Drive: virus scan warning</html>\n")
    elif kind == "folder":
        p.mkdir()
    # "missing": nothing is created
    return p


@pytest.mark.parametrize("kind", ["random", "truncated_zip", "truncated_legacy", "empty", "missing", "text",
                                  "folder"])
def test_damaged_checkpoint_is_checkpoint_error_not_unsafe(tmp_path, kind):
    path = _damaged(tmp_path, kind)
    with pytest.raises(CheckpointError) as ei:
        load_torch(path)
    assert type(ei.value) is CheckpointError
    assert str(path) in str(ei.value)


def test_damaged_messages_say_what(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_torch(_damaged(tmp_path, "missing"))
    with pytest.raises(CheckpointError, match="empty"):
        load_torch(_damaged(tmp_path, "empty"))


# ------------------------------------------------------------------------------------------------ torch versions
# A torch older than the floor must never make a good file look damaged ("download it again").

class _Trusted:
    """A class a caller trusts a checkpoint to need (load_torch's extra_globals)."""

    def __init__(self, value=0):
        self.value = value


def _save_trusted(tmp_path):
    path = tmp_path / "trusted.pth"
    torch.save({"w": torch.ones(2), "obj": _Trusted(3)}, path)
    return path


def test_extra_globals_load_for_this_call_only(tmp_path):
    if not hasattr(torch.serialization, "add_safe_globals"):
        pytest.skip("torch < 2.4 cannot allow extra globals (a TorchVersionError, tested below)")
    path = _save_trusted(tmp_path)
    assert load_torch(path, extra_globals=[_Trusted])["obj"].value == 3
    with pytest.raises(UnsafeCheckpointError, match="_Trusted"):
        load_torch(path)                       # not left allowed for later loads


def test_extra_globals_on_torch_2_4_use_add_safe_globals_and_restore_the_list(tmp_path, monkeypatch):
    """torch 2.4 has add_safe_globals but no safe_globals context manager."""
    ser = torch.serialization
    if not hasattr(ser, "add_safe_globals"):
        pytest.skip("this torch has no add_safe_globals")
    monkeypatch.delattr(ser, "safe_globals", raising=False)
    path = _save_trusted(tmp_path)
    before = set(ser.get_safe_globals())           # torch keeps a set: the order is not stable
    assert load_torch(path, extra_globals=[_Trusted])["obj"].value == 3
    assert set(ser.get_safe_globals()) == before
    with pytest.raises(UnsafeCheckpointError):
        load_torch(path)


def test_plain_weights_need_no_safe_globals_api(tmp_path, monkeypatch):
    """Without extra_globals nothing beyond torch.load(weights_only=True) is used, so older torch reads weights."""
    for name in ("safe_globals", "add_safe_globals", "get_safe_globals", "clear_safe_globals"):
        monkeypatch.delattr(torch.serialization, name, raising=False)
    torch.save(_state_dict(), tmp_path / "sd.pth")
    _assert_same(load_torch(tmp_path / "sd.pth"), _state_dict())


def _assert_version_error(ei):
    msg = str(ei.value)
    assert isinstance(ei.value, TorchVersionError) and not isinstance(ei.value, CheckpointError)
    assert torch.__version__ in msg and f"torch>={TORCH_FLOOR}" in msg
    assert "damaged" not in msg and "download it again" not in msg


def test_missing_safe_globals_api_is_a_version_error_not_a_damaged_file(tmp_path, monkeypatch):
    for name in ("safe_globals", "add_safe_globals", "get_safe_globals", "clear_safe_globals"):
        monkeypatch.delattr(torch.serialization, name, raising=False)
    with pytest.raises(TorchVersionError) as ei:
        load_torch(_save_trusted(tmp_path), extra_globals=[_Trusted])
    _assert_version_error(ei)


@pytest.mark.parametrize("error", [
    AttributeError("module 'torch.serialization' has no attribute 'safe_globals'"),
    AttributeError("module 'torch' has no attribute 'float8_e4m3fn'"),
    TypeError("load() got an unexpected keyword argument 'weights_only'"),
])
def test_torch_api_errors_inside_load_are_version_errors(tmp_path, monkeypatch, error):
    torch.save(_state_dict(), tmp_path / "sd.pth")

    def old_load(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "load", old_load)
    with pytest.raises(TorchVersionError) as ei:
        load_torch(tmp_path / "sd.pth")
    _assert_version_error(ei)


def test_torch_load_without_weights_only_is_a_version_error(tmp_path, monkeypatch):
    """torch < 1.13: torch.load would unpickle the file unguarded, so it is never called."""
    torch.save(_state_dict(), tmp_path / "sd.pth")
    called = []

    def ancient_load(f, map_location=None, pickle_module=pickle):
        called.append(f)

    monkeypatch.setattr(torch, "load", ancient_load)
    with pytest.raises(TorchVersionError) as ei:
        load_torch(tmp_path / "sd.pth")
    _assert_version_error(ei)
    assert not called


def test_data_errors_inside_load_stay_checkpoint_errors(tmp_path, monkeypatch):
    torch.save(_state_dict(), tmp_path / "sd.pth")

    def confused_load(*args, **kwargs):
        raise AttributeError("'int' object has no attribute 'seek'")

    monkeypatch.setattr(torch, "load", confused_load)
    with pytest.raises(CheckpointError, match="damaged"):
        load_torch(tmp_path / "sd.pth")


# ------------------------------------------------------------------------------------------------ restricted

ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict}


def test_restricted_load_allows_listed_global(tmp_path):
    obj = collections.OrderedDict([("a", 1), ("b", [2.5, "x"]), ("c", (None, True))])
    data = pickle.dumps(obj, protocol=2)
    got = restricted_load(data, ALLOWED)
    assert type(got) is collections.OrderedDict and got == obj and list(got) == ["a", "b", "c"]
    (tmp_path / "od.pkl").write_bytes(pickle.dumps(obj, protocol=4))
    assert restricted_load(tmp_path / "od.pkl", ALLOWED) == obj


def test_restricted_load_stand_in_class(monkeypatch):
    class Recorder:
        def __setstate__(self, state):
            self.state = state

    class Original:
        def __init__(self):
            self.w = [1, 2, 3]

    import sys
    import types
    Original.__module__, Original.__qualname__ = "dnnlib.tflib.network", "Network"
    for name in ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["dnnlib.tflib.network"].Network = Original
    data = pickle.dumps(Original(), protocol=2)
    assert b"dnnlib.tflib.network" in data
    got = restricted_load(data, {("dnnlib.tflib.network", "Network"): Recorder})
    assert isinstance(got, Recorder) and got.state == {"w": [1, 2, 3]}


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_restricted_load_refuses_everything_else(tmp_path, protocol):
    marker = tmp_path / "pwned"
    data = pickle.dumps({"x": _Evil(marker)}, protocol=protocol)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        restricted_load(data, ALLOWED)
    (tmp_path / "evil.pkl").write_bytes(data)
    with pytest.raises(UnsafeCheckpointError):
        restricted_load(tmp_path / "evil.pkl", ALLOWED)
    import io
    with pytest.raises(UnsafeCheckpointError):
        RestrictedUnpickler(io.BytesIO(data), ALLOWED).load()
    # an allowed-looking but unlisted global is refused too
    with pytest.raises(UnsafeCheckpointError, match="collections.defaultdict"):
        restricted_load(pickle.dumps(collections.defaultdict(int), protocol=protocol), ALLOWED)
    assert not marker.exists()


def test_restricted_load_refuses_persistent_ids():
    import io

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage0" if isinstance(obj, bytes) else None

    buf = io.BytesIO()
    P(buf, protocol=2).dump({"a": b"tensor bytes"})
    with pytest.raises(UnsafeCheckpointError, match="persistent"):
        restricted_load(buf.getvalue(), ALLOWED)


def test_restricted_load_damaged_is_checkpoint_error(tmp_path):
    good = pickle.dumps(collections.OrderedDict(a=list(range(100))), protocol=2)
    for data in (good[: len(good) // 2], np.random.default_rng(5).bytes(500), b"not a pickle"):
        with pytest.raises(CheckpointError) as ei:
            restricted_load(data, ALLOWED)
        assert type(ei.value) is CheckpointError
    with pytest.raises(CheckpointError):
        restricted_load(tmp_path / "missing.pkl", ALLOWED)
    # on_error turns a parse failure into the caller's own error
    with pytest.raises(KeyError):
        restricted_load(b"garbage", ALLOWED, on_error=lambda e: KeyError("custom"))


def test_restricted_load_refuses_to_set_attributes_of_an_allowed_class():
    # GLOBAL collections.OrderedDict, then BUILD with a (None, slotstate) pair: the plain unpickler calls
    # setattr on the class itself (an allow-listed Python class would be changed for the whole process)
    data = (b"\x80\x02ccollections\nOrderedDict\nq\x00N}q\x01X\x0f\x00\x00\x00facesynth_taint"
            b"q\x02K\x01s\x86q\x03b.")
    with pytest.raises(UnsafeCheckpointError, match="sets attributes"):
        restricted_load(data, ALLOWED)
    assert not hasattr(collections.OrderedDict, "facesynth_taint")

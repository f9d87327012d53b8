"""Shared fixtures: real sample media, and an environment in which no test reaches the network or user caches."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")          # no display in CI; must come before anything imports pyplot
matplotlib.get_cachedir()      # fix matplotlib's cache folder now, before XDG_CACHE_HOME is redirected per test

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from facesynth.samples import Samples, ensure_samples  # noqa: E402


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> Samples:
    """Real media copied from pip packages into a session tmp folder (never into the checkout's data/)."""
    return ensure_samples(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="session")
def notebook_work(tmp_path_factory) -> Path:
    """One folder for the notebooks' OUT folders (nb01, nb02, nb03), as a user's ``work/``: notebook 04's test
    draws the paper figures from what the notebook tests wrote there (and runs what is missing)."""
    return tmp_path_factory.mktemp("notebook_work")


@pytest.fixture(scope="session")
def _config_home(tmp_path_factory) -> Path:
    """One config folder for the session: the local C2PA signer that provenance makes on first use lives there,
    never in the user's ~/.config."""
    return tmp_path_factory.mktemp("config")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory, _config_home):
    """Offline, with empty weights/torch-hub/cache folders, so tests neither download nor see real weights; the
    provenance signer in a session config folder, and no user certificate or FACESYNTH_PROVENANCE from outside.

    The folders live outside the test's own ``tmp_path`` so that tests listing ``tmp_path`` see only their files.
    """
    root = tmp_path_factory.mktemp("env")
    for name in ("weights", "torch_home", "cache"):
        (root / name).mkdir()
    monkeypatch.setenv("FACESYNTH_OFFLINE", "1")
    monkeypatch.setenv("FACESYNTH_WEIGHTS", str(root / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(root / "torch_home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))   # facesynth.weights also looks in ~/.cache/facesynth
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(_config_home))
    for name in ("FACESYNTH_C2PA_CERT", "FACESYNTH_C2PA_KEY", "FACESYNTH_PROVENANCE"):
        monkeypatch.delenv(name, raising=False)
    yield root

"""Colab readiness: one repository address (pyproject's [project.urls]) behind every badge and install cell, an
install cell that clones and installs on Colab and does nothing elsewhere, and parameters cells that papermill
parses without a warning."""
from __future__ import annotations

import json
import logging
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REPO = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
SLUG = REPO.removeprefix("https://github.com/")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _badge(name: str) -> str:
    return f"https://colab.research.google.com/github/{SLUG}/blob/main/notebooks/{name}"


def test_the_repository_address_is_a_github_repository():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPO)
    assert len(NOTEBOOKS) == 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_badge_and_install_cell_use_the_one_address(path):
    cells = _cells(path)
    intro, install = "".join(cells[0]["source"]), "".join(cells[1]["source"])
    assert cells[0]["cell_type"] == "markdown" and intro.startswith("# ")
    assert f"]({_badge(path.name)})" in intro and "colab-badge.svg" in intro
    assert cells[1]["cell_type"] == "code" and f'REPO = "{REPO}"' in install
    assert "git\", \"clone\"" in install and "\"-e\", f\"{home}[notebooks]\"" in install
    urls = set(re.findall(r"https://github\.com/[\w./-]+", "".join("".join(c["source"]) for c in cells)))
    assert urls <= {REPO}, urls - {REPO}


def test_readme_has_a_badge_for_every_notebook():
    readme = (ROOT / "README.md").read_text()
    for path in NOTEBOOKS:
        assert f"]({_badge(path.name)})" in readme, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_install_cell_does_nothing_outside_colab(path, tmp_path, monkeypatch):
    import subprocess

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec("".join(_cells(path)[1]["source"]), namespace)
    assert calls == [] and namespace["REPO"] == REPO and Path.cwd() == tmp_path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_parses_every_parameter_without_a_warning(path, caplog):
    papermill = pytest.importorskip("papermill")

    cell = next(c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", []))
    assigned = re.findall(r"^([A-Z_][A-Z0-9_]*)\s*=", "".join(cell["source"]), re.M)
    with caplog.at_level(logging.DEBUG, logger="papermill"):
        params = papermill.inspect_notebook(str(path))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert list(params) == assigned and len(assigned) >= 8
    assert all(p["help"] for p in params.values())        # every parameter explains itself in its comment

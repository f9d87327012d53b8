"""Registry of the official weights facesynth uses, and ``resolve(name)`` to find (or fetch) them.

Each entry names the official file, where its authors publish it, its licence and its format. ``resolve``
looks for the file in, in order: ``$FACESYNTH_WEIGHTS``, the project's ``weights/`` folder, torch's hub
cache (``$TORCH_HOME/hub/checkpoints``, where face-alignment keeps its files) and ``~/.cache/facesynth``.
When it is nowhere and the URL is a direct link, it downloads (unless offline) and verifies the SHA-256.
Otherwise it raises WeightsNotFoundError saying which file to get, from where, and where to put it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from facesynth.errors import CheckpointError, WeightsNotFoundError
from facesynth.fileio import project_dir

__all__ = ["WeightSpec", "REGISTRY", "resolve", "find", "search_dirs", "weights_dir", "sha256sum", "verify"]


@dataclass(frozen=True)
class WeightSpec:
    name: str                      # registry key
    filename: str                  # the official file name
    urls: tuple[str, ...]          # official download locations, most direct first
    licence: str
    format: str                    # what the file holds, for loaders and users
    description: str
    direct: bool = True            # the first URL serves the file itself (Google Drive / SharePoint pages don't)
    sha256: str | None = None      # full digest where known
    sha256_prefix: str | None = None  # torch-hub style: the digest's first digits are in the file name
    aliases: tuple[str, ...] = field(default_factory=tuple)  # other names users give the same file
    hub: bool = False              # lives in torch's hub cache (face-alignment looks there)


REGISTRY: dict[str, WeightSpec] = {s.name: s for s in [
    WeightSpec(
        "s3fd", "s3fd-619a316812.pth",
        ("https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",),
        "BSD-3-Clause (face-alignment)", "torch state_dict of S3FD (VGG16 single-shot face detector)",
        "S3FD face detector used by face-alignment", sha256_prefix="619a316812", hub=True),
    WeightSpec(
        "2dfan4", "2DFAN4-11f355bf06.pth.tar",
        ("https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",),
        "BSD-3-Clause (face-alignment)", "torch state_dict of FAN with 4 hourglass stacks (68 2-D landmarks)",
        "2DFAN4 68-point landmark network used by face-alignment", sha256_prefix="11f355bf06", hub=True),
    WeightSpec(
        "fomm-vox", "vox-cpk.pth.tar",
        ("https://drive.google.com/open?id=1PyQJmkdCsAkOYwUyaj_l-l0as-iLDgeH", "https://yadi.sk/d/lEw8uRm140L_eQ"),
        "CC BY-NC 4.0 (first-order-model)", "torch dict: generator, kp_detector, discriminator, optimizers, epoch",
        "First Order Motion Model trained on VoxCeleb (config vox-256)", direct=False),
    WeightSpec(
        "fomm-vox-adv", "vox-adv-cpk.pth.tar",
        ("https://drive.google.com/open?id=1PyQJmkdCsAkOYwUyaj_l-l0as-iLDgeH", "https://yadi.sk/d/lEw8uRm140L_eQ"),
        "CC BY-NC 4.0 (first-order-model)", "torch dict: generator, kp_detector, discriminator, optimizers, epoch",
        "First Order Motion Model with adversarial loss, VoxCeleb (config vox-adv-256)", direct=False),
    WeightSpec(
        "wav2lip", "wav2lip.pth",
        ("https://iiitaphyd-my.sharepoint.com/:u:/g/personal/radrabha_m_research_iiit_ac_in/"
         "Eb3LEzbfuKlJiR600lQWRxgBIY27JZg80f7V9jtMfbNDaQ?e=TBFBVW", "https://github.com/Rudrabha/Wav2Lip"),
        "research / non-commercial only (Wav2Lip)", "torch dict: state_dict (module.-prefixed), optimizer, global_step",
        "Wav2Lip lip-sync generator (most accurate sync)", direct=False),
    WeightSpec(
        "wav2lip-gan", "wav2lip_gan.pth",
        ("https://iiitaphyd-my.sharepoint.com/personal/radrabha_m_research_iiit_ac_in/_layouts/15/download.aspx?"
         "share=EdjI7bZlgApMqsVoEUUXpLsBxqXbn5z8VTmoxp55YNDcIA", "https://github.com/Rudrabha/Wav2Lip"),
        "research / non-commercial only (Wav2Lip)", "torch dict: state_dict (module.-prefixed), optimizer, global_step",
        "Wav2Lip trained with a visual-quality discriminator (sharper mouths)", direct=False),
    WeightSpec(
        "stylegan-celebahq", "karras2019stylegan-celebahq-1024x1024.pkl",
        ("https://drive.google.com/uc?id=1MGqJl28pN4t7SAtSrPdSRJSQJqahkzUf",),
        "CC BY-NC 4.0 (NVIDIA StyleGAN)", "TensorFlow pickle (G, D, Gs) of dnnlib Network objects",
        "StyleGAN v1 generator trained on CelebA-HQ at 1024x1024", direct=False,
        aliases=("stylegan-celebahq-1024x1024.pkl",)),
    WeightSpec(
        "stylegan-ffhq", "karras2019stylegan-ffhq-1024x1024.pkl",
        ("https://drive.google.com/uc?id=1MEGjdvVpUsu1jB4zrXZN7Y4kBBOzizDQ",),
        "CC BY-NC 4.0 (NVIDIA StyleGAN)", "TensorFlow pickle (G, D, Gs) of dnnlib Network objects",
        "StyleGAN v1 generator trained on FFHQ at 1024x1024", direct=False,
        aliases=("stylegan-ffhq-1024x1024.pkl",)),
    WeightSpec(
        "syncnet", "syncnet_v2.model",
        ("http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",
         "https://github.com/joonson/syncnet_python"),
        "MIT (joonson/syncnet_python; the weights are published with it by Oxford VGG, no separate licence)",
        "torch state_dict (names -> tensors) of SyncNetModel.S; old files may lack num_batches_tracked",
        "SyncNet audio-visual sync network; scores LSE-D / LSE-C (Wav2Lip's evaluation)"),
    WeightSpec(
        "inception", "weights-inception-2015-12-05-6726825d.pth",
        ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
         "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"),
        "Apache-2.0 (TensorFlow models' inception-2015-12-05, converted by torch-fidelity)",
        "torch state_dict (plain dict, 472 tensors, no num_batches_tracked) of torch-fidelity's InceptionV3",
        "Inception v3 of 2015-12-05 (the TF FID network): 2048-d pool3 features for FID/KID",
        # 95,628,359 bytes; pytorch-fid's pt_inception file has the same digest (the 6726825d is its prefix)
        sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
        aliases=("pt_inception-2015-12-05-6726825d.pth",), hub=True),
]}


def weights_dir() -> Path:
    """The project's ``weights/`` folder (``$FACESYNTH_WEIGHTS`` overrides it)."""
    env = os.environ.get("FACESYNTH_WEIGHTS")
    return Path(env) if env else project_dir() / "weights"


def _hub_dir() -> Path:
    import torch.hub
    return Path(torch.hub.get_dir()) / "checkpoints"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "facesynth"


def search_dirs() -> list[Path]:
    """Folders ``resolve`` looks in, in order."""
    dirs = [weights_dir(), _hub_dir(), _cache_dir()]
    return list(dict.fromkeys(dirs))


def _spec(name: str) -> WeightSpec:
    key = name.lower()
    if key in REGISTRY:
        return REGISTRY[key]
    for spec in REGISTRY.values():
        if name == spec.filename or name in spec.aliases:
            return spec
    known = ", ".join(REGISTRY)
    raise WeightsNotFoundError(f"no official weights called {name!r}; known names: {known} (or pass a file path)")


def find(name: str) -> Path | None:
    """The path of an official file if it is already on disk, else None (never downloads)."""
    spec = _spec(name)
    for folder in search_dirs():
        for fname in (spec.filename, *spec.aliases):
            p = folder / fname
            if p.is_file() and p.stat().st_size > 0:
                return p
    return None


def resolve(name: str | os.PathLike, download: bool | None = None, verify_hash: bool = False) -> Path:
    """Path of the weights called ``name`` (a registry key, an official file name, or an existing path).

    ``download=None`` downloads direct links unless ``FACESYNTH_OFFLINE=1``. A downloaded file is always
    verified; a file found on disk is verified when ``verify_hash`` is set (hashing large files takes a while).

    Raises:
        WeightsNotFoundError: not on disk and not downloadable; the message names the file, the folder to
            put it in and the official place to get it.
        CheckpointError: the file's SHA-256 does not match the registry.
    """
    as_path = Path(name)
    if as_path.is_file():
        return as_path
    spec = _spec(str(name))
    found = find(spec.name)
    if found is not None:
        if verify_hash:
            verify(found, spec)
        return found
    if download is None:
        download = os.environ.get("FACESYNTH_OFFLINE", "0") not in ("1", "true", "yes")
    dest_dir = _hub_dir() if spec.hub else weights_dir()
    error = None
    if download and spec.direct:
        try:
            return _download(spec, dest_dir)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            error = f"download failed ({e})"
    raise WeightsNotFoundError(_missing_message(spec, dest_dir, error))


def _missing_message(spec: WeightSpec, dest_dir: Path, error: str | None) -> str:
    where = " or ".join(spec.urls[:2])
    how = "download it" if spec.direct else "download it by hand (the page needs a browser)"
    looked = ", ".join(str(d) for d in search_dirs())
    reason = f"; {error}" if error else ""
    return (f"weights {spec.name!r} ({spec.filename}) not found in {looked}{reason}. {how.capitalize()} from "
            f"{where} and put it in {dest_dir}/ (licence: {spec.licence})")


def _download(spec: WeightSpec, dest_dir: Path, timeout: float = 60.0) -> Path:
    from tqdm.auto import tqdm

    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / spec.filename
    fd, tmp = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=dest_dir)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.urls[0], timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=spec.filename, disable=None) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        verify(Path(tmp), spec)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def sha256sum(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str | os.PathLike, spec: WeightSpec | str) -> None:
    """Raise CheckpointError when the file's SHA-256 disagrees with the registry (full digest or prefix)."""
    spec = _spec(spec) if isinstance(spec, str) else spec
    if spec.sha256 is None and spec.sha256_prefix is None:
        return
    digest = sha256sum(path)
    expected = spec.sha256 or spec.sha256_prefix
    if not digest.startswith(expected):
        raise CheckpointError(f"{path}: SHA-256 {digest[:16]}… does not match the official {spec.filename} "
                              f"({expected[:16]}…); the file is corrupt or a different release, download it again")


def copy_into_weights(path: str | os.PathLike, name: str) -> Path:
    """Copy a file the user downloaded by hand into the weights folder under its official name."""
    spec = _spec(name)
    dest = (_hub_dir() if spec.hub else weights_dir()) / spec.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, dest)
    return dest

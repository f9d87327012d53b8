"""Registry of the official weights facesynth uses, ``resolve(name)`` to find (or fetch) them, ``check(name)`` to
say what state a file on disk is in.

Each entry names the official file, where its authors publish it, its licence and its format, its SHA-256 where a
public source states one, and known unofficial mirrors (unverified: a mirror's file is trusted only as far as the
registry's hash goes). ``resolve`` looks for the file in, in order: ``$FACESYNTH_WEIGHTS``, the project's
``weights/`` folder, torch's hub cache (``$TORCH_HOME/hub/checkpoints``, where face-alignment keeps its files) and
``~/.cache/facesynth``. When it is nowhere and the URL is a direct link, it downloads (unless offline) and verifies
the SHA-256. Otherwise it raises WeightsNotFoundError saying which file to get, from where, and where to put it.
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
from facesynth.fileio import current_umask, project_dir

__all__ = ["WeightSpec", "WeightStatus", "REGISTRY", "STATES", "lookup", "resolve", "find", "locate", "check",
           "destination", "search_dirs", "weights_dir", "sha256sum", "verify", "copy_into_weights"]


@dataclass(frozen=True)
class WeightSpec:
    name: str                      # registry key
    filename: str                  # the official file name
    urls: tuple[str, ...]          # official download locations, most direct first
    licence: str
    format: str                    # what the file holds, for loaders and users
    description: str
    direct: bool = True            # the first URL serves the file itself (Google Drive / SharePoint pages don't)
    sha256: str | None = None      # full digest where a public source states it
    sha256_prefix: str | None = None  # torch-hub style: the digest's first digits are in the file name
    aliases: tuple[str, ...] = field(default_factory=tuple)  # other names users give the same file
    hub: bool = False              # lives in torch's hub cache (face-alignment looks there)
    reader: str = "torch"          # how ``check`` opens it without running anything: "torch" or "tf-pickle"
    size: int | None = None        # bytes, where the source of the digest states them
    mirrors: tuple[str, ...] = field(default_factory=tuple)  # unofficial copies: unverified, hash-check them


# Where a digest comes from is said beside it. The authors of these files publish no checksums; the full digests
# are the Git LFS object ids (SHA-256 of the file) that Hugging Face shows for copies of the official files, taken
# only where independent uploads agree (and, for s3fd, agree with the official file name's hash prefix too).
REGISTRY: dict[str, WeightSpec] = {s.name: s for s in [
    WeightSpec(
        "s3fd", "s3fd-619a316812.pth",
        ("https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",),
        "BSD-3-Clause (face-alignment)", "torch state_dict of S3FD (VGG16 single-shot face detector)",
        "S3FD face detector used by face-alignment", hub=True,
        # LFS oid and size of huggingface.co/chunyu-li/face-alignment, jbilcke-hf/model-cocktail and
        # camenduru/Wav2Lip (commit bfcd926) copies; starts with the 619a316812 of the official name
        sha256="619a31681264d3f7f7fc7a16a42cbbe8b23f31a256f75a366e5a1bcd59b33543", size=89_843_225,
        sha256_prefix="619a316812"),
    WeightSpec(
        "2dfan4", "2DFAN4-11f355bf06.pth.tar",
        ("https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",),
        "BSD-3-Clause (face-alignment)", "torch state_dict of FAN with 4 hourglass stacks (68 2-D landmarks)",
        "2DFAN4 68-point landmark network used by face-alignment", hub=True,
        # only the prefix in the official name (torch.hub's HASH_REGEX convention); no full digest found
        sha256_prefix="11f355bf06"),
    WeightSpec(
        "fomm-vox", "vox-cpk.pth.tar",
        ("https://drive.google.com/open?id=1PyQJmkdCsAkOYwUyaj_l-l0as-iLDgeH", "https://yadi.sk/d/lEw8uRm140L_eQ"),
        "CC BY-NC 4.0 (first-order-model)", "torch dict: generator, kp_detector, discriminator, optimizers, epoch",
        "First Order Motion Model trained on VoxCeleb (config vox-256)", direct=False),
    WeightSpec(
        "fomm-vox-adv", "vox-adv-cpk.pth.tar",
        ("https://drive.google.com/open?id=1PyQJmkdCsAkOYwUyaj_l-l0as-iLDgeH", "https://yadi.sk/d/lEw8uRm140L_eQ"),
        "CC BY-NC 4.0 (first-order-model)", "torch dict: generator, kp_detector, discriminator, optimizers, epoch",
        "First Order Motion Model with adversarial loss, VoxCeleb (config vox-adv-256)", direct=False,
        # LFS oid and size of huggingface.co/ashpexx/my-models (commit 14eb0c6) and of the copy in the Space
        # abhishek/first-order-motion-model (as duplicated to islasher/first-order-motion-model, weights/)
        sha256="6792d6810d7f46e3c5c487a1cfec916b96fad8912c3c6cc81baa1fc300c820d3", size=750_926_934,
        mirrors=("https://huggingface.co/ashpexx/my-models/blob/14eb0c66a25dd2641f15fda32adbc6a568f97d3c/"
                 "vox-adv-cpk.pth.tar",
                 "https://huggingface.co/spaces/islasher/first-order-motion-model/blob/"
                 "d07f51e278b5d61ccafb3556f77bfa69025b0539/weights/vox-adv-cpk.pth.tar")),
    WeightSpec(
        "wav2lip", "wav2lip.pth",
        ("https://iiitaphyd-my.sharepoint.com/:u:/g/personal/radrabha_m_research_iiit_ac_in/"
         "Eb3LEzbfuKlJiR600lQWRxgBIY27JZg80f7V9jtMfbNDaQ?e=TBFBVW", "https://github.com/Rudrabha/Wav2Lip"),
        "research / non-commercial only (Wav2Lip)", "torch dict: state_dict (module.-prefixed), optimizer, global_step",
        "Wav2Lip lip-sync generator (most accurate sync)", direct=False,
        # the SharePoint links of the Wav2Lip README were revoked; LFS oid and size of the copies at
        # huggingface.co/Nekochu/Wav2Lip (commit fb925b0), Ftfyhh/wav2lip (eb58fd0) and numz/wav2lip_studio
        sha256="b78b681b68ad9fe6c6fb1debc6ff43ad05834a8af8a62ffc4167b7b34ef63c37", size=435_807_851,
        mirrors=("https://huggingface.co/Nekochu/Wav2Lip/tree/main",
                 "https://huggingface.co/numz/wav2lip_studio/blob/0aa2cbf86a27854ca4a36258deb077d2fd3109e1/"
                 "Wav2lip/wav2lip.pth",
                 "https://github.com/justinjohn0306/Wav2Lip/releases/download/models/wav2lip.pth")),
    WeightSpec(
        "wav2lip-gan", "wav2lip_gan.pth",
        ("https://iiitaphyd-my.sharepoint.com/personal/radrabha_m_research_iiit_ac_in/_layouts/15/download.aspx?"
         "share=EdjI7bZlgApMqsVoEUUXpLsBxqXbn5z8VTmoxp55YNDcIA", "https://github.com/Rudrabha/Wav2Lip"),
        "research / non-commercial only (Wav2Lip)", "torch dict: state_dict (module.-prefixed), optimizer, global_step",
        "Wav2Lip trained with a visual-quality discriminator (sharper mouths)", direct=False,
        # revoked SharePoint link, as above; LFS oid and size of the copies at huggingface.co/Nekochu/Wav2Lip
        # (3b29710), numz/wav2lip_studio-0.2, AOLCDROM/WAV2LIP-HQ-Updated-MIRROR and anon4ik/hjkh (40b3a24)
        sha256="ca9ab7b7b812c0e80a6e70a5977c545a1e8a365a6c49d5e533023c034d7ac3d8", size=435_801_865,
        mirrors=("https://huggingface.co/Nekochu/Wav2Lip/tree/main",
                 "https://huggingface.co/numz/wav2lip_studio-0.2/blob/main/Wav2lip/wav2lip_gan.pth",
                 "https://github.com/justinjohn0306/Wav2Lip/releases/download/models/wav2lip_gan.pth")),
    WeightSpec(
        "stylegan-celebahq", "karras2019stylegan-celebahq-1024x1024.pkl",
        ("https://drive.google.com/uc?id=1MGqJl28pN4t7SAtSrPdSRJSQJqahkzUf",),
        "CC BY-NC 4.0 (NVIDIA StyleGAN)", "TensorFlow pickle (G, D, Gs) of dnnlib Network objects",
        "StyleGAN v1 generator trained on CelebA-HQ at 1024x1024", direct=False,
        aliases=("stylegan-celebahq-1024x1024.pkl",), reader="tf-pickle"),
    WeightSpec(
        "stylegan-ffhq", "karras2019stylegan-ffhq-1024x1024.pkl",
        ("https://drive.google.com/uc?id=1MEGjdvVpUsu1jB4zrXZN7Y4kBBOzizDQ",),
        "CC BY-NC 4.0 (NVIDIA StyleGAN)", "TensorFlow pickle (G, D, Gs) of dnnlib Network objects",
        "StyleGAN v1 generator trained on FFHQ at 1024x1024", direct=False,
        aliases=("stylegan-ffhq-1024x1024.pkl",), reader="tf-pickle"),
    WeightSpec(
        "syncnet", "syncnet_v2.model",
        ("http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",
         "https://github.com/joonson/syncnet_python"),
        "MIT (joonson/syncnet_python; the weights are published with it by Oxford VGG, no separate licence)",
        "torch state_dict (names -> tensors) of SyncNetModel.S; old files may lack num_batches_tracked",
        "SyncNet audio-visual sync network; scores LSE-D / LSE-C (Wav2Lip's evaluation)",
        # LFS oid of the copies at huggingface.co/chunyu-li/LatentSync (auxiliary/), lithiumice/models_hub_2
        # (syncnet/) and Hyathi/Preprocess (the pages round the size to 54.6 MB, so no exact size here)
        sha256="961e8696f888fce4f3f3a6c3d5b3267cf5b343100b238e79b2659bff2c605442",
        mirrors=("https://huggingface.co/chunyu-li/LatentSync/blob/main/auxiliary/syncnet_v2.model",)),
    WeightSpec(
        "inception", "weights-inception-2015-12-05-6726825d.pth",
        ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
         "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"),
        "Apache-2.0 (TensorFlow models' inception-2015-12-05, converted by torch-fidelity)",
        "torch state_dict (plain dict, 472 tensors, no num_batches_tracked) of torch-fidelity's InceptionV3",
        "Inception v3 of 2015-12-05 (the TF FID network): 2048-d pool3 features for FID/KID",
        # LFS oid and size of pytorch-fid's pt_inception-2015-12-05-6726825d.pth at huggingface.co/RaphaelLiu/
        # EvalCrafter-Models (commit 6040b4d); torch-fidelity's file carries the same 6726825d prefix
        sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2", size=95_628_359,
        aliases=("pt_inception-2015-12-05-6726825d.pth",), hub=True),
]}

STATES = ("missing", "empty", "unreadable", "mismatch", "verified", "unverified")
BAD_STATES = frozenset({"empty", "unreadable", "mismatch"})   # present but not usable as the official file


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


def lookup(name: str) -> WeightSpec:
    """The registry entry called ``name``: a key (any case), an official file name or an alias."""
    key = name.lower()
    if key in REGISTRY:
        return REGISTRY[key]
    for spec in REGISTRY.values():
        if name == spec.filename or name in spec.aliases:
            return spec
    known = ", ".join(REGISTRY)
    as_path = Path(name)
    if as_path.suffix or len(as_path.parts) > 1:       # a path, not a registry name: say that the file is missing
        where = as_path.resolve().parent
        hint = "" if where.is_dir() else f" (the folder {where} does not exist either)"
        raise WeightsNotFoundError(f"{name}: no such file{hint}. Give the path of a weights file that exists, or "
                                   f"a registry name: {known}")
    raise WeightsNotFoundError(f"no official weights called {name!r}; known names: {known} (or pass a file path)")


def find(name: str) -> Path | None:
    """The path of an official file if it is already on disk, else None (never downloads). Empty files don't count."""
    return next((p for p in _on_disk(lookup(name)) if p.stat().st_size > 0), None)


def locate(name: str) -> Path | None:
    """The file ``find`` returns, else the first copy on disk even if it is empty (a failed download), else None."""
    return find(name) or next(iter(_on_disk(lookup(name))), None)


def destination(name: str) -> Path:
    """The folder a downloaded official file goes in: torch's hub cache for face-alignment's files, else weights/."""
    return _hub_dir() if lookup(name).hub else weights_dir()


def _on_disk(spec: WeightSpec) -> list[Path]:
    return [folder / fname for folder in search_dirs() for fname in (spec.filename, *spec.aliases)
            if (folder / fname).is_file()]


def resolve(name: str | os.PathLike, download: bool | None = None, verify_hash: bool = False) -> Path:
    """Path of the weights called ``name`` (a registry key, an official file name, or an existing path).

    ``download=None`` downloads direct links unless ``FACESYNTH_OFFLINE=1``. A downloaded file is always
    verified; a file found on disk is verified when ``verify_hash`` is set (hashing large files takes a while).

    Raises:
        WeightsNotFoundError: not on disk and not downloadable; the message names the file, the folder to
            put it in and the official place to get it (and an empty copy on disk, when there is one).
        CheckpointError: the file's SHA-256 does not match the registry.
    """
    as_path = Path(name)
    if as_path.is_file():
        return as_path
    spec = lookup(str(name))
    found = find(spec.name)
    if found is not None:
        if verify_hash:
            verify(found, spec)
        return found
    if download is None:
        download = os.environ.get("FACESYNTH_OFFLINE", "0") not in ("1", "true", "yes")
    dest_dir = destination(spec.name)
    error = None
    if download and spec.direct:
        try:
            return _download(spec, dest_dir)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            error = f"download failed ({e})"
    empty = locate(spec.name)
    if empty is not None:
        error = (f"{error}; " if error else "") + f"{empty} is empty (0 bytes, a failed download): delete it"
    raise WeightsNotFoundError(_missing_message(spec, dest_dir, error))


def _missing_message(spec: WeightSpec, dest_dir: Path, error: str | None) -> str:
    where = " or ".join(spec.urls[:2])
    how = "download it" if spec.direct else "download it by hand (the page needs a browser)"
    looked = ", ".join(str(d) for d in search_dirs())
    reason = f"; {error}" if error else ""
    mirrors = (f" Unofficial mirrors (unverified; `facesynth weights --verify` checks the SHA-256): "
               f"{', '.join(spec.mirrors)}." if spec.mirrors else "")
    return (f"weights {spec.name!r} ({spec.filename}) not found in {looked}{reason}. {how.capitalize()} from "
            f"{where} and put it in {dest_dir}/ (licence: {spec.licence}).{mirrors}")


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
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def sha256sum(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks (a weights file is never held in memory whole)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str | os.PathLike, spec: WeightSpec | str) -> None:
    """Raise CheckpointError when the file's SHA-256 disagrees with the registry (full digest or prefix)."""
    spec = lookup(spec) if isinstance(spec, str) else spec
    if spec.sha256 is None and spec.sha256_prefix is None:
        return
    digest = sha256sum(path)
    expected = spec.sha256 or spec.sha256_prefix
    if not digest.startswith(expected):
        raise CheckpointError(f"{path}: SHA-256 {digest[:16]}… does not match the official {spec.filename} "
                              f"({expected[:16]}…); the file is corrupt or a different release, download it again")


def copy_into_weights(path: str | os.PathLike, name: str) -> Path:
    """Copy a file the user downloaded by hand into the weights folder under its official name."""
    spec = lookup(name)
    dest = destination(spec.name) / spec.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, dest)
    return dest


# ------------------------------------------------------------------------------------------------ status

@dataclass(frozen=True)
class WeightStatus:
    """What ``check`` found for one registry file. ``state`` is one of ``STATES``:

    missing     no copy in any search folder
    empty       a 0-byte copy (a failed download) and no other
    unreadable  not the expected format (truncated, another file, or refused by the safe loader)
    mismatch    readable, but its SHA-256 differs from the published one: a different or corrupt file
    verified    its SHA-256 matches the published digest (or, where only that is known, the name's prefix)
    unverified  readable, and no digest is published to compare with
    """

    name: str
    filename: str
    state: str
    path: Path | None       # the copy checked (the one ``resolve`` uses), None when missing
    size: int | None        # bytes on disk
    sha256: str | None      # the file's digest; None when missing or empty
    reason: str             # one line: why this state and, when bad, what to do

    @property
    def ok(self) -> bool:
        """False for a present file that cannot be used as the official one (empty, unreadable, mismatch)."""
        return self.state not in BAD_STATES

    def as_dict(self) -> dict:
        return {"name": self.name, "filename": self.filename, "state": self.state,
                "path": None if self.path is None else str(self.path), "size": self.size, "sha256": self.sha256,
                "reason": self.reason}


def check(name: str) -> WeightStatus:
    """The state of an official file on disk, without running anything in it.

    The copy ``resolve`` would use is hashed (streamed); when the hash matches the published one the file is
    ``verified`` without loading it. Otherwise it is opened in its format to tell a damaged file (``unreadable``)
    from a readable but different one (``mismatch``) or from one nobody published a hash for (``unverified``):
    torch files through ``facesynth.safe_load.load_torch`` (weights only), StyleGAN TF pickles through the
    restricted unpickler of ``facesynth.generate.checkpoint`` (arrays left in the file, so it is cheap).
    """
    spec = lookup(name)
    path = locate(spec.name)
    if path is None:
        return WeightStatus(spec.name, spec.filename, "missing", None, None, None,
                            f"not in {', '.join(str(d) for d in search_dirs())}; get it from {spec.urls[0]} and "
                            f"put it in {destination(spec.name)}/")
    size = path.stat().st_size
    if size == 0:
        return WeightStatus(spec.name, spec.filename, "empty", path, 0, None,
                            f"0 bytes, a failed download: {_again(spec)}")
    digest = sha256sum(path)
    state, reason = _judge(spec, path, size, digest)
    return WeightStatus(spec.name, spec.filename, state, path, size, digest, reason)


def _judge(spec: WeightSpec, path: Path, size: int, digest: str) -> tuple[str, str]:
    expected = spec.sha256 or spec.sha256_prefix
    if expected and digest.startswith(expected):
        if spec.sha256:
            return "verified", "matches the published SHA-256"
        return "verified", (f"matches the SHA-256 prefix {expected} in the official file name (a partial check: "
                            f"no full digest is published)")
    problem = _unreadable(path, spec.reader)
    if problem:
        return "unreadable", f"{problem}: {_again(spec)}"
    if expected:
        sizes = f", {size:,} bytes where the official file has {spec.size:,}" if spec.size and spec.size != size else ""
        return "mismatch", (f"SHA-256 {digest[:16]}… differs from the published {expected[:16]}…{sizes}: a corrupt "
                            f"or different file, {_again(spec)}")
    return "unverified", "readable; no SHA-256 is published for this file, so its content cannot be checked"


def _again(spec: WeightSpec) -> str:
    mirrors = f", or from a mirror that `facesynth weights {spec.name}` lists" if spec.mirrors else ""
    return f"delete it and download it again ({spec.urls[0]}{mirrors})"


def _unreadable(path: Path, reader: str) -> str | None:
    """Why the file does not open as ``reader`` says it should (one clause), or None when it does.

    The loaders are the project's safe ones, so a file that asks to run code is refused, never run.
    """
    if reader == "tf-pickle":
        from facesynth.generate.checkpoint import read_tf_pickle as load
    elif reader == "torch":
        from facesynth.safe_load import load_torch as load
    else:
        raise ValueError(f"unknown reader {reader!r}; expected 'torch' or 'tf-pickle'")
    try:
        load(path)
    except CheckpointError as e:
        # the loaders' messages read "<path>: <what is wrong>; <what to do>"; keep what is wrong
        message = " ".join(str(e).split())
        return message.removeprefix(f"{path}: ").split("; ")[0][:300]
    return None

"""FID and KID of generated faces against real ones, on the Inception features the published numbers use.

Definitions
-----------
- **Features**: the 2048-d output of the last average pool ("pool3") of the Inception v3 graph Google released on
  2015-12-05 (``inception-2015-12-05.tgz``): the network of the original TensorFlow FID code (bioinf-jku/TTUR), of
  NVlabs' StyleGAN metrics and of torch-fidelity, converted to PyTorch as ``weights-inception-2015-12-05-6726825d.pth``
  (registry name ``"inception"``; pytorch-fid's ``pt_inception-…`` is the same file). torchvision's ImageNet Inception
  is a different network: its numbers are not comparable with published FIDs.
- **Resize rule**: every image, whatever its size, is resized to 299×299 by bilinear interpolation exactly as TF1's
  ``tf.image.resize_bilinear(align_corners=False)`` (no antialiasing) on its uint8 values, then mapped by
  (x − 128) / 128, as inside the TF graph (torch-fidelity's ``interpolate_compat_tensorflow``). pytorch-fid resizes
  with torch's own bilinear instead, which moves FID a little.
- **FID** (Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to a local Nash
  equilibrium", NeurIPS): the Fréchet distance between Gaussians fitted to the two feature sets,
  FID = |μ_g − μ_r|² + Tr(Σ_g + Σ_r − 2 (Σ_g Σ_r)^½), with μ the mean and Σ the covariance (N − 1 normalised).
  Units: squared pool3 activations; 0 for equal statistics, lower is better.
- **KID** (Bińkowski et al. 2018, "Demystifying MMD GANs", ICLR): the unbiased estimate of the squared MMD between
  the feature sets with the cubic polynomial kernel k(x, y) = (xᵀy / d + 1)³, d = 2048, averaged over random subsets
  drawn without replacement. The authors' ``compute_scores.py`` uses 50 subsets of 1000 images; torch-fidelity and
  StyleGAN2-ADA's ``kid50k`` use 100 subsets of 1000, our default, with the subset size cut to the smaller set when
  there are fewer images (StyleGAN2-ADA's rule). ``kid_std`` is the standard deviation over the subsets.
  Units: squared kernel units (papers often print KID × 10³); unbiased, so it can be slightly negative.
- **Bias**: FID estimated from n images is biased upwards by roughly c/n (Bińkowski et al. 2018; Chong &
  Forsyth 2020, "Effectively unbiased FID"), and with fewer images than 2048 the covariances are rank-deficient.
  Published FIDs use 50,000 generated images (``fid50k``); compare only numbers computed with the same n, and prefer
  KID for a few hundred images. Every report carries n.

Library: torch-fidelity (not torchmetrics). Its ``FeatureExtractorInceptionV3`` is the network itself, a plain
nn.Module over uint8 NCHW batches that resizes like TF1 and takes ``feature_extractor_weights_path=`` for offline
use; it needs nothing we do not already install (numpy, pillow, torch, torchvision, tqdm). torchmetrics'
``FrechetInceptionDistance`` subclasses this same extractor (so it needs torch-fidelity anyway), adds
lightning-utilities, and keeps features inside a stateful Metric; we want the features themselves, for FID and KID from
one pass. Both are maintained (torch-fidelity 0.4, torchmetrics 1.9). The statistics are computed here in
numpy/scipy and checked against torch-fidelity's own (``tests/test_evaluate_fid.py``).

Weights are read safely: torch-fidelity calls ``torch.load(path, weights_only=False)``, so the file is first read with
``facesynth.safe_load`` (weights only: a damaged file raises CheckpointError, one that would run code
UnsafeCheckpointError, before the library sees it), and the library's own read runs with
``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``.
"""
from __future__ import annotations

import contextlib
import itertools
import os
from typing import Iterator

import numpy as np
import torch

from facesynth.errors import CheckpointError, ConfigError, MediaError
from facesynth.evaluate.frames import FrameSource, iter_rgb, source_label

__all__ = ["FEATURE_DIM", "fid_kid", "inception_features", "load_inception", "fid_from_features",
           "frechet_distance", "kid_from_features", "DEFINITIONS"]

FEATURE_DIM = 2048
_EXTRACTOR_NAME = "inception-v3-compat"   # torch-fidelity's name for the TF-exact Inception

DEFINITIONS = {
    "features": "2048-d pool3 features of the 2015-12-05 TF Inception v3 (torch-fidelity port); every image resized "
                "to 299x299 with TF1's bilinear (align_corners=False, no antialias), then (x-128)/128",
    "fid": "Frechet distance |mu_g-mu_r|^2 + Tr(S_g + S_r - 2 (S_g S_r)^1/2) between Gaussians fitted to the "
           "generated and real features (Heusel et al. 2017); squared feature units; biased upwards for small n",
    "kid": "unbiased squared MMD with the kernel (x.y/2048 + 1)^3, mean over random subsets of both sets "
           "(Binkowski et al. 2018); kid_std is the standard deviation over the subsets",
}


def fid_kid(generated: FrameSource, real: FrameSource, weights: str | os.PathLike = "inception",
                        batch_size: int = 32, device: str | torch.device = "cpu", max_images: int | None = None,
                        kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 2020) -> dict:
    """FID and KID of generated images against real ones, with n, definitions, weights and caveats.

    Args:
        generated, real: frame sources (video, image, folder of images, uint8 array ``[N,H,W,3]``, list of
            ``[H,W,3]`` images, or a float tensor ``[N,3,H,W]`` in [0, 1]); any sizes, resized to 299×299.
        weights: registry name, official file name or path of the Inception weights (``facesynth.weights.resolve``).
        batch_size: images per forward pass (memory is flat in the number of images).
        device: ``"cpu"``, ``"cuda"``, ``"auto"``...
        max_images: read at most this many images from each source (``None``: all).
        kid_subsets, kid_subset_size, seed: KID's subsets (see ``kid_from_features``).

    Returns:
        ``{"fid", "kid", "kid_std", "n_generated", "n_real", "kid_subsets", "kid_subset_size", "definitions",
        "weights": {"name", "file", "sha256", "official", "url"}, "sources": {...}, "notes": [...]}``.

    Raises:
        WeightsNotFoundError: the weights are not on disk and cannot be downloaded (offline).
        CheckpointError: the weights file is damaged or is not the FID Inception.
        MediaError: a source has no images.
    """
    from facesynth.weights import resolve

    path = resolve(weights)
    net = load_inception(path, device=device)
    feats_g = inception_features(generated, net, batch_size=batch_size, max_images=max_images)
    feats_r = inception_features(real, net, batch_size=batch_size, max_images=max_images)
    kid = kid_from_features(feats_g, feats_r, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    info = _weights_info(path)
    n_g, n_r = len(feats_g), len(feats_r)
    return {
        "fid": fid_from_features(feats_g, feats_r),
        "kid": kid["kid"],
        "kid_std": kid["kid_std"],
        "n_generated": n_g,
        "n_real": n_r,
        "kid_subsets": kid["subsets"],
        "kid_subset_size": kid["subset_size"],
        "definitions": dict(DEFINITIONS),
        "weights": info,
        "sources": {"generated": source_label(generated), "real": source_label(real)},
        "notes": _notes(n_g, n_r, kid["subset_size"], kid_subset_size, info),
    }


def inception_features(source: FrameSource, weights: str | os.PathLike | torch.nn.Module = "inception",
                       batch_size: int = 32, device: str | torch.device = "cpu",
                       max_images: int | None = None) -> np.ndarray:
    """The 2048-d pool3 Inception features of every image of ``source``, streamed in batches.

    ``weights`` is a registry name, a file, or a network from ``load_inception`` (reused, and ``device`` ignored).
    Images of different sizes may be mixed: a batch holds consecutive images of one size.

    Returns:
        float32 array ``[N, 2048]``, N the number of images read (at most ``max_images``).

    Raises:
        WeightsNotFoundError, CheckpointError: see ``load_inception``. MediaError: no images in ``source``.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    net = weights if isinstance(weights, torch.nn.Module) else load_inception(weights, device=device)
    dev = next(net.parameters()).device
    feats = []
    with torch.inference_mode(), tqdm(desc="Inception features", unit="img", disable=None) as bar:
        for batch in _uint8_batches(source, batch_size, max_images):
            feats.append(net(batch.to(dev))[0].cpu().numpy())
            bar.update(len(batch))
    if not feats:
        raise MediaError(f"no images in {source_label(source)}; FID/KID need at least 2 images per set")
    return np.concatenate(feats).astype(np.float32, copy=False)


def load_inception(weights: str | os.PathLike = "inception", device: str | torch.device = "cpu") -> torch.nn.Module:
    """torch-fidelity's TF-exact Inception v3 with the weights ``weights`` (registry name, file name or path), in eval
    mode on ``device``; call it on uint8 ``[B,3,H,W]`` to get ``([B, 2048],)`` float32 pool3 features.

    Raises:
        WeightsNotFoundError: not on disk and not downloadable (offline); the message names the file and its URL.
        CheckpointError: truncated, damaged or not torch-fidelity's layout (472 tensors, ``Conv2d_1a_3x3.conv.weight``
            … ``fc.bias``); UnsafeCheckpointError when the file would run code (nothing is executed).
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from facesynth.gpu import pick_device
    from facesynth.safe_load import load_state_dict
    from facesynth.weights import resolve

    path = resolve(weights)
    load_state_dict(path)          # weights-only read: damaged or unsafe files stop here, with our errors
    try:
        with _torch_load_weights_only():
            net = FeatureExtractorInceptionV3(_EXTRACTOR_NAME, [str(FEATURE_DIM)],
                                              feature_extractor_weights_path=str(path))
    except RuntimeError as e:
        if "loading state_dict" not in str(e):
            raise
        detail = "; ".join(_clip(line.strip(), 160) for line in str(e).splitlines()[1:4])
        raise CheckpointError(f"{path}: not the FID Inception weights ({detail}). Use torch-fidelity's "
                              f"weights-inception-2015-12-05-6726825d.pth (facesynth.weights name 'inception'); "
                              f"torchvision's ImageNet Inception is a different network") from None
    return net.to(pick_device(device)).eval()


def fid_from_features(a: np.ndarray, b: np.ndarray, eps: float = 1e-6, method: str = "auto") -> float:
    """FID between two feature sets ``a`` ``[N_a, D]`` and ``b`` ``[N_b, D]`` (each N ≥ 2), in squared feature units.

    ``method="sqrtm"`` fits μ, Σ and calls ``frechet_distance`` (the reference computation: scipy's sqrtm of Σ_a Σ_b,
    O(D³): about 20 s for D = 2048 on two CPU cores). ``"sample"`` computes the same number from the centred
    features A, B: Tr((Σ_a Σ_b)^½) is the nuclear norm of A Bᵀ / sqrt((N_a − 1)(N_b − 1)), exactly (the non-zero
    eigenvalues of Σ_a Σ_b are the squared singular values of that matrix), which costs O(N_a N_b D) and is the more
    accurate when N < D, where the covariances are singular. ``"auto"`` takes ``"sample"`` when both sets have at
    most D images.
    """
    a, b = _check_features(a, b)
    if method == "auto":
        method = "sample" if max(len(a), len(b)) <= a.shape[1] else "sqrtm"
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    if method == "sqrtm":
        return frechet_distance(mu_a, np.cov(a, rowvar=False), mu_b, np.cov(b, rowvar=False), eps=eps)
    if method != "sample":
        raise ConfigError(f"method must be 'auto', 'sqrtm' or 'sample', got {method!r}")
    ca, cb = a - mu_a, b - mu_b
    na, nb = len(a) - 1, len(b) - 1
    tr_covmean = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt(na * nb)
    diff = mu_a - mu_b
    return float(diff @ diff + np.sum(ca * ca) / na + np.sum(cb * cb) / nb - 2.0 * tr_covmean)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """|μ1 − μ2|² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½) for means ``[D]`` and covariances ``[D, D]``, as TTUR's ``fid.py``
    and pytorch-fid compute it: scipy's sqrtm, and when that is not finite (singular product) the square root of
    (Σ1 + εI)(Σ2 + εI) instead; a numerically complex result keeps its real part unless the imaginary diagonal
    exceeds 1e-3 (then it is not a covariance pair)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ConfigError(f"frechet_distance needs means [D] and covariances [D, D] of one D; got {mu1.shape}, "
                          f"{sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ConfigError(f"(sigma1 sigma2)^1/2 has imaginary diagonal up to "
                              f"{np.abs(np.diagonal(covmean).imag).max():.3g}: the inputs are not covariance matrices "
                              f"(symmetric, positive semi-definite)")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def kid_from_features(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 2020) -> dict:
    """KID between feature sets ``a`` ``[N_a, D]`` and ``b`` ``[N_b, D]``: the mean over ``subsets`` draws of the
    unbiased MMD² with kernel (xᵀy / D + 1)³ between ``m = min(subset_size, N_a, N_b)`` images of each set.

    Subsets are drawn as torch-fidelity draws them (``np.random.RandomState(seed)``, one draw from ``a`` then one
    from ``b``, without replacement; its default seed is 2020), so equal features give torch-fidelity's numbers.

    Returns:
        ``{"kid": mean, "kid_std": standard deviation over subsets, "subsets": int, "subset_size": m}``.
    """
    a, b = _check_features(a, b)
    if subsets < 1:
        raise ConfigError(f"subsets must be at least 1, got {subsets}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ConfigError(f"KID needs subsets of at least 2 images; subset_size={subset_size}")
    rng = np.random.RandomState(seed)
    mmds = np.empty(subsets)
    for i in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        mmds[i] = _mmd2_unbiased(x, y)
    return {"kid": float(mmds.mean()), "kid_std": float(mmds.std()), "subsets": subsets, "subset_size": m}


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² of ``x`` ``[m, D]`` and ``y`` ``[m, D]``, cubic polynomial kernel (Bińkowski et al. 2018)."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _check_features(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ConfigError(f"features must be two [N, D] arrays of one D, got shapes {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ConfigError(f"FID/KID need at least 2 images per set, got {len(a)} and {len(b)} "
                          f"(and thousands for a meaningful FID)")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ConfigError("features contain NaN or inf; check the images and the weights")
    return a, b


def _uint8_batches(source: FrameSource, batch_size: int, max_images: int | None) -> Iterator[torch.Tensor]:
    """uint8 ``[B,3,H,W]`` batches of consecutive same-sized frames; holds one batch at a time."""
    frames = iter_rgb(source)
    if max_images is not None:
        frames = itertools.islice(frames, max_images)
    batch: list[np.ndarray] = []
    for frame in frames:
        if batch and (frame.shape != batch[0].shape or len(batch) == batch_size):
            yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()
            batch = []
        batch.append(frame)
    if batch:
        yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()


@contextlib.contextmanager
def _torch_load_weights_only() -> Iterator[None]:
    """torch.load runs weights-only even where a caller passes weights_only=False (torch >= 2.4 reads this variable)."""
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    before = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _weights_info(path: os.PathLike) -> dict:
    """Which weights file gave the features, and whether it is the official release (SHA-256)."""
    from facesynth.weights import REGISTRY, sha256sum

    spec = REGISTRY["inception"]
    digest = sha256sum(path)
    return {"name": spec.name, "file": str(path), "sha256": digest, "official": digest == spec.sha256,
            "url": spec.urls[0]}


def _notes(n_g: int, n_r: int, kid_m: int, kid_asked: int, weights: dict) -> list[str]:
    notes = [f"FID is strongly biased upwards on few images (it needs thousands; published FIDs use 50,000 "
             f"generated images): this one is from n_generated={n_g}, n_real={n_r}; compare only FIDs with the same "
             f"n, and prefer KID (unbiased) for small sets"]
    if min(n_g, n_r) <= FEATURE_DIM:
        notes.append(f"fewer images than feature dimensions ({FEATURE_DIM}): the covariances are rank-deficient and "
                     f"the FID is dominated by estimation error")
    if kid_m < kid_asked:
        notes.append(f"KID subsets have {kid_m} images (fewer than the standard {kid_asked}), so KID varies more")
    if not weights["official"]:
        notes.append(f"the Inception weights {weights['file']} are not the official file (SHA-256 differs): "
                     f"these numbers are not comparable with published ones")
    return notes

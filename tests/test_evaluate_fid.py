"""FID and KID (facesynth.evaluate.fid): the real loading path with an official-layout Inception checkpoint written
here (random weights, every key and shape of torch-fidelity's weights-inception-2015-12-05-6726825d.pth), real faces
from the sample video, closed forms, and torch-fidelity's own numbers on the same inputs."""
from __future__ import annotations

import itertools
import os
from unittest import mock

import numpy as np
import pytest
import torch

from facesynth.errors import CheckpointError, WeightsNotFoundError
from facesynth.evaluate.fid import (fid_kid, fid_from_features, frechet_distance, inception_features,
                                    kid_from_features, load_inception)
from facesynth.evaluate.frames import iter_rgb
from facesynth.weights import REGISTRY, weights_dir

N_FACES = 8                     # Inception at 299x299 on two CPU cores: about 0.13 s an image
OFFICIAL = REGISTRY["inception"].filename


def _official_layout_state() -> dict[str, torch.Tensor]:
    """torch-fidelity's Inception state dict as its converter writes it: a plain dict of conv weights, batch-norm
    weight/bias/running_mean/running_var and fc weight/bias (472 tensors, no num_batches_tracked), random values.

    The library's constructor always loads weights, so it is built here with that load switched off. Conv weights
    are He-normal so that pool3 features keep a usable scale (PyTorch's default init shrinks them to ~1e-8)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    with mock.patch.object(tfi, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None):
        skeleton = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, value in skeleton.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("conv.weight"):
            value = torch.randn(value.shape, generator=gen) * (2.0 / value[0].numel()) ** 0.5
        state[key] = value.clone()
    return state


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / OFFICIAL
    torch.save(_official_layout_state(), path)
    return path


@pytest.fixture
def registry_weights(inception_file):
    """The checkpoint under its official name in the test's (empty, offline) FACESYNTH_WEIGHTS folder."""
    dest = weights_dir() / OFFICIAL
    os.link(inception_file, dest)
    return dest


@pytest.fixture(scope="module")
def faces(samples) -> np.ndarray:
    """N_FACES frames of the real talking-head video spread over its 120 frames, uint8 [N,144,176,3]."""
    return np.stack(list(itertools.islice(iter_rgb(samples.talking_head), 0, None, 120 // N_FACES)))


def _noised(frames: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(frames + rng.normal(0.0, sigma, frames.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def net(inception_file) -> torch.nn.Module:
    return load_inception(inception_file)


@pytest.fixture(scope="module")
def features(net, faces) -> dict[str, np.ndarray]:
    return {"real": inception_features(faces, net),
            "noise10": inception_features(_noised(faces, 10), net),
            "noise40": inception_features(_noised(faces, 40), net)}


def test_features_of_real_faces_have_shape_n_by_2048_through_the_registry(registry_weights, faces, features):
    feats = inception_features(faces, weights="inception", batch_size=3)
    assert feats.shape == (N_FACES, 2048) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and feats.std(axis=0).mean() > 1e-3      # images give different features
    np.testing.assert_allclose(feats, features["real"], rtol=1e-4, atol=1e-6)  # batch size does not matter


def test_images_of_different_sizes_are_batched_apart(net, faces):
    mixed = [faces[0], faces[1][:100, :120], faces[2]]
    feats = inception_features(mixed, net, batch_size=8)
    alone = inception_features(faces[1][:100, :120], net)
    assert feats.shape == (3, 2048)
    np.testing.assert_allclose(feats[1], alone[0], rtol=1e-4, atol=1e-6)


def test_fid_of_a_set_against_itself_is_zero(features):
    assert abs(fid_from_features(features["real"], features["real"])) < 1e-9


def test_fid_is_positive_and_grows_with_noise(features):
    fid10 = fid_from_features(features["noise10"], features["real"])
    fid40 = fid_from_features(features["noise40"], features["real"])
    assert 0 < fid10 < fid40
    assert fid40 > 5 * fid10


def test_kid_is_about_zero_for_identical_sets_and_grows_with_noise(features):
    same = kid_from_features(features["real"], features["real"], subsets=10)
    kid10 = kid_from_features(features["noise10"], features["real"], subsets=10)["kid"]
    kid40 = kid_from_features(features["noise40"], features["real"], subsets=10)["kid"]
    assert same["subset_size"] == N_FACES
    assert abs(same["kid"]) < 0.1 * kid10
    assert 0 < kid10 < kid40


@pytest.mark.slow             # torch-fidelity's FID takes the eigenvalues of a 2048x2048 product: 20-40 s of CPU
def test_fid_and_kid_match_torch_fidelity_on_the_same_images(registry_weights, faces):
    import torch_fidelity

    class Frames(torch.utils.data.Dataset):
        def __init__(self, frames):
            self.frames = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()

        def __len__(self):
            return len(self.frames)

        def __getitem__(self, i):
            return self.frames[i]

    generated = _noised(faces, 40)
    ours = fid_kid(generated, faces, kid_subsets=20, kid_subset_size=6)
    theirs = torch_fidelity.calculate_metrics(
        input1=Frames(generated), input2=Frames(faces), fid=True, kid=True, kid_subsets=20, kid_subset_size=6,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(registry_weights),
        cuda=False, cache=False, save_cpu_ram=True, verbose=False)
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3)
    assert ours["kid_std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-2)


def test_fid_from_features_matches_torch_fidelity_statistics():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 64)) @ rng.normal(size=(64, 64))
    b = 0.5 + rng.normal(size=(200, 64)) @ rng.normal(size=(64, 64))
    theirs = fid_statistics_to_metric(fid_features_to_statistics(torch.from_numpy(a)),
                                      fid_features_to_statistics(torch.from_numpy(b)), verbose=False)
    for method in ("sqrtm", "sample"):
        assert fid_from_features(a, b, method=method) == pytest.approx(theirs["frechet_inception_distance"], rel=1e-6)


def test_kid_matches_torch_fidelity_subsets_and_kernel():
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(60, 32)), 0.3 + rng.normal(size=(50, 32))
    ours = kid_from_features(a, b, subsets=15, subset_size=20, seed=7)
    theirs = kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=15, kid_subset_size=20,
                                    rng_seed=7, verbose=False)
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-9)
    assert ours["kid_std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-9)


def _gaussians(d: int = 4):
    """Two Gaussians whose covariances share eigenvectors Q, so FID has the closed form
    |mu1 - mu2|^2 + sum_i (sqrt(l1_i) - sqrt(l2_i))^2 over the eigenvalues."""
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    l1, l2 = np.arange(1.0, d + 1), np.arange(d, 0.0, -1)
    mu1, mu2 = np.zeros(d), np.r_[1.0, -2.0, np.zeros(d - 2)]
    closed = float((mu1 - mu2) @ (mu1 - mu2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2))
    return mu1, q @ np.diag(l1) @ q.T, mu2, q @ np.diag(l2) @ q.T, closed


def test_frechet_distance_equals_the_closed_form_for_two_gaussians():
    mu1, s1, mu2, s2, closed = _gaussians()
    assert closed == pytest.approx(5.0 + 2 * (np.sqrt(3) - np.sqrt(2)) ** 2 + 2 * (2 - 1) ** 2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(closed, rel=1e-10)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-10)


def _samples_with_moments(mu: np.ndarray, sigma: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n points whose sample mean and (N-1) covariance are exactly mu and sigma."""
    z = np.random.default_rng(seed).normal(size=(n, len(mu)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T     # sample covariance now exactly I
    return mu + z @ np.linalg.cholesky(sigma).T


def test_fid_of_features_with_known_moments_equals_the_closed_form():
    mu1, s1, mu2, s2, closed = _gaussians()
    a, b = _samples_with_moments(mu1, s1, 50, seed=4), _samples_with_moments(mu2, s2, 70, seed=5)
    for method in ("sqrtm", "sample"):
        assert fid_from_features(a, b, method=method) == pytest.approx(closed, rel=1e-9)


def test_sample_form_equals_sqrtm_with_fewer_and_more_images_than_dimensions():
    rng = np.random.default_rng(5)
    for n in (12, 80):
        a, b = rng.normal(size=(n, 32)), 0.2 + 1.5 * rng.normal(size=(n + 3, 32))
        assert fid_from_features(a, b, method="sample") == pytest.approx(fid_from_features(a, b, method="sqrtm"),
                                                                         rel=1e-6)


def test_evaluate_generation_reports_n_definitions_weights_and_the_small_n_bias(registry_weights, faces):
    report = fid_kid(_noised(faces[:4], 20), faces[4:7], kid_subsets=5)
    assert report["n_generated"] == 4 and report["n_real"] == 3
    assert report["fid"] > 0 and report["kid_subset_size"] == 3
    assert set(report["definitions"]) == {"features", "fid", "kid"}
    assert report["weights"]["file"] == str(registry_weights)
    assert report["weights"]["official"] is False            # random test weights: flagged as not comparable
    notes = " ".join(report["notes"])
    assert "biased" in notes and "n_generated=4" in notes and "n_real=3" in notes
    assert "not the official file" in notes


def test_missing_weights_offline_raise_weights_not_found_naming_the_file(faces):
    with pytest.raises(WeightsNotFoundError, match=OFFICIAL):
        inception_features(faces[:2])


def test_truncated_weights_raise_checkpoint_error(inception_file, faces):
    (weights_dir() / OFFICIAL).write_bytes(inception_file.read_bytes()[: 10 << 20])
    with pytest.raises(CheckpointError, match="download it again"):
        inception_features(faces[:2])


def test_torchvision_inception_weights_raise_checkpoint_error_naming_the_right_file(faces):
    from torchvision.models import inception_v3

    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(),
               weights_dir() / OFFICIAL)
    with pytest.raises(CheckpointError, match="not the FID Inception weights.*AuxLogits.*weights-inception"):
        inception_features(faces[:2])


# --- evaluate_generation: FID/KID where the weights are, identity statistics offline ---------------------------

@pytest.mark.slow
def test_evaluate_generation_offline_gives_identity_statistics_and_a_note(samples, faces):
    from facesynth.evaluate import evaluate_generation
    from facesynth.media import read_image

    people = [read_image(samples.astronaut), read_image(samples.grace_hopper), faces[0]]
    report = evaluate_generation(people, faces[1:])
    assert report["fid"] is None and any(OFFICIAL in note for note in report["notes"])
    assert report["face_rate"] == 1.0 and report["n_generated"] == 3 and report["n_real"] == N_FACES - 1
    assert report["identity_diversity"] > 0.6          # three different people
    assert report["real_diversity"] < 0.6              # one man's video
    # the man's own frame is near the real set, the two women are not: the mean lies between
    assert 0.3 < report["nearest_real"] < 0.8
    one_person = evaluate_generation(faces[:4], faces[4:], weights=None)
    assert one_person["identity_diversity"] < 0.6 and one_person["nearest_real"] < 0.6
    assert "weights=None" in one_person["notes"][0]


def test_evaluate_generation_counts_images_without_a_face(faces):
    from facesynth.evaluate import evaluate_generation

    noise = np.random.default_rng(3).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    report = evaluate_generation(np.concatenate([noise, faces[:1, :64, :64]]), faces, weights=None)
    assert report["face_rate"] < 0.5 and report["n_generated"] == 4


@pytest.mark.slow
def test_evaluate_generation_with_weights_adds_fid_and_kid(registry_weights, faces):
    from facesynth.evaluate import evaluate_generation

    report = evaluate_generation(_noised(faces[:4], 4), faces[4:], kid_subsets=5)
    assert report["fid"] > 0 and np.isfinite(report["kid"])
    assert report["weights"]["inception"]["file"] == OFFICIAL and report["inception_official"] is False
    assert report["face_rate"] == 1.0


@pytest.mark.slow
def test_evaluate_generation_enlarges_small_faces_and_compares_with_other_people(samples, faces):
    import cv2

    from facesynth.evaluate import evaluate_generation
    small = np.stack([cv2.resize(f[8:136, 24:152], (48, 48), interpolation=cv2.INTER_AREA) for f in faces[:4]])
    from facesynth.evaluate.generation import _enlarged
    frame = faces[0]
    assert _enlarged(small[0], 256).shape == (256, 256, 3) and _enlarged(frame, 128) is frame
    enlarged = evaluate_generation(small, faces[4:], weights=None, upsample_to=256,
                                   others={"astronaut": samples.astronaut, "hopper": samples.grace_hopper})
    assert enlarged["face_rate"] == 1.0 and enlarged["upsample_to"] == 256
    assert enlarged["distance_real"] < 0.6 < min(enlarged["distance_others"].values())
    assert enlarged["closest_real_rate"] == 1.0 and "closest_real_rate" in enlarged["definitions"]

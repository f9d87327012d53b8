"""Evaluation metrics on real media: identity, landmarks, stability, swap and reenactment evaluations."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facesynth.errors import ConfigError, FacesynthError, NoFaceError
from facesynth.evaluate import FaceEmbedder, evaluate_reenactment, evaluate_swap, format_table, write_report
from facesynth.evaluate.frames import iter_rgb
from facesynth.evaluate.identity import SAME_PERSON_THRESHOLD, cosine_similarity, descriptor_distance
from facesynth.evaluate.landmarks import (akd, expression_distance, eye_aspect_ratio, keypoint_distance,
                                          mouth_opening, pose_difference)
from facesynth.evaluate.temporal import flicker, jitter
from facesynth.media import read_image, write_video

N = 24          # frames of the talking head used per test (of 120): seconds, not minutes


@pytest.fixture(scope="module")
def embedder():
    return FaceEmbedder("dlib")


@pytest.fixture(scope="module")
def head(samples) -> np.ndarray:
    """The first N frames of the real talking head, [N, 144, 176, 3] uint8."""
    return np.stack([f for _, f in zip(range(N), iter_rgb(samples.talking_head))])


@pytest.fixture(scope="module")
def astronaut_small(samples) -> np.ndarray:
    """The astronaut's portrait cropped and resized to the talking head's frame size (176×144)."""
    return cv2.resize(read_image(samples.astronaut)[0:390, 60:540], (176, 144), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def head_landmarks(head, embedder) -> list[np.ndarray]:
    return [embedder.tracker(f).landmarks for f in head]


# identity -------------------------------------------------------------------------------------------------------

def test_same_person_frames_are_closer_than_dlibs_threshold(head, embedder):
    d = [embedder.embed(f) for f in head[::4]]
    dists = [descriptor_distance(a, b) for i, a in enumerate(d) for b in d[i + 1:]]
    assert len(dists) == 15
    assert max(dists) < SAME_PERSON_THRESHOLD
    assert embedder.distance(head[0], head[-1]) == pytest.approx(descriptor_distance(d[0], embedder.embed(head[-1])))


@pytest.mark.slow
def test_different_people_are_farther_than_dlibs_threshold(samples, head, embedder):
    astronaut, hopper = read_image(samples.astronaut), read_image(samples.grace_hopper)
    pairs = [(astronaut, hopper), (astronaut, head[0]), (hopper, head[0]), (astronaut, head[12]), (hopper, head[12])]
    dists = [embedder.distance(a, b) for a, b in pairs]
    assert min(dists) > SAME_PERSON_THRESHOLD, dists
    assert embedder.similarity(head[0], head[12]) > embedder.similarity(astronaut, head[0])


def test_descriptor_is_128_d_and_no_face_gives_none(head, embedder):
    d = embedder.embed(head[0])
    assert d.shape == (128,) and d.dtype == np.float64 and np.isfinite(d).all() and np.linalg.norm(d) > 0.5
    grey = np.full_like(head[0], 128)
    assert embedder.embed(grey) is None
    with pytest.raises(NoFaceError, match="no face"):
        embedder.distance(grey, head[0])
    assert cosine_similarity(d, d) == pytest.approx(1.0)


@pytest.mark.slow
def test_face_set_uses_its_stored_landmarks(samples, embedder, tmp_path):
    from facesynth.extract import extract_faces
    fs_dir = tmp_path / "B"
    extract_faces(samples.astronaut, fs_dir, detector="dlib", size=256)
    from_set = embedder.embed_set(fs_dir)
    from_image = embedder.embed_set(samples.astronaut)
    assert from_set.shape == (1, 128)
    assert descriptor_distance(from_set[0], from_image[0]) < 0.25   # same person, another crop of her
    with pytest.raises(NoFaceError):
        embedder.embed_set(np.full((2, 64, 64, 3), 30, np.uint8))


# landmarks ------------------------------------------------------------------------------------------------------

def test_akd_of_a_video_with_itself_is_zero_and_of_a_shifted_copy_is_the_shift(head, embedder):
    k = 4
    shifted = np.stack([cv2.warpAffine(f, np.float32([[1, 0, k], [0, 1, 0]]), (f.shape[1], f.shape[0]),
                                       borderMode=cv2.BORDER_REPLICATE) for f in head[:8]])
    lm = [embedder.tracker(f).landmarks for f in head[:8]]
    lm_shifted = [embedder.tracker(f).landmarks for f in shifted]
    assert akd(lm, lm)["akd"] == 0.0
    result = akd(lm_shifted, lm)
    assert result["akd"] == pytest.approx(k, abs=1.0)
    assert result["akd_mad"] == pytest.approx(k / 2, abs=0.75)     # pose-evaluation's cmp.py averages |dx|, |dy|
    assert result["frames"] == 8 and result["missing"] == 0


def test_keypoint_distances_are_exact_on_points():
    pts = np.random.default_rng(0).uniform(0, 100, (68, 2))
    assert keypoint_distance(pts + [3.0, 4.0], pts) == pytest.approx((5.0, 3.5))
    assert akd([pts, None], [pts + [0, 2], pts]) == {"akd": 2.0, "akd_mad": 1.0, "frames": 1, "missing": 1}


def test_expression_distance_ignores_pose_and_size_but_sees_the_mouth(head_landmarks):
    lm = head_landmarks[0]
    angle = np.radians(20)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (lm - lm.mean(0)) @ rot.T * 1.7 + [30, -12]
    assert expression_distance(moved, lm) < 1e-9
    opened = lm.copy()
    opened[56:59, 1] += 6          # lower lip down by 6 px
    opened[65:68, 1] += 6
    assert expression_distance(opened, lm) > 0.01
    assert mouth_opening(opened) > mouth_opening(lm) + 0.05
    assert 0.1 < eye_aspect_ratio(lm) < 0.5


def test_pose_difference_wraps_angles():
    assert list(pose_difference((10, -5, 179), (-10, 5, -179))) == pytest.approx([20, 10, 2])


# stability ------------------------------------------------------------------------------------------------------

def test_flicker_is_zero_for_a_still_video_and_grows_with_noise(head, head_landmarks):
    from facesynth.evaluate.temporal import face_region
    still = np.stack([head[0]] * 10)
    region = [face_region(head_landmarks[0], head[0].shape)] * 10
    assert flicker(still, region) == 0.0
    rng = np.random.default_rng(1)
    values = []
    for sigma in (2, 6, 18):
        noisy = np.clip(still + rng.normal(0, sigma, still.shape), 0, 255).astype(np.uint8)
        values.append(flicker(noisy, region, original=still))
    assert 0 < values[0] < values[1] < values[2]
    assert flicker(head[:10], region, original=head[:10]) == 0.0    # the original's own change is not flicker


def test_jitter_grows_with_landmark_noise(head_landmarks):
    base = jitter(head_landmarks)
    assert 0 < base < 0.05                     # a real talking head: small detector noise
    rng = np.random.default_rng(2)
    noisy = [jitter([lm + rng.normal(0, s, lm.shape) for lm in head_landmarks]) for s in (0.5, 1.5, 4.0)]
    assert base < noisy[0] < noisy[1] < noisy[2]
    steady = [head_landmarks[0] + [t * 1.5, 0] for t in range(10)]   # smooth motion is not jitter
    assert jitter(steady) == pytest.approx(0.0, abs=1e-12)


# swap -----------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_video_against_itself_is_no_swap(samples, head, embedder):
    r = evaluate_swap(head, head, target=samples.astronaut, embedder=embedder, progress=False)
    assert r["success_rate"] == 0.0
    assert r["id_to_source"] == pytest.approx(0.0, abs=1e-9)
    assert r["id_to_target"] > SAME_PERSON_THRESHOLD
    assert r["pose_error_deg"] == pytest.approx(0.0, abs=1e-6)
    assert r["expression_error"] == pytest.approx(0.0, abs=1e-9)
    assert r["flicker"] == 0.0 and r["face_rate"] == 1.0 and r["frames"] == N
    assert r["jitter"] == pytest.approx(r["jitter_original"])


@pytest.mark.slow
def test_a_complete_identity_change_is_a_successful_swap(head, astronaut_small, samples, embedder):
    swapped = np.stack([astronaut_small] * 6)
    r = evaluate_swap(head[:6], swapped, target=samples.astronaut, embedder=embedder, progress=False)
    assert r["success_rate"] == 1.0 and r["target_match_rate"] == 1.0
    assert r["id_to_target"] < SAME_PERSON_THRESHOLD < r["id_to_source"]


@pytest.mark.slow
def test_frames_without_a_face_are_counted_not_fatal(head, samples, embedder):
    swapped = head[:8].copy()
    swapped[[2, 5]] = 128
    r = evaluate_swap(head[:8], swapped, target=samples.astronaut, embedder=embedder, progress=False)
    assert r["face_rate"] == pytest.approx(6 / 8)
    assert r["frames_with_face"] == 6 and r["frames"] == 8
    assert r["per_frame"][2]["face"] is False and r["per_frame"][2]["id_to_target"] is None
    assert np.isfinite(r["id_to_source"])


@pytest.mark.slow
def test_videos_of_different_lengths_or_rates_are_refused_or_aligned_in_time(head, samples, embedder, tmp_path):
    with pytest.raises(ConfigError, match="different lengths"):
        evaluate_swap(head[:8], head[:6], target=samples.astronaut, embedder=embedder, progress=False)
    r = evaluate_swap(head[:8], head[:6], target=samples.astronaut, embedder=embedder, align="time", progress=False)
    assert r["frames"] == 6 and "shortest" in r["alignment"]
    a = write_video(tmp_path / "a.mp4", head[:12], fps=24)
    b = write_video(tmp_path / "b.mp4", head[:12:2], fps=12)
    with pytest.raises(ConfigError, match="different frame rates"):
        evaluate_swap(a, b, target=samples.astronaut, embedder=embedder, progress=False)
    r = evaluate_swap(a, b, target=samples.astronaut, embedder=embedder, align="time", progress=False)
    assert r["fps"] == pytest.approx(12) and r["frames"] == 6 and "12.000 fps" in r["alignment"]
    assert issubclass(ConfigError, FacesynthError)


@pytest.mark.slow
def test_report_is_json_with_definitions_weights_and_no_nan(head, samples, embedder, tmp_path):
    r = evaluate_swap(head[:4], np.full_like(head[:4], 128), target=samples.astronaut, embedder=embedder,
                      progress=False)
    assert r["face_rate"] == 0.0 and np.isnan(r["id_to_target"])
    path = write_report(r, tmp_path / "swap.json")
    data = json.loads(path.read_text())
    assert data["id_to_target"] is None and data["face_rate"] == 0.0
    assert "success_rate" in data["definitions"] and data["detector"] == "dlib"
    assert len(data["weights"]["identity"]["sha256"]) == 64
    assert data["versions"]["facesynth"]
    assert "face_rate" in format_table(r) and "n/a" in format_table(r)


# reenactment ----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_self_reenactment_by_its_own_frames_scores_zero(head, embedder):
    r = evaluate_reenactment(head[0], head[:8], head[:8], embedder=embedder, progress=False)
    assert r["protocol"].startswith("self-reenactment")
    assert r["l1"] == 0.0 and r["akd"] == 0.0 and r["aed"] == pytest.approx(0.0, abs=1e-9)
    assert r["id_to_source_image"] < SAME_PERSON_THRESHOLD and r["id_kept_rate"] == 1.0


@pytest.mark.slow
def test_reenactment_l1_and_akd_follow_a_shift(head, embedder):
    k = 3
    result = np.stack([cv2.warpAffine(f, np.float32([[1, 0, 0], [0, 1, k]]), (176, 144),
                                      borderMode=cv2.BORDER_REPLICATE) for f in head[:8]])
    r = evaluate_reenactment(head[0], head[:8], result, embedder=embedder, progress=False)
    expected_l1 = np.abs(result.astype(float) - head[:8].astype(float)).mean() / 255
    assert r["l1"] == pytest.approx(expected_l1, rel=1e-9)
    assert r["akd"] == pytest.approx(k, abs=1.0)


def test_cross_identity_reports_identity_kept_and_no_l1(head, samples, astronaut_small, embedder):
    result = np.stack([astronaut_small] * 4)
    r = evaluate_reenactment(samples.astronaut, head[:4], result, embedder=embedder, progress=False)
    assert r["protocol"].startswith("cross-identity") and r["l1"] is None
    assert r["id_to_source_image"] < SAME_PERSON_THRESHOLD < r["aed"]
    with pytest.raises(NoFaceError, match="source"):
        evaluate_reenactment(np.full((64, 64, 3), 90, np.uint8), head[:4], head[:4], embedder=embedder)


@pytest.mark.slow
def test_the_worker_process_gives_the_same_numbers_as_one_process(head, samples, embedder, tmp_path):
    original = write_video(tmp_path / "original.mp4", head[:10], fps=25)
    swapped = write_video(tmp_path / "swapped.mp4", np.clip(head[:10].astype(int) + 12, 0, 255).astype(np.uint8),
                          fps=25)
    one = evaluate_swap(original, swapped, target=samples.astronaut, embedder=embedder, jobs=1, progress=False)
    two = evaluate_swap(original, swapped, target=samples.astronaut, embedder=embedder, jobs=2, progress=False)
    for key in ("id_to_target", "id_to_source", "success_rate", "pose_error_deg", "expression_error", "jitter",
                "jitter_original", "flicker", "face_rate", "frames"):
        assert two[key] == one[key], key
    assert one["frames"] == 10 and one["id_to_source"] < SAME_PERSON_THRESHOLD

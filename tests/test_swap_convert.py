"""Face-swap conversion on the real samples: a tiny model trained for a few iterations (quality is not the
point, the mechanics are), converting the talking-head video and the portraits."""
from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
from skimage.color import rgb2lab

from facesynth.errors import CheckpointError, ConfigError
from facesynth.extract import extract_faces
from facesynth.extract.backends import create_backend
from facesynth.extract.pipeline import detect_faces, sources_of
from facesynth.media import has_audio, iter_frames, probe, read_image, write_image, write_video, write_wav
from facesynth.swap.config import SwapConfig
from facesynth.swap.convert import ConvertWarning, color_transfer, convert_image, convert_video, hist_match, lct, rct
from facesynth.swap.train import SwapTrainer, load_swap_model

FPS = 29.97


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("convert")


@pytest.fixture(scope="module")
def model_dir(samples, work, dlib):
    faces_a = extract_faces(samples.talking_head, work / "A", fps=5, size=64, detector=dlib, progress=False)
    faces_b = extract_faces(samples.portraits, work / "B", size=64, detector=dlib, progress=False)
    config = SwapConfig.preset("quick", checkpoint_every=5, preview_every=0, snapshot_every=0)
    SwapTrainer(config, faces_a=faces_a.root, faces_b=faces_b.root, workdir=work / "model", progress=False).train(5)
    return work / "model"


@pytest.fixture(scope="module")
def dlib():
    """One detector for the whole module (building one costs seconds); conversion accepts an instance."""
    return create_backend("dlib")


@pytest.fixture(scope="module")
def reencoded(samples, work):
    """The talking head's frames re-encoded once more, unchanged: what H.264 re-encoding alone does to pixels."""
    return write_video(work / "reencoded.mp4", (f for _, f in iter_frames(samples.talking_head)), FPS)


@pytest.fixture(scope="module")
def face_boxes(samples, dlib):
    found = detect_faces(sources_of(samples.talking_head), dlib, progress=False)
    return [f[0].box.astype(int) if f else None for f in found]


@pytest.fixture(scope="module")
def a2b(samples, model_dir, work, dlib):
    return convert_video(samples.talking_head, work / "a2b.mp4", model_dir, "a2b", detector=dlib, progress=False)


@pytest.fixture(scope="module")
def clip_with_audio(samples, work):
    """The talking head's first 40 frames with a sine tone muxed in. The tone outlasts the clip: the writer
    muxes with ffmpeg's -shortest, which would otherwise cut the clip to the tone."""
    wav = write_wav(work / "tone.wav", 0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * 16000) / 16000), 16000)
    clip = (f for i, f in iter_frames(samples.talking_head) if i < 40)
    return write_video(work / "clip.mp4", clip, FPS, audio=wav)


@pytest.fixture(scope="module")
def clip_b2a(clip_with_audio, model_dir, work, dlib):
    return convert_video(clip_with_audio, work / "clip_b2a.mp4", model_dir, "b2a", detector=dlib, progress=False)


def frames(path) -> np.ndarray:
    return np.stack([f for _, f in iter_frames(path)]).astype(np.int16)


def inner(box: np.ndarray) -> tuple[slice, slice]:
    """The middle half of a face box (where the paste mask is fully on)."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) // 4, (y1 - y0) // 4
    return slice(y0 + dy, y1 - dy), slice(x0 + dx, x1 - dx)


# --- videos ---------------------------------------------------------------------------------------------------

def test_video_keeps_frame_count_size_and_rate(a2b):
    info = probe(a2b)
    assert (info.width, info.height) == (176, 144)
    assert info.fps == pytest.approx(FPS, abs=0.01)
    assert frames(a2b).shape == (120, 144, 176, 3)


def test_video_changes_faces_and_keeps_background(a2b, reencoded, face_boxes):
    out, ref = frames(a2b), frames(reencoded)
    with_face = [i for i, b in enumerate(face_boxes) if b is not None]
    assert len(with_face) >= 100
    face_diff = np.mean([np.abs(out[i][inner(face_boxes[i])] - ref[i][inner(face_boxes[i])]).mean()
                         for i in with_face])
    # far from every face box: a 16 px strip along the left and right edges (faces span x ≈ 37…112)
    x0 = min(face_boxes[i][0] for i in with_face)
    x1 = max(face_boxes[i][2] for i in with_face)
    assert x0 > 16 + 10 and x1 < 176 - 16 - 10
    strips = np.concatenate([out[..., :16, :] - ref[..., :16, :], out[..., -16:, :] - ref[..., -16:, :]])
    background_diff = np.abs(strips).mean()
    # measured: faces ≈ 10 (a 5-iteration model, colour-matched by rct), background ≈ 1.7: the same level as
    # between the input and its plain re-encode, as x264's rate control spreads a few levels of noise frame-wide
    assert face_diff > 5
    assert background_diff < 2.5
    assert face_diff > 3 * background_diff


def test_video_keeps_audio(clip_with_audio, clip_b2a):
    assert has_audio(clip_with_audio) and len(frames(clip_with_audio)) == 40
    assert has_audio(clip_b2a)


def test_video_with_audio_keeps_frame_count(clip_b2a):
    assert len(frames(clip_b2a)) == 40


def test_b2a_differs_from_a2b(a2b, clip_b2a, face_boxes):
    one, other = frames(a2b), frames(clip_b2a)
    diffs = [np.abs(one[i][inner(b)] - other[i][inner(b)]).mean() for i, b in enumerate(face_boxes[:30])
             if b is not None]
    assert np.mean(diffs) > 5


def test_video_without_face_is_written_unchanged_with_warning(model_dir, work, dlib):
    rng = np.random.default_rng(0)
    noise = [cv2.GaussianBlur(rng.integers(0, 256, (144, 176, 3), dtype=np.uint8), (0, 0), 3) for _ in range(12)]
    video = write_video(work / "noise.mp4", noise, FPS)
    reference = write_video(work / "noise_reencoded.mp4", (f for _, f in iter_frames(video)), FPS)
    with pytest.warns(ConvertWarning, match="no face found in 12 frames"):
        out = convert_video(video, work / "noise_out.mp4", model_dir, detector=dlib, progress=False)
    # x264 is deterministic: identical frames in give identical frames out, so this shows a bit-exact pass-through
    assert np.array_equal(frames(out), frames(reference))


# --- images ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def portrait_boxes(samples, dlib):
    """dlib's face box (x0, y0, x1, y1) of each portrait, by file name."""
    return {p.name: dlib.detect([read_image(p)])[0][0].box.astype(int)
            for p in (samples.astronaut, samples.grace_hopper)}


@pytest.fixture(scope="module")
def astronaut_b2a(samples, model_dir, work, dlib):
    # without provenance: its invisible watermark moves pixels all over the image by a few levels, and these tests
    # check that the paste alone leaves everything outside the face exact (test_provenance_writers checks the mark)
    return convert_image(samples.astronaut, work / "astronaut_b2a.png", model_dir, "b2a", detector=dlib,
                         progress=False, provenance=False)


def test_image_face_changes_and_corners_stay_exact(samples, astronaut_b2a, portrait_boxes):
    before, after = read_image(samples.astronaut).astype(np.int16), read_image(astronaut_b2a).astype(np.int16)
    assert after.shape == before.shape == (512, 512, 3)
    box = portrait_boxes["astronaut.png"]
    face = inner(box)
    assert np.abs(after[face] - before[face]).mean() > 5
    x0, y0, x1, y1 = box
    pad = (x1 - x0) // 2
    untouched = np.ones(before.shape[:2], bool)
    untouched[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad] = False
    assert np.array_equal(after[untouched], before[untouched])


def test_image_without_face_is_written_unchanged_with_warning(model_dir, work):
    rng = np.random.default_rng(1)
    noise = write_image(work / "noise.png", rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    with pytest.warns(ConvertWarning, match="no face found"):
        out = convert_image(noise, work / "noise_out.png", model_dir, progress=False)
    assert np.array_equal(read_image(out), read_image(noise))


def test_loaded_model_converts_as_its_workdir(samples, model_dir, work, astronaut_b2a, dlib):
    model = load_swap_model(model_dir, device="cpu")
    from_model = convert_image(samples.astronaut, work / "from_model.png", model, "b2a", face_type="full",
                               detector=dlib, progress=False, provenance=False)
    assert np.array_equal(read_image(from_model), read_image(astronaut_b2a))


def test_seamless_blend_changes_face_only(samples, model_dir, work, astronaut_b2a, portrait_boxes, dlib):
    out = convert_image(samples.astronaut, work / "seamless.png", model_dir, "b2a", blend="seamless", detector=dlib,
                        progress=False, provenance=False)                 # no watermark: as astronaut_b2a
    before, after = read_image(samples.astronaut).astype(np.int16), read_image(out).astype(np.int16)
    face = inner(portrait_boxes["astronaut.png"])
    assert np.abs(after[face] - before[face]).mean() > 5
    assert np.array_equal(after[:100, :100], before[:100, :100])
    assert np.abs(after - read_image(astronaut_b2a)).max() > 0        # Poisson cloning did change the colours


def test_seamless_falls_back_to_alpha_at_the_frame_border(samples, model_dir, work, dlib):
    image = read_image(samples.astronaut)
    left = dlib.detect([image])[0][0].landmarks[:, 0].min()
    cut = write_image(work / "cut.png", image[:, int(left) + 10:])     # the jaw now runs off the left edge
    alpha = convert_image(cut, work / "cut_alpha.png", model_dir, "b2a", detector=dlib, progress=False)
    with pytest.warns(ConvertWarning, match="touches the frame border"):
        seamless = convert_image(cut, work / "cut_seamless.png", model_dir, "b2a", blend="seamless",
                                 detector=dlib, progress=False)
    assert np.array_equal(read_image(seamless), read_image(alpha))


def test_no_warning_for_a_normal_conversion(samples, model_dir, work, dlib):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvertWarning)
        convert_image(samples.grace_hopper, work / "grace.png", model_dir, "b2a", color_transfer="lct", sharpen=0.5,
                      detector=dlib, progress=False)


# --- errors ---------------------------------------------------------------------------------------------------

def test_missing_workdir_is_a_checkpoint_error(samples, work):
    with pytest.raises(CheckpointError, match="no such model folder"):
        convert_image(samples.astronaut, work / "x.png", work / "no_model_here", progress=False)


def test_workdir_without_checkpoint_is_a_checkpoint_error(samples, work):
    (work / "empty_model").mkdir()
    with pytest.raises(CheckpointError, match="no trained model"):
        convert_video(samples.talking_head, work / "x.mp4", work / "empty_model", progress=False)


def test_image_output_needs_an_image_extension(samples, model_dir, work):
    with pytest.raises(ConfigError, match="not an image file name"):
        convert_image(samples.astronaut, work / "x.mp4", model_dir, progress=False)


@pytest.mark.parametrize("option", [dict(direction="x"), dict(color_transfer="foo"), dict(blend="poisson"),
                                    dict(erode=2.0), dict(smooth=4), dict(batch_size=0)])
def test_bad_option_is_a_config_error(samples, model_dir, work, option):
    with pytest.raises(ConfigError):
        convert_video(samples.talking_head, work / "x.mp4", model_dir, progress=False, **option)


# --- colour transfer ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_faces(samples, portrait_boxes):
    """Two real face patches of different colouring (64×64 float RGB in [0,1]) and an elliptic face mask.

    Source is Grace Hopper's face, target the astronaut's: that way round no transferred colour leaves [0,1],
    so the clipping every transfer ends with does not blur what is measured."""
    patches = []
    for path in (samples.grace_hopper, samples.astronaut):
        x0, y0, x1, y1 = portrait_boxes[path.name]
        crop = read_image(path)[y0:y1, x0:x1]
        patches.append(cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32) / 255)
    mask = np.zeros((64, 64), np.float32)
    cv2.ellipse(mask, (32, 32), (22, 28), 0, 0, 360, 1.0, -1)
    return patches[0], patches[1], mask


def test_rct_matches_lab_mean_and_std_inside_the_mask(two_faces):
    source, target, mask = two_faces
    out = rct(source, target, mask)
    inside = mask > 0.5
    got, want, before = rgb2lab(out)[inside], rgb2lab(target)[inside], rgb2lab(source)[inside]
    assert np.abs(before.mean(0) - want.mean(0)).max() > 5          # the patches really differ
    # measured ≤ 0.09: OpenCV's Lab (used inside rct) and scikit-image's differ slightly
    np.testing.assert_allclose(got.mean(0), want.mean(0), atol=0.25)
    np.testing.assert_allclose(got.std(0), want.std(0), atol=0.25)


def test_lct_matches_rgb_mean_and_covariance(two_faces):
    source, target, mask = two_faces
    out = lct(source, target, mask)
    inside = mask > 0.5
    got, want = out[inside].astype(np.float64), target[inside].astype(np.float64)
    np.testing.assert_allclose(got.mean(0), want.mean(0), atol=1e-4)
    np.testing.assert_allclose(np.cov(got, rowvar=False), np.cov(want, rowvar=False), atol=1e-4)   # eps = 1e-5


def test_hist_matches_each_channel_quantiles(two_faces):
    source, target, mask = two_faces
    out = hist_match(source, target, mask)
    inside = mask > 0.5
    q = np.linspace(0.05, 0.95, 19)
    for c in range(3):
        np.testing.assert_allclose(np.quantile(out[..., c][inside], q), np.quantile(target[..., c][inside], q),
                                   atol=2 / 255)


def test_none_is_identity_and_unknown_is_a_config_error(two_faces):
    source, target, mask = two_faces
    assert np.array_equal(color_transfer("none", source, target, mask), source)
    with pytest.raises(ConfigError, match="color_transfer"):
        color_transfer("foo", source, target, mask)


def test_empty_mask_leaves_the_source_unchanged(two_faces):
    source, target, mask = two_faces
    for method in ("rct", "lct", "hist"):
        assert np.array_equal(color_transfer(method, source, target, np.zeros_like(mask)), source)

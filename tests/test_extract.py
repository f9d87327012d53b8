"""Face extraction on the real sample media: detection rate, alignment stability, metadata, bad input."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from facesynth.errors import ConfigError, FacesynthError, MediaError, NoFaceError
from facesynth.extract import FaceSet, extract_faces
from facesynth.extract.align import transform_points, warp_face
from facesynth.extract.backends import create_backend
from facesynth.media import MediaWarning, ffmpeg_exe, iter_frames, read_image, write_image, write_video

SIZE = 256


@pytest.fixture(scope="module")
def head_set(samples, tmp_path_factory) -> FaceSet:
    return extract_faces(samples.talking_head, tmp_path_factory.mktemp("A") / "faces", detector="dlib",
                         progress=False)


@pytest.fixture(scope="module")
def portrait_set(samples, tmp_path_factory) -> FaceSet:
    return extract_faces(samples.portraits, tmp_path_factory.mktemp("B") / "faces", detector="dlib",
                         progress=False)


def test_talking_head_has_a_face_in_95_percent_of_frames(head_set):
    assert head_set.settings["frames_read"] == 120
    assert len(head_set) >= 0.95 * 120
    frames = [f.frame for f in head_set]
    assert frames == sorted(set(frames)) and max(frames) <= 119


def test_eye_centres_are_stable_in_the_crops(head_set):
    eyes = np.array([(f.landmarks[36:42].mean(0), f.landmarks[42:48].mean(0)) for f in head_set])
    assert eyes.std(axis=0).max() < 0.03 * SIZE
    assert np.ptp(eyes, axis=0).max() < 0.03 * SIZE
    # both eyes level and on either side of the centre line
    assert abs(eyes[:, 0, 1].mean() - eyes[:, 1, 1].mean()) < 0.01 * SIZE
    assert eyes[:, 0, 0].mean() < SIZE / 2 < eyes[:, 1, 0].mean()


def test_matrix_maps_source_landmarks_onto_crop_landmarks(head_set):
    for face in list(head_set)[::10]:
        mapped = transform_points(face.source_landmarks, face.matrix)
        np.testing.assert_allclose(mapped, face.landmarks, atol=0.01)


def test_matrix_and_landmarks_match_the_source_frame(head_set, samples):
    """Re-detect a frame independently: same landmarks, and warping it by the matrix gives the stored crop."""
    face = head_set[len(head_set) // 2]
    frame = next(img for i, img in iter_frames(samples.talking_head) if i == face.frame)
    detected = max(create_backend("dlib").detect([frame])[0], key=lambda d: d.area)
    np.testing.assert_allclose(detected.landmarks, face.source_landmarks, atol=1e-3)
    np.testing.assert_allclose(transform_points(detected.landmarks, face.matrix), face.landmarks, atol=0.01)
    np.testing.assert_array_equal(warp_face(frame, face.matrix, SIZE), face.image)


def test_dlib_models_load_once_per_thread_and_detect_the_same_in_another(samples, monkeypatch):
    """Backends made in one thread share dlib's loaded models (the predictor's 100 MB file is read once); a backend
    used in another thread loads that thread's own copy and finds the same face, to the bit."""
    import threading

    import dlib

    from facesynth.extract.backends import dlib_backend

    loads = []
    real = dlib.shape_predictor
    monkeypatch.setattr(dlib, "shape_predictor", lambda path: loads.append(path) or real(path))
    monkeypatch.setattr(dlib_backend, "_LOADED", threading.local())
    frame = read_image(samples.grace_hopper)
    first = create_backend("dlib").detect([frame])[0]
    second = create_backend("dlib").detect([frame])[0]
    assert len(loads) == 1 and len(first) == len(second) == 1
    np.testing.assert_array_equal(first[0].landmarks, second[0].landmarks)

    backend, found = create_backend("dlib"), []
    thread = threading.Thread(target=lambda: found.append(backend.detect([frame])[0]))
    thread.start()
    thread.join()
    assert len(loads) == 2 and len(found[0]) == 1
    np.testing.assert_array_equal(found[0][0].landmarks, first[0].landmarks)
    assert found[0][0].score == first[0].score


def test_face_records_hold_what_the_design_lists(head_set, samples):
    face = head_set[0]
    assert face.image.shape == (SIZE, SIZE, 3) and face.image.dtype == np.uint8
    assert face.landmarks.shape == (68, 2) and face.matrix.shape == (2, 3)
    assert Path(face.source) == samples.talking_head.resolve()
    assert face.excluded is False
    assert {"blur", "yaw", "pitch", "roll", "confidence", "size", "motion"} <= set(face.scores)
    assert face.scores["blur"] > 0 and 40 < face.scores["size"] < 80 and abs(face.scores["yaw"]) < 30
    comp, ext = face.mask("components"), face.mask("extended")
    assert comp.shape == (SIZE, SIZE) and set(np.unique(comp)) == {0, 255}
    assert (ext >= comp).all() and (ext > 0).sum() > 1.1 * (comp > 0).sum()   # the forehead is added
    assert comp[int(face.landmarks[30, 1]), int(face.landmarks[30, 0])] == 255   # the nose tip is inside


def test_folder_of_two_portraits_gives_two_frontal_faces(portrait_set, samples):
    assert len(portrait_set) == 2
    assert sorted(Path(f.source).name for f in portrait_set) == ["astronaut.png", "grace_hopper.jpg"]
    for face in portrait_set:
        assert face.frame == 0 and face.scores["motion"] == 0.0
        assert abs(face.scores["yaw"]) < 10 and abs(face.scores["roll"]) < 10


def test_single_image_and_crop_size(samples, tmp_path):
    fs = extract_faces(samples.grace_hopper, tmp_path / "g", size=64, detector="dlib", progress=False)
    assert len(fs) == 1 and fs[0].image.shape == (64, 64, 3) and fs.size == 64
    reopened = FaceSet.open(tmp_path / "g")
    np.testing.assert_array_equal(reopened[0].landmarks, fs[0].landmarks)


@pytest.mark.slow
def test_fps_sampling_keeps_evenly_spaced_frames(samples, tmp_path):
    fs = extract_faces(samples.talking_head, tmp_path / "s", fps=5, detector="dlib", progress=False)
    assert fs.settings["frames_read"] == 20
    assert all(f.frame % 6 == 0 for f in fs) and len(fs) >= 19


@pytest.mark.slow
def test_face_types_keep_more_around_the_face(samples, tmp_path):
    eye_dist = {}
    for ft in ("full", "whole", "head"):
        face = extract_faces(samples.astronaut, tmp_path / ft, face_type=ft, detector="dlib", progress=False)[0]
        eye_dist[ft] = np.linalg.norm(face.landmarks[42:48].mean(0) - face.landmarks[36:42].mean(0))
    assert eye_dist["full"] > eye_dist["whole"] > eye_dist["head"]


@pytest.mark.slow
def test_all_faces_keeps_both_people_and_default_keeps_the_largest(samples, tmp_path):
    astro = read_image(samples.astronaut)[44:468]              # 424×512
    hopper = read_image(samples.grace_hopper)[88:512]          # 424×512
    write_image(tmp_path / "pair.png", np.concatenate([astro, hopper], axis=1))
    one = extract_faces(tmp_path / "pair.png", tmp_path / "one", detector="dlib", progress=False)
    both = extract_faces(tmp_path / "pair.png", tmp_path / "both", all_faces=True, min_score=0.5,
                         detector="dlib", progress=False)
    assert len(one) == 1 and one[0].box[0] > 512                # Grace Hopper's face is the larger one
    assert len(both) == 2 and sorted(f.box[0] > 512 for f in both) == [False, True]


@pytest.mark.slow
def test_temporal_smoothing_reduces_landmark_jitter(head_set, samples, tmp_path):
    smooth = extract_faces(samples.talking_head, tmp_path / "sm", smooth=5, detector="dlib", progress=False)

    def jitter(fs):
        lm = np.array([f.source_landmarks for f in fs])
        return np.abs(np.diff(lm, n=2, axis=0)).mean()    # second difference: shake, not motion
    assert len(smooth) == len(head_set)
    assert jitter(smooth) < 0.6 * jitter(head_set)


def test_exclude_and_include_are_saved(portrait_set):
    root = portrait_set.root
    ids = portrait_set.ids
    assert portrait_set.exclude([ids[0]]) == 1
    reopened = FaceSet.open(root)
    assert [f.excluded for f in reopened] == [True, False] and len(reopened.active()) == 1
    assert reopened.include([ids[0]]) == 1
    assert [f.excluded for f in FaceSet.open(root)] == [False, False]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]     # no temporary files left


def test_update_scores_merges_and_persists(portrait_set):
    portrait_set.update_scores({portrait_set.ids[1]: {"loss": 0.0312}})
    face = FaceSet.open(portrait_set.root)[1]
    assert face.scores["loss"] == pytest.approx(0.0312) and "blur" in face.scores


# ---- bad input -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,content", [("missing.mp4", None), ("empty.mp4", b""), ("noise.mp4", "random"),
                                          ("noise.png", "random"), ("notes.jpg", b"not an image at all\n")])
def test_unreadable_input_raises_media_error(tmp_path, name, content):
    path = tmp_path / name
    if content == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaError):
        extract_faces(path, tmp_path / "out", detector="dlib", progress=False)
    assert not (tmp_path / "out").exists()


def test_folder_without_images_raises_media_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "readme.txt").write_text("no photos here")
    with pytest.raises(MediaError, match="no images"):
        extract_faces(tmp_path / "in", tmp_path / "out", detector="dlib", progress=False)


@pytest.mark.slow
def test_folder_of_unreadable_images_raises_media_error_and_one_bad_photo_is_skipped(samples, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (bad / "b.png").write_bytes(b"")
    with pytest.raises(MediaError, match="could be read"):
        extract_faces(bad, tmp_path / "out", detector="dlib", progress=False)
    (bad / "c.jpg").write_bytes(samples.grace_hopper.read_bytes())
    with pytest.warns(MediaWarning, match="skipping"):
        fs = extract_faces(bad, tmp_path / "out", detector="dlib", progress=False)
    assert len(fs) == 1 and Path(fs[0].source).name == "c.jpg"


def test_grey_and_rgba_photos_give_rgb_faces(samples, tmp_path):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(samples.grace_hopper).convert("L").save(photos / "grey.png")
    Image.open(samples.astronaut).convert("RGBA").save(photos / "rgba.png")
    fs = extract_faces(photos, tmp_path / "out", size=96, detector="dlib", progress=False)
    assert len(fs) == 2 and all(f.image.shape == (96, 96, 3) for f in fs)
    grey = next(f for f in fs if f.source.endswith("grey.png")).image
    assert np.abs(grey[..., 0].astype(int) - grey[..., 2]).max() <= 1


def test_video_without_faces_raises_no_face_error_with_frame_count(tmp_path):
    rng = np.random.default_rng(1)
    write_video(tmp_path / "noise.mp4", (rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(12)),
                fps=12)
    with pytest.raises(NoFaceError, match=r"12 frames"):
        extract_faces(tmp_path / "noise.mp4", tmp_path / "out", detector="dlib", progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


@pytest.mark.slow
def test_truncated_video_uses_readable_frames_and_warns(samples, tmp_path):
    fast = tmp_path / "fast.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(samples.talking_head), "-c", "copy",
                    "-movflags", "+faststart", str(fast)], check=True)
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fs = extract_faces(cut, tmp_path / "out", detector="dlib", progress=False)
    read = fs.settings["frames_read"]
    assert 10 < read < 120 and len(fs) >= 0.9 * read
    assert any(issubclass(w.category, MediaWarning) and str(read) in str(w.message) for w in caught)


@pytest.mark.slow
def test_failed_extraction_keeps_the_previous_face_set(samples, tmp_path):
    out = tmp_path / "faces"
    extract_faces(samples.grace_hopper, out, detector="dlib", progress=False)
    write_image(tmp_path / "flat.png", np.full((120, 120, 3), 128, np.uint8))
    with pytest.raises(NoFaceError):
        extract_faces(tmp_path / "flat.png", out, detector="dlib", progress=False)
    assert len(FaceSet.open(out)) == 1 and Path(FaceSet.open(out)[0].source).name == "grace_hopper.jpg"


@pytest.mark.slow
def test_existing_face_set_is_replaced_but_other_folders_are_refused(samples, tmp_path):
    out = tmp_path / "faces"
    extract_faces(samples.grace_hopper, out, detector="dlib", progress=False)
    fs = extract_faces(samples.portraits, out, detector="dlib", progress=False)
    assert len(fs) == 2 and len(list((out / "images").iterdir())) == 2
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError, match="not a face set"):
        extract_faces(samples.grace_hopper, other, detector="dlib", progress=False)
    assert (other / "keep.txt").read_text() == "precious"


def test_open_rejects_a_folder_that_is_not_a_face_set(tmp_path):
    with pytest.raises(MediaError, match="not a face set"):
        FaceSet.open(tmp_path)
    (tmp_path / "faceset.json").write_text("{ broken")
    with pytest.raises(MediaError, match="damaged"):
        FaceSet.open(tmp_path)


def test_bad_options_raise_config_error(samples, tmp_path):
    for kwargs in ({"face_type": "mid"}, {"size": 8}, {"smooth": 4}, {"detector": "nope"}, {"masks": ("hair",)}):
        with pytest.raises(ConfigError):
            extract_faces(samples.grace_hopper, tmp_path / "o", progress=False, **kwargs)


# ---- command line ----------------------------------------------------------------------------------------

def test_cli_extract_writes_face_set_and_gallery(samples, tmp_path, capsys):
    from facesynth.cli import main

    gallery = tmp_path / "g.png"
    assert main(["extract", str(samples.portraits), str(tmp_path / "fs"), "--detector", "dlib", "--size", "96",
                 "--gallery", str(gallery)]) == 0
    assert len(FaceSet.open(tmp_path / "fs")) == 2
    img = read_image(gallery)
    assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 10
    assert "2 faces" in capsys.readouterr().out


def test_cli_prints_one_line_and_exits_2_on_bad_input(tmp_path):
    res = subprocess.run([sys.executable, "-m", "facesynth", "extract", str(tmp_path / "nope.mp4"),
                          str(tmp_path / "out")], capture_output=True, text=True)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facesynth: error:") and "nope.mp4" in lines[0]
    assert "Traceback" not in res.stderr


def test_every_error_is_a_facesynth_error():
    for cls in (ConfigError, MediaError, NoFaceError):
        assert issubclass(cls, FacesynthError)

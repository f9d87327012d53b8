"""Ranking faces by how badly they train and pruning them headless, on a real face set with chosen scores."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facesynth.errors import ConfigError
from facesynth.extract import FaceSet, extract_faces
from facesynth.extract.faceset import META_FILE
from facesynth.swap import prune, rank_faces
from facesynth.swap.data import FaceData


@pytest.fixture(scope="module")
def extracted(samples, tmp_path_factory) -> Path:
    """20 faces of the talking head (5 fps of 4 s), 64 px."""
    fs = extract_faces(samples.talking_head, tmp_path_factory.mktemp("prune") / "A", fps=5, size=64,
                       detector="dlib", progress=False)
    assert len(fs) == 20
    return fs.root


@pytest.fixture
def faces(extracted, tmp_path) -> FaceSet:
    """A private copy whose scores are set so that face i has loss i/100, |yaw| 2i (sign alternating), pitch i,
    blur 1000 - 10i and confidence 1 - i/100: each term ranks the faces the same way, higher id = worse."""
    root = tmp_path / "A"
    shutil.copytree(extracted, root)
    fs = FaceSet.open(root)
    fs.update_scores({f.id: {"loss": f.id / 100, "yaw": 2.0 * f.id * (-1) ** f.id, "pitch": float(f.id),
                             "blur": 1000.0 - 10 * f.id, "confidence": 1 - f.id / 100} for f in fs})
    return FaceSet.open(root)


def _excluded(root: Path) -> list[int]:
    return sorted(f.id for f in FaceSet.open(root) if f.excluded)


def test_rank_puts_the_face_worst_on_every_term_first(faces):
    ranked = rank_faces(faces)
    assert [fid for fid, _ in ranked] == list(range(19, -1, -1))
    assert ranked[0][1] == pytest.approx(1.0) and ranked[-1][1] == pytest.approx(0.0)
    assert ranked[10][1] == pytest.approx(9 / 19)


def test_rank_by_one_term_follows_that_score(faces):
    faces.update_scores({3: {"loss": 5.0}, 17: {"loss": 0.0}})
    ids = [fid for fid, _ in rank_faces(faces, by=("loss",))]
    assert ids[0] == 3 and ids[-1] == 17


def test_rank_uses_the_magnitude_of_yaw_and_pitch(faces):
    faces.update_scores({0: {"yaw": -80.0}, 1: {"pitch": -80.0}})
    assert rank_faces(faces, by=("yaw",))[0][0] == 0
    assert rank_faces(faces, by=("pitch",))[0][0] == 1


def test_low_blur_and_low_confidence_are_bad(faces):
    faces.update_scores({4: {"blur": 1.0, "confidence": 0.01}})
    assert rank_faces(faces, by=("blur",))[0][0] == 4
    assert rank_faces(faces, by=("confidence",))[0][0] == 4


def test_fast_moving_faces_rank_worse(faces):
    assert all("motion" in f.scores for f in faces)         # extraction measured it
    faces.update_scores({f.id: {"motion": 0.01 * (f.id % 5)} for f in faces} | {7: {"motion": 0.5}})
    ranked = rank_faces(faces, by=("motion",))
    assert ranked[0] == (7, pytest.approx(1.0))
    assert {fid for fid, _ in ranked[-4:]} == {0, 5, 10, 15}     # motion 0: tied best


def test_weights_choose_what_matters(faces):
    faces.update_scores({0: {"yaw": 90.0}})
    assert rank_faces(faces, by=("loss", "yaw"), weights={"yaw": 0.0})[0][0] == 19
    assert rank_faces(faces, by=("loss", "yaw"), weights={"loss": 0.0})[0][0] == 0


def test_a_face_without_a_score_ignores_that_term(faces):
    for fid in (0, 19):
        del faces.get(fid).scores["loss"]
    faces.save()
    ranked = dict(rank_faces(FaceSet.open(faces.root), by=("loss", "yaw")))
    assert ranked[19] == pytest.approx(1.0)                 # worst |yaw|; its missing loss does not dilute it
    assert ranked[0] == pytest.approx(0.0)
    assert ranked[18] == pytest.approx((17 / 17 + 18 / 19) / 2)


def test_rank_skips_excluded_faces_unless_asked(faces):
    faces.exclude([19])
    assert 19 not in dict(rank_faces(faces))
    assert rank_faces(faces, excluded=True)[0][0] == 19


def test_unknown_ranking_term_is_refused(faces):
    with pytest.raises(ConfigError, match="unknown term"):
        rank_faces(faces, by=("smile",))


def test_worst_loss_excludes_that_fraction_with_the_highest_loss(faces):
    assert prune(faces.root, worst_loss=0.1) == [18, 19]
    assert _excluded(faces.root) == [18, 19]


def test_max_yaw_excludes_faces_turned_further_either_way(faces):
    # |yaw| = 2i: faces 16..19 exceed 30°, with signs + - + -
    assert prune(faces.root, max_yaw=30) == [16, 17, 18, 19]


@pytest.mark.parametrize("rule, expected", [
    ({"max_pitch": 16.5}, [17, 18, 19]),
    ({"min_blur": 825.0}, [18, 19]),
    ({"min_confidence": 0.835}, [17, 18, 19]),
    ({"worst": 0.25}, [15, 16, 17, 18, 19]),
    ({"max_pitch": 18.5, "min_blur": 995.0}, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]),
])
def test_each_rule_and_their_union(faces, rule, expected):
    assert prune(faces.root, **rule) == expected


def test_dry_run_changes_nothing(faces):
    before = (faces.root / META_FILE).read_bytes()
    assert prune(faces.root, worst_loss=0.1, max_yaw=30, dry_run=True) == [16, 17, 18, 19]
    assert (faces.root / META_FILE).read_bytes() == before


def test_already_excluded_faces_are_not_selected_or_counted_again(faces):
    faces.exclude([19])
    # 19 active faces: 10 % rounds down to 1, the worst of those still active
    assert prune(faces.root, worst_loss=0.1) == [18]
    assert prune(faces.root, max_yaw=30) == [16, 17]
    assert _excluded(faces.root) == [16, 17, 18, 19]


def test_never_excludes_every_face(faces):
    before = (faces.root / META_FILE).read_bytes()
    with pytest.raises(ConfigError, match="every one of the 20 active faces"):
        prune(faces.root, max_pitch=-1)
    assert (faces.root / META_FILE).read_bytes() == before


@pytest.mark.parametrize("kwargs, message", [
    ({}, "at least one rule"),
    ({"worst_loss": 1.0}, r"\[0, 1\)"),
    ({"worst": -0.1}, r"\[0, 1\)"),
])
def test_invalid_rules_are_refused(faces, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        prune(faces.root, **kwargs)


def test_worst_loss_needs_training_losses(extracted, tmp_path):
    root = tmp_path / "fresh"
    shutil.copytree(extracted, root)
    with pytest.raises(ConfigError, match="no face has a training loss"):
        prune(root, worst_loss=0.1)


def test_exclusion_persists_and_training_data_skips_it(faces):
    ids = prune(faces, worst=0.1)                 # a FaceSet object works as well as a path
    assert ids == [18, 19]
    reopened = FaceSet.open(faces.root)
    assert [f.id for f in reopened if f.excluded] == ids and len(reopened.active()) == 18
    data = FaceData(faces.root, resolution=64)
    assert len(data) == 18 and not set(ids) & set(data.ids)
    reopened.include(ids)
    assert _excluded(faces.root) == []


def test_a_stale_faceset_object_neither_misses_nor_overwrites_newer_scores(faces):
    stale = FaceSet.open(faces.root)
    FaceSet.open(faces.root).update_scores({0: {"loss": 9.0}})      # a trainer's checkpoint, after `stale` was opened
    assert prune(stale, worst_loss=0.05) == [0]
    assert FaceSet.open(faces.root).get(0).scores["loss"] == 9.0

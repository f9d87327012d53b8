"""Self-reenactment (FOMM's reconstruction protocol), its copy-the-source baseline, training on a face crop, and
the notebook helpers that show them (key points, side-by-side evaluation, Wav2Lip's inputs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facesynth.errors import ConfigError
from facesynth.media import VideoWriter, iter_frames, probe

FIXTURES = Path(__file__).parent / "data" / "fomm"


@pytest.fixture(scope="module")
def short_clip(samples, tmp_path_factory):
    from facesynth.reenact.prepare import prepare_driving

    driving = tmp_path_factory.mktemp("self") / "driving.mp4"
    with VideoWriter(driving, fps=25) as writer:
        for index, frame in iter_frames(samples.talking_head):
            if index < 12:
                writer.write(frame)
    return prepare_driving(driving, size=128, detector="dlib", batch_size=5, progress=False)


def test_self_reenact_rebuilds_every_frame_from_one_and_writes_the_copy_baseline(short_clip, tmp_path):
    from facesynth.reenact import load_fomm, self_reenact

    model = load_fomm(FIXTURES / "small-cpk.pt", FIXTURES / "small.yaml", device="cpu")
    result = self_reenact(model, short_clip, tmp_path / "self.mp4", size=128, source_frame=3,
                          baseline_path=tmp_path / "copy.mp4", keep=3, batch_size=4)
    assert result.frames == 12 and result.source_frame == 3 and sorted(result.samples) == [0, 6, 11]
    real = torch.cat(list(short_clip))
    source = (real[3].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(result.source.astype(float) - source).max() <= 1            # the source is frame 3 of the crop
    for i, (drv, res) in result.samples.items():                               # samples pair the real frame i
        assert np.abs(drv.astype(float) - real[i].permute(1, 2, 0).numpy() * 255).max() <= 1
        assert res.shape == (128, 128, 3)
    video, copy = probe(result.video), probe(result.baseline)
    assert (video.width, video.frame_count) == (copy.width, copy.frame_count) == (128, 12)
    copies = [frame.astype(int) for _, frame in iter_frames(result.baseline)]
    assert all(np.abs(f - result.source).mean() < 3 for f in copies)           # the source, 12 times (H.264 aside)


def test_self_reenact_uses_absolute_key_points_so_the_source_frame_rebuilds_itself_best(short_clip, tmp_path):
    from facesynth.reenact import load_fomm, self_reenact

    model = load_fomm(FIXTURES / "small-cpk.pt", FIXTURES / "small.yaml", device="cpu")
    result = self_reenact(model, short_clip, tmp_path / "self.mp4", size=128, source_frame=0, keep=12)
    with torch.inference_mode():
        src = torch.cat(list(short_clip))[:1]
        kp = model.keypoints(src)
        own = model.generate(src, kp, kp)["prediction"]                        # driven by its own key points
    expected = (own[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(result.samples[0][1].astype(float) - expected).max() <= 2


def test_self_reenact_rejects_a_source_frame_outside_the_video(short_clip, tmp_path):
    from facesynth.reenact import load_fomm, self_reenact

    model = load_fomm(FIXTURES / "small-cpk.pt", FIXTURES / "small.yaml", device="cpu")
    with pytest.raises(ConfigError, match="outside the driving video's 12 frames"):
        self_reenact(model, short_clip, tmp_path / "x.mp4", size=128, source_frame=12)
    with pytest.raises(ConfigError, match="prepared at 128 px"):
        self_reenact(model, short_clip, tmp_path / "x.mp4", size=64)


def test_trainer_takes_a_driving_clip_as_its_face_crops(short_clip, tmp_path):
    from facesynth.reenact.train import VideoPairs

    pairs = VideoPairs([short_clip], size=32)
    frames = pairs.frames(0)
    assert frames.shape == (12, 3, 32, 32) and frames.dtype == torch.uint8
    crop = torch.nn.functional.interpolate(torch.cat(list(short_clip)), size=(32, 32), mode="bilinear",
                                           align_corners=False, antialias=True)
    assert (frames.float() / 255 - crop).abs().max() < 1 / 255 + 1e-6


def test_draw_keypoints_puts_each_point_where_its_value_says():
    from facesynth.notebook import draw_keypoints

    image = np.zeros((64, 64, 3), np.uint8)
    kp = torch.tensor([[-0.5, -0.5], [0.5, 0.25]])
    out = draw_keypoints(image, kp, size=256, radius=4)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    for x, y in ((64, 64), (192, 160)):                        # (value + 1) / 2 * 256
        assert out[y - 1:y + 2, x - 1:x + 2].max() > 150
    assert out[20:40, 200:240].max() == 0                      # nothing drawn elsewhere
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        draw_keypoints(image, np.zeros((3, 3)))


def test_comparison_table_puts_each_result_in_its_own_column():
    from facesynth.evaluate.report import format_comparison
    from facesynth.notebook.evaluation import comparison_html

    results = {"model": {"l1": 0.03, "akd": 1.5, "protocol": "self", "definitions": {"l1": "mean |a-b|"}},
               "copy source": {"l1": 0.07, "akd": 6.25, "protocol": "self"}}
    text = format_comparison(results, ["l1", "akd", "protocol", "missing"], title="T")
    lines = text.splitlines()
    assert lines[0] == "T" and lines[1].split() == ["model", "copy", "source"]
    assert lines[2].split() == ["l1", "0.0300", "0.0700"] and lines[3].split() == ["akd", "1.5000", "6.2500"]
    assert len(lines) == 4                                     # strings and absent keys are not rows
    page = comparison_html(results, ["l1", "akd"], "T")
    assert page.count("<tr>") == 3 and "<th>copy source</th>" in page and "mean |a-b|" in page


def test_lipsync_preview_shows_the_face_box_and_the_mel_window_of_each_frame(samples, tmp_path):
    from facesynth.lipsync import plan_lipsync, synthetic_speech
    from facesynth.media import read_image, write_wav
    from facesynth.notebook import lipsync_preview

    speech = write_wav(tmp_path / "speech.wav", synthetic_speech(1.0), 16000)
    plan = plan_lipsync(samples.astronaut, speech, fps=25, box=(200, 400, 150, 350))
    fig = lipsync_preview(plan, n=3, title="inputs", path=tmp_path / "inputs.png")
    assert (tmp_path / "inputs.png").stat().st_size > 10_000
    faces, mels = fig.axes[:3], fig.axes[3:]
    shown = faces[0].get_images()[0].get_array()
    portrait = read_image(samples.astronaut)
    assert shown.shape == portrait.shape
    assert np.array_equal(shown[:150], portrait[:150])                       # above the box: untouched
    assert np.abs(shown[320:390, 170:330].astype(int) - portrait[320:390, 170:330]).mean() > 20   # lower half shaded
    assert all(ax.get_images()[0].get_array().shape == (80, 16) for ax in mels)


@pytest.mark.slow
def test_a_lower_dlib_threshold_finds_more_faces_and_says_so_in_the_report(samples):
    import cv2

    from facesynth.evaluate.frames import LandmarkTracker
    from facesynth.evaluate.identity import FaceEmbedder
    from facesynth.evaluate.report import provenance
    from facesynth.extract.backends.dlib_backend import DlibBackend
    from facesynth.media import read_image

    face = cv2.GaussianBlur(cv2.resize(read_image(samples.astronaut), (48, 48), interpolation=cv2.INTER_AREA),
                            (0, 0), 1.3)
    scores = [DlibBackend(threshold=t).detect([face])[0] for t in (0.0, -1.0)]
    assert not scores[0] and len(scores[1]) == 1 and scores[1][0].score < 0     # found only when weaker is accepted
    with pytest.raises(ConfigError, match="HOG"):
        DlibBackend(model="cnn", threshold=-1.0)
    assert "detector_threshold" not in provenance(FaceEmbedder("dlib"))
    assert provenance(FaceEmbedder(LandmarkTracker("dlib", threshold=-1.0)))["detector_threshold"] == -1.0


def test_still_as_video_warps_one_image_into_different_frames_near_it():
    from facesynth.reenact import still_as_video

    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    image = torch.stack([x, y, x * y])                            # smooth: a small warp changes it a little
    video = still_as_video(image, frames=6, seed=1)
    assert video.shape == (6, 3, 32, 32) and 0 <= video.min() and video.max() <= 1
    change = (video - image).abs().mean(dim=(1, 2, 3))
    assert (change > 1e-3).all() and (change < 0.1).all()       # moved, but still the same picture
    assert (video[0] - video[1]).abs().mean() > 1e-3             # the frames differ from each other
    assert torch.equal(video, still_as_video(image[None], frames=6, seed=1))   # seeded
    with pytest.raises(ValueError, match="at least 2"):
        still_as_video(image, frames=1)

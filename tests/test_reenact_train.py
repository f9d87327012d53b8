"""FOMMTrainer: the official self-supervised FOMM objective on the sample talking head, with the small config."""
from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from facesynth.errors import CheckpointError, ConfigError, MediaError
from facesynth.reenact import load_fomm
from facesynth.reenact.config import FOMMConfig
from facesynth.reenact.evaluate import resize_frames
from facesynth.reenact.train import (ColorJitter, FOMMTrainConfig, FOMMTrainer, LossWeights, MissingVGGWarning, RandomTPS,
                                     TransformParams, VGG19Features)
from facesynth.training import read_log

DATA = Path(__file__).parent / "data" / "fomm"
SMALL = DATA / "small.yaml"


def make_trainer(workdir, video, **overrides) -> FOMMTrainer:
    settings = dict(frame_size=128, batch_size=2, checkpoint_every=10, seed=0)
    settings.update(overrides)
    with pytest.warns(MissingVGGWarning):      # tests run with an empty TORCH_HOME
        return FOMMTrainer(SMALL, [video], workdir, device="cpu", **settings)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> torch.Tensor:
    """Eight frames of the sample talking head (one clip, so the model can fit it quickly)."""
    from facesynth.media import iter_frames, to_tensor
    from facesynth.samples import ensure_samples

    video = ensure_samples(tmp_path_factory.mktemp("samples")).talking_head
    return to_tensor([f for i, f in iter_frames(video) if i % 15 == 0])


def test_without_vgg_weights_a_warning_is_given_and_the_l1_pyramid_trains(tmp_path, samples):
    trainer = make_trainer(tmp_path / "run", samples.talking_head)
    assert trainer.vgg is None
    trainer.train(2, progress=False)
    log = read_log(tmp_path / "run")
    assert [r["iteration"] for r in log] == [1, 2]
    assert log[0]["event"] == "no_vgg19" and "L1 pyramid" in log[0]["message"]
    assert "loss_l1_pyramid" in log[0] and "loss_perceptual" not in log[0]
    assert all(np.isfinite(r["loss_generator_total"]) for r in log)


@pytest.mark.slow
def test_loss_goes_down_on_a_single_clip(tmp_path, clip):
    trainer = make_trainer(tmp_path / "run", clip, batch_size=4, checkpoint_every=1000)
    trainer.train(20, progress=False)
    total = [r["loss_generator_total"] for r in read_log(tmp_path / "run")]
    assert len(total) == 20 and np.isfinite(total).all()
    first, last = np.mean(total[:5]), np.mean(total[-5:])
    assert last < 0.8 * first, f"first five {first:.3f}, last five {last:.3f}"


@pytest.mark.slow
def test_resume_continues_at_the_saved_iteration(tmp_path, clip):
    make_trainer(tmp_path / "run", clip, checkpoint_every=3).train(4, progress=False)
    # iteration 4 is the target, so it is checkpointed too; a new trainer on the workdir resumes there
    resumed = make_trainer(tmp_path / "run", clip, checkpoint_every=3)
    assert resumed.iteration == 4
    resumed.train(6, progress=False)
    assert [r["iteration"] for r in read_log(tmp_path / "run")] == [1, 2, 3, 4, 5, 6]

    straight = make_trainer(tmp_path / "straight", clip, checkpoint_every=3)
    straight.train(6, progress=False)
    for a, b in zip(resumed.generator.state_dict().values(), straight.generator.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_official_checkpoint_loads_strictly_with_load_fomm(tmp_path, clip):
    weights = dataclasses.replace(LossWeights(), generator_gan=1.0)     # vox-adv: the discriminator trains too
    trainer = make_trainer(tmp_path / "run", clip, loss_weights=weights)
    trainer.train(2, progress=False)
    assert {"loss_gen_gan", "loss_feature_matching", "loss_disc_gan"} <= set(read_log(tmp_path / "run")[-1])
    path = trainer.save_official(tmp_path / "00000000-checkpoint.pth.tar")
    data = torch.load(path, weights_only=True)
    assert set(data) == {"generator", "kp_detector", "discriminator", "optimizer_generator",
                         "optimizer_kp_detector", "optimizer_discriminator", "epoch"}
    assert data["epoch"] == 0
    assert all("lr_mult" not in g for g in data["optimizer_generator"]["param_groups"])
    model = load_fomm(path, config=SMALL, device="cpu", discriminator=True)
    frames = resize_frames(clip[:2], 128)
    trainer.kp_detector.eval()
    ours = trainer.kp_detector(frames)           # with autograd: the official upsample-then-conv order
    # the loaded weights are the trained ones: equal up to the phase conv's summation order (inference)
    torch.testing.assert_close(model.keypoints(frames)["value"], ours["value"].detach(), rtol=0, atol=1e-5)


def test_fine_tuning_starts_from_an_official_checkpoint(tmp_path, clip):
    official = torch.load(DATA / "small-cpk.pt", weights_only=True)
    trainer = make_trainer(tmp_path / "run", clip, checkpoint=DATA / "small-cpk.pt")
    for name in ("generator", "kp_detector", "discriminator"):
        for key, value in getattr(trainer, name).state_dict().items():
            torch.testing.assert_close(value, official[name][key], rtol=0, atol=0)
    trainer.train(1, progress=False)
    assert trainer.iteration == 1


@pytest.mark.slow
def test_perceptual_loss_uses_the_vgg_features_when_present(tmp_path, clip, monkeypatch):
    from torchvision.models import vgg19

    torch.manual_seed(0)
    monkeypatch.setattr("facesynth.reenact.train.load_vgg19", lambda: VGG19Features(vgg19(weights=None).features))
    trainer = FOMMTrainer(SMALL, [clip], tmp_path / "run", device="cpu", frame_size=128, batch_size=2,
                          scales=(1, 0.5))
    trainer.train(1, progress=False)
    record = read_log(tmp_path / "run")[0]
    assert "loss_perceptual" in record and "event" not in record and np.isfinite(record["loss_perceptual"])


def test_random_tps_jacobian_equals_finite_differences():
    g = torch.Generator().manual_seed(0)
    tps = RandomTPS(2, TransformParams(sigma_affine=0.1, sigma_tps=0.05), g)
    z = (torch.rand(2, 5, 2, dtype=torch.float64, generator=g) * 1.6 - 0.8).requires_grad_(True)
    tps.theta, tps.control_params = tps.theta.double(), tps.control_params.double()
    jacobian = tps.jacobian(z).detach()
    eps = 1e-6
    for axis in range(2):
        step = torch.zeros_like(z)
        step[..., axis] = eps
        numeric = (tps.warp_coordinates(z + step) - tps.warp_coordinates(z - step)).detach() / (2 * eps)
        torch.testing.assert_close(jacobian[..., :, axis], numeric, rtol=0, atol=1e-6)


def test_identity_transform_keeps_the_frame():
    tps = RandomTPS(1, TransformParams(sigma_affine=0.0, sigma_tps=0.0), torch.Generator().manual_seed(0))
    frame = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(tps.transform_frame(frame, align_corners=True), frame, rtol=0, atol=1e-5)


def test_train_config_reads_the_official_yaml_values(tmp_path):
    import yaml

    (tmp_path / "adv.yaml").write_text(yaml.safe_dump({
        "dataset_params": {"frame_shape": [256, 256, 3],
                           "augmentation_params": {"flip_param": {"horizontal_flip": True, "time_flip": False},
                                                   "jitter_param": {"brightness": 0.2, "hue": 0.05}}},
        "train_params": {"batch_size": 36, "scales": [1, 0.5], "epoch_milestones": [40],
                         "transform_params": {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5},
                         "loss_weights": {"generator_gan": 1, "discriminator_gan": 1,
                                          "feature_matching": [10, 10, 10, 10], "perceptual": [10, 10, 10, 10, 10],
                                          "equivariance_value": 10, "equivariance_jacobian": 10}}}))
    cfg = FOMMTrainConfig.from_yaml(tmp_path / "adv.yaml", batch_size=8)
    assert (cfg.batch_size, cfg.scales, cfg.frame_size, cfg.time_flip) == (8, (1, 0.5), 256, False)
    assert cfg.epoch_milestones == (40,) and cfg.jitter == ColorJitter(brightness=0.2, hue=0.05)
    assert cfg.loss_weights.generator_gan == 1 and cfg.loss_weights.feature_matching == (10, 10, 10, 10)


def test_learning_rates_drop_tenfold_at_the_official_epoch_milestones(tmp_path, clip):
    # one clip, num_repeats 4, batch 2: an official epoch is 2 iterations; milestones after epochs 1 and 2
    trainer = make_trainer(tmp_path / "run", clip, num_repeats=4, epoch_milestones=(1, 2), checkpoint_every=100)
    assert trainer.iterations_per_epoch == 2
    trainer.train(6, progress=False)
    lrs = [r["lr"] for r in read_log(tmp_path / "run")]
    np.testing.assert_allclose(lrs, [2e-4, 2e-4, 2e-5, 2e-5, 2e-6, 2e-6], rtol=1e-9)
    assert trainer.optimizers["kp_detector"].param_groups[0]["lr"] == pytest.approx(2e-6)


def test_colour_jitter_changes_both_frames_of_a_pair_alike():
    frame = (torch.rand(1, 3, 32, 32) * 255).to(torch.uint8)
    pair = frame.repeat(2, 1, 1, 1)
    jitter = ColorJitter(0.1, 0.1, 0.1, 0.1)
    out = jitter(pair, torch.Generator().manual_seed(3))
    assert out.dtype == torch.uint8 and out.shape == pair.shape
    assert torch.equal(out[0], out[1])                       # one draw per clip
    assert (out.float() - pair.float()).abs().mean() > 0.5   # and it did change the colours
    again = jitter(pair, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)


def test_brightness_jitter_stays_within_its_range():
    frames = torch.full((2, 3, 8, 8), 0.5)
    factors = [float(ColorJitter(brightness=0.1)(frames, torch.Generator().manual_seed(s)).mean() / 0.5)
               for s in range(40)]
    assert 0.9 <= min(factors) < 0.95 and 1.05 < max(factors) <= 1.1


# --- config.json, reopening, failed starts ---------------------------------------------------------------------

def test_config_json_records_model_training_values_and_videos_and_a_bare_reopen_resumes(tmp_path, samples):
    trainer = make_trainer(tmp_path / "run", samples.talking_head, checkpoint_every=2, num_repeats=6)
    trainer.train(2, progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert set(saved) == {"model", "train", "videos", "checkpoint"}
    assert saved["model"]["name"] == str(SMALL) and saved["model"]["kp_detector_params"]["block_expansion"] == 4
    assert FOMMConfig.from_dict(saved["model"]) == dataclasses.replace(FOMMConfig.from_yaml(SMALL), name="")
    assert (saved["train"]["frame_size"], saved["train"]["batch_size"], saved["train"]["num_repeats"]) == (128, 2, 6)
    assert saved["train"]["scales"] == [1, 0.5, 0.25, 0.125] and saved["train"]["jitter"]["hue"] == 0.1
    assert saved["videos"] == [str(samples.talking_head.resolve())] and saved["checkpoint"] is None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingVGGWarning)
        reopened = FOMMTrainer(workdir=tmp_path / "run", device="cpu")       # no config, no videos, no settings
    assert reopened.iteration == 2 and reopened.config == trainer.config
    assert reopened.model_config.name == str(SMALL) and reopened.iterations_per_epoch == 3
    for a, b in zip(reopened.generator.state_dict().values(), trainer.generator.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    reopened.train(3, progress=False)
    assert [r["iteration"] for r in read_log(tmp_path / "run") if "loss_generator_total" in r] == [1, 2, 3]


def test_reopening_a_workdir_trained_on_tensors_asks_for_the_videos(tmp_path, clip):
    make_trainer(tmp_path / "run", clip)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["videos"] == [{"tensor": list(clip.shape)}]
    with pytest.raises(ConfigError, match=r"held in memory.*--videos"):
        FOMMTrainer(workdir=tmp_path / "run", device="cpu")
    assert (tmp_path / "run" / "config.json").is_file()          # an existing workdir is left alone


def test_a_reopened_workdir_refuses_another_network(tmp_path, clip):
    make_trainer(tmp_path / "run", clip)
    with pytest.raises(ConfigError, match="another configuration"):
        FOMMTrainer("quick-64", [clip], tmp_path / "run", device="cpu", frame_size=64, batch_size=2)


def test_a_failed_start_fails_before_writing_config_json(tmp_path, clip):
    with pytest.raises(MediaError, match="missing.mp4: no such video or image file"):
        FOMMTrainer(SMALL, [tmp_path / "missing.mp4"], tmp_path / "a", device="cpu", frame_size=128, batch_size=2)
    with pytest.raises(CheckpointError):
        FOMMTrainer(SMALL, [clip], tmp_path / "b", checkpoint={"generator": {}, "kp_detector": {}}, device="cpu",
                    frame_size=128, batch_size=2)
    with pytest.raises(ConfigError, match="batch_size must be at least 2"):
        FOMMTrainer(SMALL, [clip], tmp_path / "c", device="cpu", batch_size=1)
    assert [list((tmp_path / d).iterdir()) for d in "abc"] == [[], [], []]    # nothing a reopen would take for a model


@pytest.mark.parametrize("text, line", [("model_params:\n  common_params:\n\tnum_kp: 10\n", 3),   # a tab: ScannerError
                                        ("model_params: {common_params: [1, 2\n", 2)])          # unclosed: ParserError
def test_a_broken_yaml_is_a_config_error_naming_the_file_and_line(tmp_path, clip, text, line):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    for read in (FOMMConfig.from_yaml, FOMMTrainConfig.from_yaml, lambda p: FOMMTrainer(p, [clip], tmp_path / "wd")):
        with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}, line {line}, column \d+: not valid YAML"):
            read(path)


# --- the NaN guard -----------------------------------------------------------------------------------------------

def test_a_nan_batch_at_iteration_1_is_skipped_and_the_weights_stay_finite(tmp_path, clip):
    trainer = make_trainer(tmp_path / "run", clip, checkpoint_every=100)
    initial = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    draw, steps, after_first = trainer.data.batch, trainer.train_step, []

    def poisoned(*args, **kwargs):        # the very first pair is NaN: no checkpoint exists to go back to
        source, driving = draw(*args, **kwargs)
        return (torch.full_like(source, math.nan) if not after_first else source), driving

    def watched(iteration):
        losses = steps(iteration)
        if not after_first:
            after_first.append({k: v.clone() for k, v in trainer.generator.named_parameters()})
        return losses

    trainer.data.batch, trainer.train_step = poisoned, watched
    trainer.train(2, progress=False)
    for name, value in after_first[0].items():          # the skipped step did not move a single weight
        assert torch.equal(value, initial[name]), name
    for name in ("generator", "kp_detector", "discriminator"):
        for key, value in getattr(trainer, name).state_dict().items():
            if value.is_floating_point():
                assert torch.isfinite(value).all(), f"{name}.{key}"     # BatchNorm statistics too
    log = read_log(tmp_path / "run")
    skips = [r for r in log if r.get("event") == "nan_skip"]
    assert len(skips) == 1 and skips[0]["iteration"] == 0
    assert {"loss", "generator gradients", "kp_detector gradients", "loss_l1_pyramid"} <= set(skips[0]["bad"])
    losses = [r for r in log if "loss_generator_total" in r]
    assert [r["iteration"] for r in losses] == [1, 2] and all(math.isfinite(r["loss_generator_total"]) for r in losses)
    assert trainer.schedule.scale == 1.0 and trainer.nan_restores == 0      # a skip is not a restore


def test_a_driving_clip_is_recorded_and_reopened_as_the_same_crop(samples):
    from facesynth.reenact.prepare import DrivingClip
    from facesynth.reenact.train import _describe_video, _reopen_videos

    clip = DrivingClip(samples.talking_head, (10, 4, 138, 132), (176, 144), 64, 29.97, False, 120)
    recorded = json.loads(json.dumps(_describe_video(clip)))
    assert recorded["driving_clip"]["box"] == [10, 4, 138, 132] and recorded["driving_clip"]["size"] == 64
    assert _reopen_videos([recorded], Path("wd")) == [dataclasses.replace(clip, path=samples.talking_head.resolve())]

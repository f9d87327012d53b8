"""FOMM modules and checkpoint loading against the official implementation.

Reference data in tests/data/fomm/ (see its README): a reduced vox-256 config with random weights in the
official checkpoint layout, inputs, and the official code's key points and predictions for them.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fomm_reference import DATA, as_frames

from facesynth.errors import CheckpointError, ConfigError
from facesynth.reenact import FOMMConfig, build_discriminator, build_generator, build_kp_detector, load_fomm
from facesynth.reenact.model import AntiAliasDownsample

SMALL_CONFIG = DATA / "small.yaml"
SMALL_CHECKPOINT = DATA / "small-cpk.pt"


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(DATA / "reference.pt", weights_only=True)


@pytest.fixture(scope="module")
def small_model():
    return load_fomm(SMALL_CHECKPOINT, config=SMALL_CONFIG, device="cpu")


@pytest.fixture(scope="module")
def vox_checkpoint(tmp_path_factory) -> Path:
    """A training-style checkpoint with every key and shape of the vox-256 model (random weights)."""
    cfg = FOMMConfig.named("vox-256")
    torch.manual_seed(0)
    models = {"generator": build_generator(cfg), "discriminator": build_discriminator(cfg),
              "kp_detector": build_kp_detector(cfg)}
    cpk = {name: m.state_dict() for name, m in models.items()}
    for name, m in models.items():
        opt = torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999))
        for group in opt.param_groups:
            group["initial_lr"] = 2e-4          # what the official MultiStepLR adds
        cpk[f"optimizer_{name}"] = opt.state_dict()
    cpk["epoch"] = 99
    path = tmp_path_factory.mktemp("vox") / "00000099-checkpoint.pth.tar"
    torch.save(cpk, path)
    return path


# --- config -------------------------------------------------------------------------------------------------

def test_vox_256_config_has_the_official_values():
    cfg = FOMMConfig.named("vox-256")
    assert (cfg.common_params.num_kp, cfg.common_params.num_channels, cfg.common_params.estimate_jacobian) == \
        (10, 3, True)
    kp = cfg.kp_detector_params
    assert (kp.temperature, kp.block_expansion, kp.max_features, kp.scale_factor, kp.num_blocks) == \
        (0.1, 32, 1024, 0.25, 5)
    g = cfg.generator_params
    assert (g.block_expansion, g.max_features, g.num_down_blocks, g.num_bottleneck_blocks,
            g.estimate_occlusion_map) == (64, 512, 2, 6, True)
    d = g.dense_motion_params
    assert (d.block_expansion, d.max_features, d.num_blocks, d.scale_factor) == (64, 1024, 5, 0.25)
    assert cfg.discriminator_params.sn and not cfg.discriminator_params.use_kp
    assert cfg.align_corners is False


def test_vox_adv_differs_from_vox_only_in_the_discriminator():
    vox, adv = FOMMConfig.named("vox-256"), FOMMConfig.named("vox-adv-256")
    assert adv.common_params == vox.common_params
    assert adv.kp_detector_params == vox.kp_detector_params
    assert adv.generator_params == vox.generator_params
    assert adv.discriminator_params.use_kp and not adv.discriminator_params.sn


def test_vox_256_models_have_the_official_parameter_counts():
    # counts of the official modules built from vox-256.yaml (refs/fomm_notes.md, section 1)
    cfg = FOMMConfig.named("vox-256")
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(build_kp_detector(cfg)) == 14_215_368
    assert count(build_generator(cfg)) == 45_575_391
    assert count(build_discriminator(cfg)) == 2_758_849
    assert count(build_discriminator(FOMMConfig.named("vox-adv-256"))) == 2_769_089
    assert len(build_kp_detector(cfg).state_dict()) == 75
    assert len(build_generator(cfg).state_dict()) == 196


def test_config_reads_an_official_style_yaml():
    cfg = FOMMConfig.from_yaml(SMALL_CONFIG)
    assert cfg.kp_detector_params.block_expansion == 4
    assert cfg.generator_params.dense_motion_params.num_blocks == 5
    assert FOMMConfig.resolve(SMALL_CONFIG, align_corners=True).align_corners is True


def test_unknown_config_name_or_key_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="vox-256"):
        FOMMConfig.resolve("vox-512")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_params:\n  common_params:\n    num_keypoints: 10\n")
    with pytest.raises(ConfigError, match="num_keypoints"):
        FOMMConfig.from_yaml(bad)


# --- equality with the official implementation --------------------------------------------------------------

def test_keypoints_and_jacobians_equal_the_official_ones(small_model, reference):
    for frames, expected in ((reference["source"], reference["kp_source"]),
                             (reference["driving"], reference["kp_driving"])):
        kp = small_model.keypoints(as_frames(frames))
        assert kp["value"].shape == expected["value"].shape
        assert kp["jacobian"].shape == (*expected["value"].shape, 2)
        assert (kp["value"] - expected["value"]).abs().max() <= 1e-5
        assert (kp["jacobian"] - expected["jacobian"]).abs().max() <= 1e-5


@pytest.mark.parametrize("motion", ["absolute", "relative"])
def test_generator_prediction_equals_the_official_one(small_model, reference, motion):
    kp_driving = reference["kp_driving"] if motion == "absolute" else reference["kp_relative"]
    out = small_model.generate(as_frames(reference["source"]), reference["kp_source"], kp_driving)
    expected = reference[f"prediction_{motion}"]
    assert out["prediction"].shape == expected.shape
    err = (out["prediction"] - expected).abs()
    assert err.max() <= 5e-4 and err.mean() <= 2e-5
    assert {"mask", "sparse_deformed", "occlusion_map", "deformed"} <= set(out) and "deformation" not in out


def test_discriminator_equals_the_official_one(reference):
    # scales 1 and 0.5, spectral norm and key point heatmaps; the pyramid level 0.5 is in the reference
    m = load_fomm(SMALL_CHECKPOINT, config=SMALL_CONFIG, device="cpu", discriminator=True)
    pyramid = {"prediction_1": reference["prediction_absolute"],
               "prediction_0.5": AntiAliasDownsample(3, 0.5)(reference["prediction_absolute"])}
    with torch.no_grad():
        out = m.discriminator(pyramid, reference["kp_driving"])
    for scale in ("1", "0.5"):
        expected = reference[f"discriminator_prediction_map_{scale}"]
        assert (out[f"prediction_map_{scale}"] - expected).abs().max() <= 1e-5
        assert (out[f"feature_maps_{scale}"][-1] - reference[f"discriminator_last_features_{scale}"]).abs().max() <= 1e-5


def test_reference_predictions_depend_on_the_motion(reference):
    # guards the fixture: the two motions must give visibly different images, or equality would prove little
    diff = (reference["prediction_absolute"] - reference["prediction_relative"]).abs()
    assert diff.max() > 1e-2
    assert reference["prediction_absolute"].std() > 0.05


def test_align_corners_true_makes_the_identity_motion_an_identity_warp(reference):
    # with equal source and driving key points every sparse motion is the identity grid; only the
    # align_corners=True convention (the released weights' training-time torch) samples it back exactly
    frames = as_frames(reference["source"])
    for align_corners, tol in ((True, 1e-5), (False, None)):
        m = load_fomm(SMALL_CHECKPOINT, config=SMALL_CONFIG, device="cpu", align_corners=align_corners)
        kp = m.keypoints(frames)
        small = m.generator.dense_motion_network.down(frames)        # the motion network's 32x32 source
        err = (m.generate(frames, kp, kp)["sparse_deformed"] - small.unsqueeze(1)).abs().max()
        assert (err <= tol) if tol else (err > 1e-2)


# --- checkpoint loading -------------------------------------------------------------------------------------

def test_full_vox_256_training_checkpoint_loads_strictly(vox_checkpoint):
    m = load_fomm(vox_checkpoint, config="vox-256", device="cpu")
    saved = torch.load(vox_checkpoint, weights_only=True)
    for name in ("kp_detector", "generator"):
        state = getattr(m, name).state_dict()
        assert state.keys() == saved[name].keys()
        assert all(torch.equal(state[k], saved[name][k]) for k in state)
    assert m.epoch == 99
    assert not m.generator.training and not m.kp_detector.training
    assert m.discriminator is None           # the training-only entry is ignored unless asked for


def test_full_vox_256_checkpoint_loads_its_discriminator_when_asked(vox_checkpoint):
    m = load_fomm(vox_checkpoint, config="vox-256", device="cpu", discriminator=True)
    assert "discs.1.down_blocks.0.conv.weight_orig" in m.discriminator.state_dict()


def test_registry_name_resolves_from_the_weights_folder(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "vox-cpk.pth.tar").write_bytes(SMALL_CHECKPOINT.read_bytes())
    monkeypatch.setenv("FACESYNTH_WEIGHTS", str(folder))
    assert load_fomm("fomm-vox", config=SMALL_CONFIG).epoch == 3     # device "auto"


def _damaged(mutate) -> dict:
    cpk = torch.load(SMALL_CHECKPOINT, weights_only=True)
    mutate(cpk)
    return cpk


def test_checkpoint_missing_a_key_names_it(tmp_path):
    path = tmp_path / "missing.pth.tar"
    torch.save(_damaged(lambda c: c["generator"].pop("dense_motion_network.occlusion.weight")), path)
    with pytest.raises(CheckpointError, match=r"1 missing: dense_motion_network\.occlusion\.weight"):
        load_fomm(path, config=SMALL_CONFIG, device="cpu")


def test_checkpoint_with_a_changed_shape_names_the_key(tmp_path):
    path = tmp_path / "shape.pth.tar"
    torch.save(_damaged(lambda c: c["kp_detector"].__setitem__("kp.weight", torch.zeros(10, 20, 7, 7))), path)
    with pytest.raises(CheckpointError, match=r"mis-shaped: kp\.weight \(10, 20, 7, 7\)"):
        load_fomm(path, config=SMALL_CONFIG, device="cpu")


def test_checkpoint_with_an_unexpected_key_names_it():
    cpk = _damaged(lambda c: c["kp_detector"].__setitem__("extra.weight", torch.zeros(1)))
    with pytest.raises(CheckpointError, match=r"unexpected: extra\.weight"):
        load_fomm(cpk, config=SMALL_CONFIG, device="cpu")


def test_vox_checkpoint_with_the_wrong_config_is_a_checkpoint_error(vox_checkpoint):
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_fomm(vox_checkpoint, config=SMALL_CONFIG, device="cpu")


def test_damaged_discriminator_entry_is_named_when_the_discriminator_is_asked_for():
    cpk = _damaged(lambda c: c["discriminator"].pop("discs.0-5.conv.weight_u"))
    assert load_fomm(cpk, config=SMALL_CONFIG, device="cpu").discriminator is None
    with pytest.raises(CheckpointError, match=r"\[discriminator\].*1 missing: discs\.0-5\.conv\.weight_u"):
        load_fomm(cpk, config=SMALL_CONFIG, device="cpu", discriminator=True)


def test_checkpoint_without_a_generator_entry_is_refused():
    with pytest.raises(CheckpointError, match="generator"):
        load_fomm(_damaged(lambda c: c.pop("generator")), config=SMALL_CONFIG, device="cpu")


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_unreadable_checkpoint_file_raises_checkpoint_error(tmp_path, damage):
    path = tmp_path / "bad.pth.tar"
    data = SMALL_CHECKPOINT.read_bytes()
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes() if damage == "random" else data[:len(data) // 2])
    with pytest.raises(CheckpointError):
        load_fomm(path, config=SMALL_CONFIG, device="cpu")


def test_generate_broadcasts_one_source_over_the_driving_frames(small_model, reference):
    source = as_frames(reference["source"])
    kp_d = reference["kp_driving"]
    once = small_model.generate(source, reference["kp_source"], kp_d)["prediction"]
    repeated = small_model.generate(source.expand(2, -1, -1, -1), {k: v.expand(2, *v.shape[1:])
                                    for k, v in reference["kp_source"].items()}, kp_d)["prediction"]
    assert once.shape == (2, 3, 128, 128)
    assert torch.allclose(once, repeated, atol=1e-6)


def test_keypoints_reject_frames_of_the_wrong_shape(small_model):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        small_model.keypoints(torch.zeros(128, 128, 3))


def test_the_small_checkpoint_is_in_the_legacy_pre_zip_format():
    # the equality tests above then also prove that files written by old torch (like the released ones) load
    import zipfile

    assert not zipfile.is_zipfile(SMALL_CHECKPOINT)


@pytest.mark.parametrize("shape", [(2, 5, 8, 8), (1, 3, 5, 7), (1, 6, 2, 2), (2, 3, 12, 9)])
def test_upsample_conv3x3_equals_nearest_upsampling_then_the_conv(shape):
    """Maps of 64 pixels or less take each phase by its own conv, larger ones one conv of the four phases."""
    from facesynth.reenact.model import upsample_conv3x3

    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    weight, bias = torch.randn(4, shape[1], 3, 3, generator=g), torch.randn(4, generator=g)
    expected = torch.nn.functional.conv2d(torch.nn.functional.interpolate(x, scale_factor=2), weight, bias, padding=1)
    out = upsample_conv3x3(x, weight, bias)
    assert out.shape == expected.shape == (shape[0], 4, 2 * shape[2], 2 * shape[3])
    assert (out - expected).abs().max() <= 1e-5 and out.is_contiguous()
    # channels-last in (the GPU layout), channels-last out: the next convolution needs no transpose
    last = upsample_conv3x3(x.contiguous(memory_format=torch.channels_last), weight, bias)
    assert last.is_contiguous(memory_format=torch.channels_last) and not last.is_contiguous()
    assert (last - expected).abs().max() <= 1e-5


def test_antialias_downsample_computes_only_the_kept_positions_without_autograd():
    from facesynth.reenact.model import AntiAliasDownsample

    down = AntiAliasDownsample(3, 0.25)
    x = torch.rand(2, 3, 70, 61)
    official = down(x)                                       # autograd on: blur everything, then subsample
    assert official.shape == (2, 3, 18, 16)
    with torch.no_grad():
        torch.testing.assert_close(down(x), official, rtol=0, atol=1e-6)
        one = down(x[:1].expand(4, -1, -1, -1))              # an expanded frame is blurred once
    assert one.shape == (4, 3, 18, 16) and one.stride(0) == 0
    torch.testing.assert_close(one[3], official[0], rtol=0, atol=1e-6)


def test_inference_uses_the_phase_conv_and_training_the_official_two_steps(small_model, reference):
    from facesynth.reenact.model import set_phase_conv

    source = as_frames(reference["source"])
    fast = small_model.generate(source, reference["kp_source"], reference["kp_driving"])["prediction"]
    try:
        set_phase_conv(small_model.generator, False)
        official = small_model.generate(source, reference["kp_source"], reference["kp_driving"])["prediction"]
    finally:
        set_phase_conv(small_model.generator, True)
    diff = (fast - official).abs().max()
    assert 0 < diff <= 1e-5                 # the same sums in another order
    up = next(m for m in small_model.generator.modules() if type(m).__name__ == "UpBlock")
    x = torch.randn(2, up.conv.in_channels, 4, 4, requires_grad=True)
    up(x).sum().backward()                  # with autograd: interpolate + conv, as the official
    assert x.grad is not None and x.grad.shape == x.shape


def test_key_point_detector_runs_the_official_op_sequence_unless_asked():
    """Its rounding moves every pixel of an animation, so its inference paths are off by default (KPDetector)."""
    from facesynth.reenact.model import set_fast_inference

    cfg = FOMMConfig.named("vox-256")
    torch.manual_seed(0)
    kp, gen = build_kp_detector(cfg).eval(), build_generator(cfg)
    flags = [m.fast for m in kp.modules() if hasattr(type(m), "fast") and m is not kp.down]
    assert len(flags) > 10 and not any(flags)
    assert kp.down.fast                                          # only the kept positions: the same sums
    assert all(m.fast for m in gen.modules() if hasattr(type(m), "fast"))
    with torch.no_grad():
        for m in kp.modules():
            if isinstance(m, torch.nn.BatchNorm2d):             # statistics that folding would change
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
    frames = torch.rand(2, 3, 256, 256)
    official = kp(frames)                                        # autograd on: the official op sequence
    with torch.inference_mode():
        default = kp(frames)
        set_fast_inference(kp, True)
        fast = kp(frames)
    for key in ("value", "jacobian"):
        assert torch.equal(default[key], official[key])
        torch.testing.assert_close(fast[key], official[key].detach(), rtol=0, atol=1e-4)
    assert not all(torch.equal(fast[k], official[k]) for k in ("value", "jacobian"))    # the switch does switch

"""Wav2Lip networks and checkpoint loading against the official implementation.

Reference data in tests/data/wav2lip/ (see its README): the official networks' outputs for real face crops and
mel windows, computed with weights that ``randomize_`` regenerates here bit for bit (checked by SHA-256).
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from facesynth.errors import CheckpointError, ConfigError, UnsafeCheckpointError
from facesynth.lipsync import (InferenceWav2Lip, QualityDiscriminator, SyncNet, Wav2Lip, face_batch, load_official,
                               load_quality_discriminator, load_syncnet, load_wav2lip, official_checkpoint,
                               randomize_)

DATA = Path(__file__).parent / "data" / "wav2lip"


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def ref() -> dict:
    return torch.load(DATA / "network.pt", weights_only=True)


@pytest.fixture(scope="module")
def wav2lip_file(tmp_path_factory, ref) -> Path:
    """The reference generator as the released files are thought to be: pre-zip, ``module.`` keys, Adam entry."""
    model = randomize_(Wav2Lip(), ref["wav2lip_seed"])
    copies = [p.detach().clone().requires_grad_() for p in list(model.parameters())[:2]]   # a real Adam state
    opt = torch.optim.Adam(copies, lr=1e-4)
    sum(c.square().sum() for c in copies).backward()
    opt.step()
    ckpt = official_checkpoint(model, prefix="module.", global_step=250_000, global_epoch=41,
                               optimizer=opt.state_dict())
    path = tmp_path_factory.mktemp("w2l") / "wav2lip_gan.pth"
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    return path


@pytest.fixture(scope="module")
def net(wav2lip_file) -> Wav2Lip:
    return load_wav2lip(wav2lip_file, device="cpu")


def reference_inputs(ref) -> tuple[torch.Tensor, torch.Tensor]:
    crops = ref["crops_bgr"].numpy()
    mel = np.load(DATA / "mel.npz")["mel"]
    windows = torch.from_numpy(np.stack([mel[:, s:s + 16] for s in ref["mel_starts"].tolist()])[:, None])
    return windows, face_batch(list(crops[:3]))


# --- layout ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, entries, params", [(Wav2Lip, 352, 36_298_035), (SyncNet, 217, 16_435_072),
                                                  (QualityDiscriminator, 28, 14_113_793)])
def test_networks_have_the_official_number_of_entries_and_parameters(cls, entries, params):
    model = cls()
    assert len(model.state_dict()) == entries
    assert sum(p.numel() for p in model.parameters()) == params


def test_official_key_names():
    keys = list(Wav2Lip().state_dict())
    assert keys[:5] == ["face_encoder_blocks.0.0.conv_block.0.weight", "face_encoder_blocks.0.0.conv_block.0.bias",
                        "face_encoder_blocks.0.0.conv_block.1.weight", "face_encoder_blocks.0.0.conv_block.1.bias",
                        "face_encoder_blocks.0.0.conv_block.1.running_mean"]
    assert "face_decoder_blocks.6.0.conv_block.0.weight" in keys       # a ConvTranspose2d: (160, 64, 3, 3)
    assert Wav2Lip().state_dict()["face_decoder_blocks.6.0.conv_block.0.weight"].shape == (160, 64, 3, 3)
    assert keys[-2:] == ["output_block.1.weight", "output_block.1.bias"]
    assert "audio_encoder.13.conv_block.0.weight" in SyncNet().state_dict()     # its extra 14th block
    assert list(QualityDiscriminator().state_dict())[-2:] == ["binary_pred.0.weight", "binary_pred.0.bias"]


@pytest.mark.parametrize("name, cls", [("wav2lip", Wav2Lip), ("syncnet", SyncNet), ("disc", QualityDiscriminator)])
def test_random_weights_are_reproduced_bit_for_bit(ref, name, cls):
    assert digest(randomize_(cls(), ref[f"{name}_seed"])) == ref[f"{name}_sha256"]


# --- equality with the official networks ------------------------------------------------------------------------

def test_wav2lip_equals_the_official_generator(net, ref):
    mel, faces = reference_inputs(ref)
    with torch.inference_mode():
        out = net(mel, faces)
    assert out.shape == (3, 3, 96, 96)
    assert (out - ref["wav2lip_out"]).abs().max().item() < 1e-4
    assert ref["wav2lip_out"].std().item() > 0.05           # the reference is not a flat image


def test_wav2lip_takes_the_official_5d_layout(net, ref):
    mel, faces = reference_inputs(ref)
    with torch.inference_mode():
        out = net(mel[:2][None], faces[:2].permute(1, 0, 2, 3)[None])   # (1,2,1,80,16), (1,6,2,96,96)
    assert out.shape == (1, 3, 2, 96, 96)
    assert (out - ref["wav2lip_out_5d"]).abs().max().item() < 1e-4


def test_fused_inference_network_equals_the_official_generator(net, ref):
    mel, faces = reference_inputs(ref)
    out = InferenceWav2Lip(net, device="cpu")(mel, faces)
    assert (out - ref["wav2lip_out"]).abs().max().item() < 1e-4
    assert net.face_encoder_blocks[0][0].conv_block[1].running_var.abs().sum() > 0   # the original is untouched


@pytest.mark.slow
def test_compiled_network_is_one_graph_compiled_once_with_the_official_numbers(net, ref):
    """``compile=True`` (torch.compile; CUDA graphs on a GPU, which a graph break would split): the network in one
    graph, a smaller last batch padded to the compiled size instead of compiling again, the official outputs.
    About 45 s on 2 cores."""
    from torch._dynamo.utils import counters

    mel, faces = reference_inputs(ref)
    torch._dynamo.reset()
    counters.clear()
    with pytest.warns(UserWarning, match="compile on a CPU"):
        fused = InferenceWav2Lip(net, device="cpu", compile=True)
    out = fused(mel, faces)
    tail = fused(mel[1:], faces[1:])
    assert counters["stats"]["unique_graphs"] == 1 and dict(counters["graph_break"]) == {}
    assert out.shape == (3, 3, 96, 96) and tail.shape == (2, 3, 96, 96)
    assert (out - ref["wav2lip_out"]).abs().max().item() < 1e-4
    assert (tail - ref["wav2lip_out"][1:]).abs().max().item() < 1e-4


def test_fp16_rounds_finer_than_bf16_and_an_overflow_falls_back_to_fp32(net, ref):
    """fp16 (for a GPU; on this CPU slow but rounded the same) against bf16, both from the official output (max
    2.0e-3 against 1.1e-2, mean 2.0e-4 against 1.5e-3); then
    weights scaled past fp16's range: a warning, and that batch again in fp32 (a CPU), equal to the fp32 network."""
    import copy

    mel, faces = reference_inputs(ref)
    official = ref["wav2lip_out"]
    with pytest.warns(UserWarning, match="fp16 on a CPU has no fast kernels"):
        fp16 = InferenceWav2Lip(net, device="cpu", precision="fp16")(mel, faces)
    bf16 = InferenceWav2Lip(net, device="cpu", precision="bf16")(mel, faces)
    d16, d_bf = (fp16 - official).abs(), (bf16 - official).abs()
    assert fp16.dtype == torch.float32 and fp16.shape == official.shape
    assert 0 < d16.max() <= 5e-3 and d16.max() * 4 <= d_bf.max() and d16.mean() * 4 <= d_bf.mean(), \
        f"fp16 max {d16.max():.3g} mean {d16.mean():.3g}; bf16 max {d_bf.max():.3g} mean {d_bf.mean():.3g}"

    big = copy.deepcopy(net)
    with torch.no_grad():
        big.face_decoder_blocks[3][0].conv_block[0].weight.mul_(1e6)
    with pytest.warns(UserWarning, match="no fast kernels"):
        fused = InferenceWav2Lip(big, device="cpu", precision="fp16")
    with pytest.warns(UserWarning, match="fp16 overflowed in Wav2Lip.*run in fp32"):
        out = fused(mel[:1], faces[:1])
    assert fused.precision == "fp32" and torch.isfinite(out).all()
    assert torch.equal(out, InferenceWav2Lip(big, device="cpu")(mel[:1], faces[:1]))
    with pytest.raises(ConfigError, match="'fp32', 'bf16', 'fp16'"):
        InferenceWav2Lip(net, device="cpu", precision="half")


def test_decoder_runs_its_large_stages_frame_by_frame_on_the_cpu(net, ref, monkeypatch):
    """Without autograd on a CPU the stages from the 24x24 skip on go one frame at a time (NNPACK per frame);
    the result equals the batched official op sequence, also when one still face is broadcast over the mels."""
    from facesynth import winograd
    from facesynth.lipsync.model import set_fast_inference

    mel, faces = reference_inputs(ref)
    fused = InferenceWav2Lip(net, device="cpu")
    calls = []
    real = winograd.map_frames
    monkeypatch.setattr(winograd, "map_frames", lambda fn, items: calls.append(items) or real(fn, items))
    out = fused(mel, faces)
    with torch.inference_mode():
        still = fused.net.decode(fused.net.audio_encoder(mel), fused.net.encode_faces(faces[:1]))
    by_frame = winograd.nnpack_available()
    frame_jobs = [list(c) for c in calls if isinstance(c, range)]       # decode's (the convolutions' are tensors)
    assert frame_jobs == ([[0, 1, 2]] * 2 if by_frame else [])            # one job per frame, in order
    set_fast_inference(fused.net, False)
    with torch.no_grad():
        official = fused.net(mel, faces)
        official_still = fused.net(mel, faces[:1].expand(3, -1, -1, -1))
    assert official.std() > 0.05
    assert (out - official).abs().max() < 1e-4 and (still - official_still).abs().max() < 1e-4
    assert not torch.equal(out, official) or not by_frame                  # NNPACK's rounding: another path ran


def test_syncnet_equals_the_official_expert(ref, tmp_path):
    path = tmp_path / "lipsync_expert.pth"
    torch.save(official_checkpoint(randomize_(SyncNet(), ref["syncnet_seed"]), prefix=""), path)
    model = load_syncnet(path, device="cpu")
    crops = ref["crops_bgr"].numpy()
    lower = crops[:, 48:] / 255.0
    faces = np.concatenate([lower[np.roll(np.arange(5), k)] for k in range(3)])
    faces = torch.from_numpy(faces.reshape(3, 5, 48, 96, 3).transpose(0, 1, 4, 2, 3).reshape(3, 15, 48, 96)).float()
    mel, _ = reference_inputs(ref)
    with torch.inference_mode():
        audio, face = model(mel, faces)
    assert (audio - ref["syncnet_audio_emb"]).abs().max().item() < 1e-4
    assert (face - ref["syncnet_face_emb"]).abs().max().item() < 1e-4
    assert torch.allclose(audio.norm(dim=1), torch.ones(3), atol=1e-5)


def test_quality_discriminator_equals_the_official_one(ref):
    model = load_quality_discriminator(official_checkpoint(randomize_(QualityDiscriminator(), ref["disc_seed"])),
                                       device="cpu")
    faces = torch.from_numpy(ref["crops_bgr"].numpy()[:3] / 255.0).float().permute(3, 0, 1, 2)[None]
    with torch.inference_mode():
        out = model(faces)
        loss = model.perceptual_loss(faces)
    assert out.shape == (3, 1)
    assert (out - ref["disc_out"]).abs().max().item() < 1e-4
    expected = -torch.log(ref["disc_out"]).mean()
    assert abs(loss.item() - expected.item()) < 1e-5


# --- loading -------------------------------------------------------------------------------------------------

def test_load_wav2lip_strips_module_prefixes_and_returns_eval_mode(net, ref):
    assert not net.training
    assert digest(net) == ref["wav2lip_sha256"]


def test_unprefixed_checkpoint_loads_too(ref):
    model = randomize_(QualityDiscriminator(), 5)
    loaded = load_official(official_checkpoint(model, prefix=""), "disc", device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_a_truncated_file_raises_checkpoint_error(wav2lip_file, tmp_path):
    cut = tmp_path / "cut.pth"
    with open(wav2lip_file, "rb") as f:
        cut.write_bytes(f.read(5_000_000))
    with pytest.raises(CheckpointError, match="truncated|damaged"):
        load_wav2lip(cut)


def test_a_foreign_checkpoint_raises_checkpoint_error_naming_what_is_missing(tmp_path):
    fomm = Path(__file__).parent / "data" / "fomm" / "small-cpk.pt"
    with pytest.raises(CheckpointError, match="no 'state_dict' entry"):
        load_wav2lip(fomm)


def test_the_syncnet_file_is_refused_as_a_generator_with_the_keys_named():
    ckpt = official_checkpoint(SyncNet())
    with pytest.raises(CheckpointError, match=r"missing: face_encoder_blocks\.0\.0\.conv_block\.0\.weight"):
        load_wav2lip(ckpt)


def test_a_misshaped_key_is_named():
    ckpt = official_checkpoint(QualityDiscriminator())
    ckpt["state_dict"]["module.binary_pred.0.weight"] = torch.zeros(2, 512, 1, 1)
    with pytest.raises(CheckpointError, match=r"1 mis-shaped: binary_pred\.0\.weight \(2, 512, 1, 1\)"):
        load_quality_discriminator(ckpt)


def test_a_checkpoint_that_imports_code_is_refused_unexecuted(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"state_dict": {}, "x": Evil()}))
    with pytest.raises(UnsafeCheckpointError, match="print"):
        load_wav2lip(path)


def test_missing_registry_weights_say_where_to_put_them():
    from facesynth.errors import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="wav2lip_gan.pth"):
        load_wav2lip("wav2lip-gan")


def test_random_wav2lip_is_the_seeded_official_layout_network(ref):
    from facesynth.lipsync import random_wav2lip

    model = random_wav2lip(ref["wav2lip_seed"], device="cpu")
    assert not model.training and digest(model) == ref["wav2lip_sha256"]


def test_registry_names_and_official_file_names_find_the_file_in_weights(wav2lip_file, ref, _isolated_env):
    import os

    os.symlink(wav2lip_file, _isolated_env / "weights" / "wav2lip_gan.pth")
    assert digest(load_wav2lip("wav2lip-gan", device="cpu")) == ref["wav2lip_sha256"]
    assert digest(load_wav2lip("wav2lip_gan.pth", device="cpu")) == ref["wav2lip_sha256"]

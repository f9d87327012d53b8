"""Wav2Lip networks (Prajwal et al., ACM MM 2020), state-dict compatible with the official code.

Parameter and buffer names and shapes equal those of Rudrabha/Wav2Lip (``models/wav2lip.py``,
``models/syncnet.py``, ``models/conv.py`` at 5c90fa9b), so its checkpoints load with ``strict=True``: the
generator ``Wav2Lip``, the lip-sync expert ``SyncNet`` (official ``SyncNet_color``) and the visual-quality
discriminator ``QualityDiscriminator`` (official ``Wav2Lip_disc_qual``). The layer geometry is written as
tables below, one row per conv block: ``(in, out, kernel, stride, padding, residual)``.

All three networks take the tensors the official code feeds them: faces in **BGR** order, float in [0, 1];
mel windows ``[B, 1, 80, 16]`` (mel bins on H, time on W) as ``facesynth.lipsync.audio`` makes them.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from facesynth import winograd
from facesynth.gpu import compiling, cpu_autocast_state

__all__ = ["Wav2Lip", "SyncNet", "QualityDiscriminator", "ConvBlock", "LeakyConvBlock", "fuse_batchnorm",
           "set_fast_inference",
           "FACE_ENCODER", "AUDIO_ENCODER", "FACE_DECODER", "SYNCNET_FACE_ENCODER", "SYNCNET_AUDIO_ENCODER",
           "DISC_ENCODER"]

Spec = tuple  # (cin, cout, kernel, stride, padding, residual) or, for a decoder's first row, with "T" first

# Wav2Lip face encoder: 7 stages, 96x96 → 1x1; each stage's output is a skip connection for the decoder.
FACE_ENCODER: tuple[tuple[Spec, ...], ...] = (
    ((6, 16, 7, 1, 3, False),),
    ((16, 32, 3, 2, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True)),
    ((32, 64, 3, 2, 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True)),
    ((64, 128, 3, 2, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True)),
    ((128, 256, 3, 2, 1, False), (256, 256, 3, 1, 1, True), (256, 256, 3, 1, 1, True)),
    ((256, 512, 3, 2, 1, False), (512, 512, 3, 1, 1, True)),
    ((512, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)),
)

# Wav2Lip audio encoder: [B,1,80,16] → [B,512,1,1]. SyncNet's has one more 256→256 residual block.
AUDIO_ENCODER: tuple[Spec, ...] = (
    (1, 32, 3, 1, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False), (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False),
)
SYNCNET_AUDIO_ENCODER: tuple[Spec, ...] = AUDIO_ENCODER[:11] + ((256, 256, 3, 1, 1, True),) + AUDIO_ENCODER[11:]

# Wav2Lip face decoder: 7 stages; all but the first open with a transposed conv
# ("T", cin, cout, kernel, stride, padding, output_padding). Inputs are the previous stage's output
# concatenated with the matching encoder skip, hence the summed widths (1024 = 512 + 512, ...).
FACE_DECODER: tuple[tuple[Spec, ...], ...] = (
    ((512, 512, 1, 1, 0, False),),
    (("T", 1024, 512, 3, 1, 0, 0), (512, 512, 3, 1, 1, True)),
    (("T", 1024, 512, 3, 2, 1, 1), (512, 512, 3, 1, 1, True), (512, 512, 3, 1, 1, True)),
    (("T", 768, 384, 3, 2, 1, 1), (384, 384, 3, 1, 1, True), (384, 384, 3, 1, 1, True)),
    (("T", 512, 256, 3, 2, 1, 1), (256, 256, 3, 1, 1, True), (256, 256, 3, 1, 1, True)),
    (("T", 320, 128, 3, 2, 1, 1), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True)),
    (("T", 160, 64, 3, 2, 1, 1), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True)),
)

# SyncNet face encoder: 5 stacked BGR frames' lower halves [B,15,48,96] → [B,512,1,1].
SYNCNET_FACE_ENCODER: tuple[Spec, ...] = (
    (15, 32, 7, 1, 3, False),
    (32, 64, 5, (1, 2), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
    (64, 128, 3, 2, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
    (128, 256, 3, 2, 1, False), (256, 256, 3, 1, 1, True), (256, 256, 3, 1, 1, True),
    (256, 512, 3, 2, 1, False), (512, 512, 3, 1, 1, True), (512, 512, 3, 1, 1, True),
    (512, 512, 3, 2, 1, False), (512, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False),
)

# Visual-quality discriminator: lower half of a face [B,3,48,96] → [B,512,1,1]; no normalisation.
DISC_ENCODER: tuple[tuple[Spec, ...], ...] = (
    ((3, 32, 7, 1, 3),),
    ((32, 64, 5, (1, 2), 2), (64, 64, 5, 1, 2)),
    ((64, 128, 5, 2, 2), (128, 128, 5, 1, 2)),
    ((128, 256, 5, 2, 2), (256, 256, 5, 1, 2)),
    ((256, 512, 3, 2, 1), (512, 512, 3, 1, 1)),
    ((512, 512, 3, 2, 1), (512, 512, 3, 1, 1)),
    ((512, 512, 3, 1, 0), (512, 512, 1, 1, 0)),
)


class ConvBlock(nn.Module):
    """Conv (or transposed conv) → BatchNorm → (+ input when ``residual``) → ReLU (official ``Conv2d`` and
    ``Conv2dTranspose`` of ``models/conv.py``; the residual is added before the ReLU).

    Shape: (B, cin, H, W) → (B, cout, H', W').
    """

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding, residual: bool = False,
                 transpose: bool = False, output_padding: int = 0):
        super().__init__()
        conv = (nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding) if transpose
                else nn.Conv2d(cin, cout, kernel_size, stride, padding))
        self.conv_block = nn.Sequential(conv, nn.BatchNorm2d(cout))
        self.residual = residual

    fast = True      # without autograd: the inference path below (``set_fast_inference``)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv_block[0]
        if self.fast and not torch.is_grad_enabled() and type(conv) is nn.Conv2d and conv.kernel_size == (3, 3):
            # inference: BatchNorm folded in, and Winograd where it pays (facesynth.winograd); same sums
            norm = self.conv_block[1] if len(self.conv_block) > 1 else None
            if norm is None or not norm.training:
                weight, bias = (conv.weight, conv.bias) if norm is None else winograd.folded(conv, norm)
                out = winograd.conv2d(x, conv, weight, bias, key="weight" if norm is None else "folded")
                return (out.add_(x) if self.residual else out).relu_()      # out is new: in place
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return F.relu(out)


class LeakyConvBlock(nn.Module):
    """Conv → LeakyReLU(0.01), no normalisation (official ``nonorm_Conv2d``)."""

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv_block(x), 0.01)


def _block(spec: Spec) -> ConvBlock:
    if spec[0] == "T":
        _, cin, cout, k, s, p, op = spec
        return ConvBlock(cin, cout, k, s, p, transpose=True, output_padding=op)
    return ConvBlock(*spec)


def _sequential(specs: Sequence[Spec]) -> nn.Sequential:
    return nn.Sequential(*(_block(s) for s in specs))


class Wav2Lip(nn.Module):
    """The Wav2Lip generator: a face encoder (U-Net skips), an audio encoder, and a decoder.

    ``forward(mel, faces)``:
        mel: (B, 1, 80, 16) mel windows; faces: (B, 6, 96, 96) float in [0, 1], BGR, channels 0-2 the target
        frame with rows 48..95 zeroed, channels 3-5 the reference frame → (B, 3, 96, 96) BGR in [0, 1].
        The official 5-D layout also works: mel (B, T, 1, 80, 16), faces (B, 6, T, 96, 96) → (B, 3, T, 96, 96).

    Example:
        >>> net = Wav2Lip().eval()
        >>> net(torch.zeros(2, 1, 80, 16), torch.rand(2, 6, 96, 96)).shape
        torch.Size([2, 3, 96, 96])
    """

    def __init__(self):
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(_sequential(stage) for stage in FACE_ENCODER)
        self.audio_encoder = _sequential(AUDIO_ENCODER)
        self.face_decoder_blocks = nn.ModuleList(_sequential(stage) for stage in FACE_DECODER)
        self.output_block = nn.Sequential(ConvBlock(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        five_d = faces.dim() == 5
        if five_d:
            b, t = faces.shape[0], faces.shape[2]
            # official order: time-major, i.e. all batch items of step 0, then of step 1, ...
            mel = mel.transpose(0, 1).reshape(b * t, *mel.shape[2:])
            faces = faces.permute(2, 0, 1, 3, 4).reshape(b * t, *faces.shape[1:2], *faces.shape[3:])
        out = self.decode(self.audio_encoder(mel), self.encode_faces(faces))
        if five_d:
            out = out.reshape(t, b, *out.shape[1:]).permute(1, 2, 0, 3, 4)
        return out

    def encode_faces(self, faces: torch.Tensor) -> list[torch.Tensor]:
        """The face encoder's seven outputs (the decoder's skips), finest first: (B, 16, 96, 96) … (B, 512, 1, 1)."""
        feats = []
        x = faces
        for stage in self.face_encoder_blocks:
            x = stage(x)
            feats.append(x)
        return feats

    fast = True      # without autograd on a CPU: the large decoder stages frame by frame (see ``decode``)

    def decode(self, audio_embedding: torch.Tensor, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decoder from the audio embedding (B, 512, 1, 1) and the face skips → (B, 3, 96, 96).

        Skips with batch 1 are broadcast over B (one still face for many audio windows). Without autograd on a
        CPU in float32, the stages from the first 24x24 skip on (``winograd.NNPACK_MIN_PIXELS``) run one frame at
        a time, frames side by side (``winograd.map_frames``): their convolutions then go to NNPACK on one
        thread each, with a frame's activations in the cache, and the small early stages stay batched, where
        their large weights are read once. Same sums as the batched path up to NNPACK's rounding.
        """
        x = audio_embedding
        b = x.shape[0]
        stages = list(zip(self.face_decoder_blocks, reversed(feats)))
        split = self._frame_by_frame_from(x, stages)
        for stage, skip in stages[:split]:
            x = stage(x)
            x = torch.cat((x, skip.expand(b, *skip.shape[1:]) if skip.shape[0] != b else skip), dim=1)
        if split == len(stages):
            return self.output_block(x)
        x = x.contiguous()        # NCHW, as NNPACK takes it
        skips = [skip.contiguous() for _, skip in stages[split:]]

        def frame(i: int) -> torch.Tensor:
            y = x[i:i + 1]
            for (stage, _), skip in zip(stages[split:], skips):
                y = torch.cat((stage(y), skip[i:i + 1] if skip.shape[0] == b else skip[:1]), dim=1)
            return self.output_block(y)

        return torch.cat(winograd.map_frames(frame, range(b)))

    def _frame_by_frame_from(self, x: torch.Tensor, stages: list) -> int:
        """The first decoder stage to run frame by frame (``len(stages)``: none)."""
        if not (self.fast and x.shape[0] > 1 and x.device.type == "cpu" and x.dtype == torch.float32
                and not torch.is_grad_enabled() and not cpu_autocast_state()[0] and not compiling()
                and winograd.ENABLED and winograd.nnpack_available()):
            return len(stages)
        return next((i for i, (_, skip) in enumerate(stages)
                     if skip.shape[2] * skip.shape[3] >= winograd.NNPACK_MIN_PIXELS), len(stages))


class SyncNet(nn.Module):
    """The lip-sync expert (official ``SyncNet_color``): unit-length audio and face embeddings.

    ``forward(mel, faces)``: mel (B, 1, 80, 16); faces (B, 15, 48, 96), the lower halves of 5 consecutive
    BGR frames in [0, 1] stacked on channels → ``(audio_embedding, face_embedding)``, each (B, 512), L2-normalised.
    """

    def __init__(self):
        super().__init__()
        self.face_encoder = _sequential(SYNCNET_FACE_ENCODER)
        self.audio_encoder = _sequential(SYNCNET_AUDIO_ENCODER)

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        audio = self.audio_encoder(mel).flatten(1)
        face = self.face_encoder(faces).flatten(1)
        return F.normalize(audio, p=2, dim=1), F.normalize(face, p=2, dim=1)


class QualityDiscriminator(nn.Module):
    """The visual-quality discriminator (official ``Wav2Lip_disc_qual``): probability that faces are real.

    ``forward(faces)``: (B, 3, T, 96, 96) as the official (or (B, 3, 96, 96) frames) BGR in [0, 1] → (B·T, 1);
    only the lower half (rows 48..95) is looked at. ``perceptual_loss`` is the official ``perceptual_forward``
    (BCE against "real"), on the input's device.
    """

    def __init__(self):
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(
            nn.Sequential(*(LeakyConvBlock(*spec) for spec in stage)) for stage in DISC_ENCODER)
        self.binary_pred = nn.Sequential(nn.Conv2d(512, 1, 1, 1, 0), nn.Sigmoid())

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        if faces.dim() == 5:   # official to_2d: time-major concatenation of the T frames
            faces = faces.permute(2, 0, 1, 3, 4).reshape(-1, *faces.shape[1:2], *faces.shape[3:])
        x = faces[:, :, faces.shape[2] // 2:]
        for stage in self.face_encoder_blocks:
            x = stage(x)
        return self.binary_pred(x).view(x.shape[0], -1)

    def perceptual_loss(self, fake_faces: torch.Tensor) -> torch.Tensor:
        pred = self.forward(fake_faces)
        return F.binary_cross_entropy(pred, torch.ones_like(pred))


set_fast_inference = winograd.set_fast_inference


def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """An inference copy of ``module`` with every eval-mode BatchNorm folded into the conv before it.

    Same outputs up to float rounding (about 1e-6 relative), one memory pass less per block. The copy's
    state dict no longer has the official layout; keep the original for saving.
    """
    fused = copy.deepcopy(module).eval()
    for block in fused.modules():
        if isinstance(block, ConvBlock):
            conv, bn = block.conv_block[0], block.conv_block[1]
            weight, bias = winograd.fold_batchnorm(conv, bn)
            with torch.no_grad():
                conv.weight.copy_(weight)
                conv.bias.copy_(bias)
            block.conv_block = nn.Sequential(conv)
    return fused

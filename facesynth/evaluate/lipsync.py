"""Lip-sync metrics: SyncNet's LSE-D / LSE-C, and a weight-free mouth–audio correlation.

**LSE-D and LSE-C** (Prajwal et al. 2020, *A Lip Sync Expert Is All You Need*, Sec. 4.1) are what Wav2Lip's
``evaluation/scores_LSE`` scripts print for a video: they run joonson/syncnet_python (``run_pipeline.py``, then
``calculate_scores_real_videos.py`` → ``SyncNetInstance.evaluate``) with the released ``syncnet_v2.model``
(Chung & Zisserman 2016, *Out of time*). Per face track:

- the video is taken at 25 fps; each frame's face crop is 224×224, **colour, BGR channel order, raw 0–255**
  values (no normalisation); SyncNet's video stream embeds windows of 5 frames (``[B,3,5,224,224]`` → 1024-d);
- the sound is mono 16 kHz 16-bit PCM; its features are python_speech_features' default MFCC (13 cepstra,
  25 ms rectangular windows every 10 ms = 100 Hz, 26 mel bands, 512-point FFT, pre-emphasis 0.97, lifter 22,
  c0 replaced by the log frame energy) computed on the **integer sample values**; the audio stream embeds
  windows of 20 MFCC frames (``[B,1,13,20]``, 0.2 s) → 1024-d; video window i starts at frame i, audio window
  i at MFCC frame 4·i (4 MFCC frames per video frame);
- windows i = 0 … min(frames, samples // 640) − 6 are used (the official loop stops one window early);
- d[i, j] = ‖v_i − a_{i+j−15} + 1e-6‖₂ for offsets j = 0 … 30 (``vshift=15``, ±0.6 s); audio embeddings past
  either end are zero vectors (the official zero padding, kept);
- D[j] = mean over windows i of d[i, j] (31 values, returned as ``distances``);
- **LSE-D** = min_j D[j] (the official ``minval``): the mean embedding distance at the best offset, lower is
  better (arbitrary units of SyncNet's embedding; Wav2Lip reports about 6.4 on LRS2);
- **LSE-C** = median_j D[j] − min_j D[j] (the official ``conf``): how much the best offset stands out, higher is
  better (Wav2Lip: about 7.8 on LRS2);
- ``offset_frames`` = 15 − argmin_j D[j] (the official ``offset``, in video frames at 25 fps): the best match
  pairs video window i with audio window i − offset, so a **positive offset means the sound comes early** (leads
  the picture) and a negative one that it comes late.

Everything is per face track (per video here); a benchmark averages the per-video numbers.

Where this module departs from the official pipeline (see ``lse``): faces are found by
``facesynth.evaluate.frames.LandmarkTracker`` (dlib by default), not by S3FD, and the largest face is followed
through the whole clip (no scene cuts, no 100-frame minimum track); frames without a face take the box
interpolated between their neighbours (the official tracker does the same inside a track). The crop geometry
is the official ``crop_video``'s: box half-size s = max(w, h)/2 and centre, each median-filtered over 13
frames, the frame padded with grey 110, rows [cy − s, cy + 1.8 s), columns [cx − 1.4 s, cx + 1.4 s), resized
to 224×224. The official pipeline also round-trips the crops through XVID and JPEG files; this one works on
the decoded frames. A video at another frame rate is resampled to 25 fps by taking the nearest source frame
(the official pipeline re-encodes with ``ffmpeg -r 25``).

Weights: ``syncnet_v2.model`` is a plain state dict (names → tensors) of the official ``SyncNetModel.S``,
read with ``torch.load(weights_only=True)`` through ``facesynth.safe_load`` and checked strictly against
``SyncNet`` (``num_batches_tracked`` buffers, which files saved by old torch versions lack, may be absent).

**Mouth–audio correlation** (weight-free, offline): the Pearson correlation between the mouth opening per
frame (inner-lip gap over inter-ocular distance, ``facesynth.evaluate.landmarks.mouth_opening``) and the
sound's RMS amplitude over each frame's display interval [k/fps, (k+1)/fps), both z-scored, at lags of up to
±``max_lag_s``. A lag L pairs frame k's mouth with the sound of frame k − L, so the sign convention is SyncNet's
offset's: a positive best lag means the sound comes early, a negative one that it comes late. The correlation
is dimensionless, in [−1, 1]; a well-synced talking face gives a clearly positive value at a lag near 0.
Frames without a face are interpolated over gaps up to ``max_gap_s`` and otherwise left out (and counted).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from facesynth.errors import ConfigError, MediaError, NoFaceError
from facesynth.evaluate.frames import FrameSource, LandmarkTracker, iter_rgb, source_fps

__all__ = ["SyncNet", "load_syncnet", "lse", "mouth_audio_correlation", "evaluate_lipsync", "mfcc",
           "syncnet_distances", "DEFINITIONS", "SYNCNET_FPS", "SYNCNET_SAMPLE_RATE"]

SYNCNET_FPS = 25
SYNCNET_SAMPLE_RATE = 16000
CROP_SIZE = 224
VIDEO_WINDOW = 5                 # frames per video window
AUDIO_WINDOW = 20                # MFCC frames per audio window (0.2 s)
MFCC_PER_FRAME = 4               # 100 Hz MFCC / 25 fps video
SAMPLES_PER_FRAME = SYNCNET_SAMPLE_RATE // SYNCNET_FPS   # 640
CROP_SCALE = 0.4                 # run_pipeline.py --crop_scale
BOX_SMOOTHING = 13               # run_pipeline.py crop_video: medfilt kernel of box size and centre
PAD_VALUE = 110                  # run_pipeline.py crop_video: grey padding around the frame

DEFINITIONS = {
    "lse_d": "SyncNet mean embedding distance between 5-frame video and 0.2 s audio windows at the best offset "
             "within ±15 frames (official minval; SyncNet units, lower is better)",
    "lse_c": "median over the 31 offsets of the mean distance minus its minimum (official conf; SyncNet units, "
             "higher is better)",
    "offset_frames": "audio-video offset SyncNet finds, in 25 fps frames (official 15 - argmin; positive: sound "
                     "early, negative: sound late)",
    "mouth_audio_corr": "Pearson correlation of per-frame mouth opening and per-frame sound RMS at the best lag "
                        "within ±max_lag_s (dimensionless, -1..1, higher is better)",
    "best_lag_frames": "lag of the best mouth-audio correlation in video frames (as offset_frames: positive: "
                       "sound early, negative: sound late)",
    "best_lag_s": "the same lag in seconds",
    "corr_at_zero": "mouth-audio correlation with no lag (dimensionless, -1..1)",
}


# ---------------------------------------------------------------------------------------------------------
# LSE-D / LSE-C
# ---------------------------------------------------------------------------------------------------------

def lse(video: FrameSource, audio: str | os.PathLike | np.ndarray | None = None,
        syncnet: str | os.PathLike | "SyncNet" = "syncnet", *, crop: bool = True, detector: str = "dlib",
        fps: float | None = None, vshift: int = 15, batch_size: int = 20,
        device: str | torch.device = "cpu") -> dict:
    """LSE-D, LSE-C and the audio-video offset of a talking-face video, as SyncNet's official evaluation.

    Args:
        video: a video file, a folder of frames, or uint8 RGB frames ``[T,H,W,3]``.
        audio: a sound file (or a video with sound), or mono float samples in [-1, 1] at 16 kHz; None takes
            the sound of ``video`` (a file).
        syncnet: a registry name or path of ``syncnet_v2.model``, or a loaded ``SyncNet``.
        crop: find the face and crop it as the official ``run_pipeline.py`` does; False when ``video`` already
            is a face-track crop (its frames are resized to 224×224, as Wav2Lip's scorer does).
        detector: face detector of ``LandmarkTracker`` (``"dlib"`` runs offline).
        fps: frame rate of ``video`` when it has no time base (frames, folders); default 25.
        vshift: offsets searched, in frames each way (official 15).
        batch_size: windows per forward pass (results do not depend on it).

    Returns:
        ``{"lse_d", "lse_c", "offset_frames", "offset_s", "distances" (31 mean distances, offset -15..15 →
        index 0..30 as the official ``mdist``), "windows", "frames", "frames_with_face", "fps", "weights"}``.

    Raises:
        MediaError: no sound, or too short (under 6 frames = 0.24 s of picture and sound).
        NoFaceError: ``crop=True`` and no frame has a face.
        WeightsNotFoundError / CheckpointError: the weights are missing or do not fit.
    """
    model = syncnet if isinstance(syncnet, SyncNet) else load_syncnet(syncnet, device=device)
    dev = next(model.parameters()).device
    samples = _pcm16(_sound(video, audio))
    features = mfcc(samples, SYNCNET_SAMPLE_RATE).T                          # [13, T_mfcc]
    src_fps = _frame_rate(video, fps, default=SYNCNET_FPS)
    frames = _resampled(video, src_fps, SYNCNET_FPS)
    faces_found = None
    if crop:
        boxes, faces_found = _track_boxes(frames(), detector)
        crops = _face_crops(frames(), boxes)
    else:
        crops = (_resize(f, CROP_SIZE) for f in frames())
    video_emb, n_frames = _embed_video(model, crops, batch_size, dev)
    usable = min(n_frames, len(samples) // SAMPLES_PER_FRAME) - VIDEO_WINDOW   # official lastframe
    if usable < 1:
        raise MediaError(f"{_label(video)}: too short for SyncNet: {n_frames} frames at 25 fps and "
                         f"{len(samples) / SYNCNET_SAMPLE_RATE:.2f} s of sound; it needs at least 6 frames of both")
    audio_emb = _embed_audio(model, features, usable, batch_size, dev)
    dists = syncnet_distances(video_emb[:usable], audio_emb, vshift)
    mean = dists.mean(dim=0)
    min_val, min_idx = torch.min(mean, 0)
    conf = torch.median(mean) - min_val
    offset = vshift - int(min_idx)
    return {"lse_d": float(min_val), "lse_c": float(conf), "offset_frames": offset,
            "offset_s": offset / SYNCNET_FPS, "distances": [float(d) for d in mean], "windows": usable,
            "frames": n_frames, "frames_with_face": faces_found if crop else None, "fps": SYNCNET_FPS,
            "weights": getattr(model, "source", "SyncNet")}


def syncnet_distances(video_emb: torch.Tensor, audio_emb: torch.Tensor, vshift: int = 15) -> torch.Tensor:
    """Distances between each video window and the audio windows around it.

    Shape: ``[N, D]``, ``[N, D]`` → ``[N, 2·vshift+1]``; entry (i, j) pairs video window i with audio window
    i + j − vshift (a zero vector outside 0..N−1, as the official ``calc_pdist`` pads), with torch's
    ``pairwise_distance`` (which adds 1e-6 to the difference).
    """
    padded = nn.functional.pad(audio_emb, (0, 0, vshift, vshift))
    window = 2 * vshift + 1
    shifted = padded.unfold(0, window, 1).transpose(1, 2)                # [N, window, D]
    return nn.functional.pairwise_distance(video_emb[:, None, :].expand_as(shifted), shifted)


def load_syncnet(path_or_name: str | os.PathLike = "syncnet", device: str | torch.device = "cpu") -> "SyncNet":
    """The SyncNet with the official ``syncnet_v2.model`` weights, in eval mode.

    ``path_or_name`` is a registry name (``"syncnet"``) or a file. The file is read weights-only (nothing in it
    is executed) and must match ``SyncNet``'s state dict exactly, except for ``num_batches_tracked``.

    Raises:
        WeightsNotFoundError: the file is not on disk (offline, the message says where to get it and put it).
        CheckpointError: the file is damaged, not a state dict, or has missing/unexpected/mis-shaped tensors.
    """
    from facesynth.gpu import pick_device
    from facesynth.safe_load import check_state_dict, load_state_dict
    from facesynth.weights import resolve

    path = resolve(path_or_name)
    state = load_state_dict(path)
    model = SyncNet()
    expected = model.state_dict()
    for key, value in expected.items():   # old torch saved BatchNorm without this counter; eval never reads it
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    check_state_dict(expected, state, f"{path}",
                     hint="Is it joonson/syncnet_python's syncnet_v2.model (a state dict of SyncNetModel.S)?")
    model.load_state_dict(state, strict=True)
    model.source = str(path)
    return model.eval().to(pick_device(device))


class SyncNet(nn.Module):
    """SyncNet (Chung & Zisserman 2016) in the layout of the official ``SyncNetModel.S``, so its state dict keys
    (``netcnnaud.*``, ``netfcaud.*``, ``netcnnlip.*``, ``netfclip.*``) are the released file's.

    Shape:
        ``embed_audio``: MFCC windows ``[B,1,13,20]`` → ``[B,1024]``.
        ``embed_video``: face windows ``[B,3,5,224,224]``, BGR, float 0–255 → ``[B,1024]``.
    """

    def __init__(self, embedding: int = 1024):
        super().__init__()
        self.netcnnaud = _conv_stack(nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, [
            (1, 64, 3, 1, 1, "identity"),   # the official 1×1 max-pool here is a no-op; kept for the indices
            (64, 192, 3, 1, 1, ((3, 3), (1, 2), 0)),
            (192, 384, 3, 1, 1, None),
            (384, 256, 3, 1, 1, None),
            (256, 256, 3, 1, 1, ((3, 3), (2, 2), 0)),
            (256, 512, (5, 4), 1, 0, None),
        ])
        self.netfcaud = _embedding_head(embedding)
        self.netfclip = _embedding_head(embedding)
        self.netcnnlip = _conv_stack(nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, [
            (3, 96, (5, 7, 7), (1, 2, 2), 0, ((1, 3, 3), (1, 2, 2), 0)),
            (96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 1, 1))),
            (256, 256, (1, 3, 3), 1, (0, 1, 1), None),
            (256, 256, (1, 3, 3), 1, (0, 1, 1), None),
            (256, 256, (1, 3, 3), 1, (0, 1, 1), ((1, 3, 3), (1, 2, 2), 0)),
            (256, 512, (1, 6, 6), 1, 0, None),
        ])

    def embed_audio(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(mfcc_windows).flatten(1))

    def embed_video(self, face_windows: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(face_windows).flatten(1))


def _conv_stack(conv, norm, pool, blocks) -> nn.Sequential:
    """conv → BN → ReLU (→ pool) per block, so the parameter indices follow the official Sequential."""
    layers: list[nn.Module] = []
    for cin, cout, kernel, stride, padding, pooling in blocks:
        layers += [conv(cin, cout, kernel_size=kernel, stride=stride, padding=padding), norm(cout), nn.ReLU()]
        if pooling == "identity":
            layers.append(nn.Identity())
        elif pooling is not None:
            k, s, p = pooling
            layers.append(pool(kernel_size=k, stride=s, padding=p))
    return nn.Sequential(*layers)


def _embedding_head(embedding: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))


def mfcc(signal: np.ndarray, sample_rate: int = SYNCNET_SAMPLE_RATE, numcep: int = 13, nfilt: int = 26,
         nfft: int = 512, preemph: float = 0.97, ceplifter: int = 22) -> np.ndarray:
    """python_speech_features' ``mfcc`` with its defaults (0.6, what SyncNet's evaluation calls), in numpy.

    ``signal``: ``[N]`` samples in the scale given (SyncNet passes int16 values; the scale moves c0).
    Frames of 25 ms every 10 ms, the last one zero-padded; no window function; power spectrum |FFT|²/nfft;
    ``nfilt`` triangular mel filters 0 Hz – sr/2 on FFT bins floor((nfft+1)·f/sr); log; orthonormal DCT-II;
    sinusoidal lifter; c0 replaced by the log of the frame's total power. Zeros become float eps before logs.

    Shape: ``[N]`` → ``[frames, numcep]`` float64, frames = 1 + ceil((N − 400) / 160) at 16 kHz.
    """
    from scipy.fft import dct

    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise MediaError(f"mfcc needs mono samples [N], got shape {x.shape}")
    x = np.append(x[0], x[1:] - preemph * x[:-1])
    frame_len, step = int(_round_half_up(0.025 * sample_rate)), int(_round_half_up(0.01 * sample_rate))
    count = 1 if x.size <= frame_len else 1 + int(np.ceil((x.size - frame_len) / step))
    x = np.concatenate([x, np.zeros((count - 1) * step + frame_len - x.size)])
    frames = x[np.arange(frame_len)[None, :] + step * np.arange(count)[:, None]]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    eps = np.finfo(float).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    bands = power @ _mel_filters(nfilt, nfft, sample_rate).T
    bands = np.where(bands == 0, eps, bands)
    cep = dct(np.log(bands), type=2, axis=1, norm="ortho")[:, :numcep]
    if ceplifter > 0:
        cep = cep * (1 + ceplifter / 2.0 * np.sin(np.pi * np.arange(numcep) / ceplifter))
    cep[:, 0] = np.log(energy)
    return cep


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _mel_filters(nfilt: int, nfft: int, sample_rate: int) -> np.ndarray:
    """Triangular filters ``[nfilt, nfft//2+1]`` on the HTK mel scale, edges snapped to FFT bins (unnormalised)."""
    high = 2595 * np.log10(1 + (sample_rate / 2) / 700.0)
    hz = 700 * (10 ** (np.linspace(0.0, high, nfilt + 2) / 2595.0) - 1)
    edges = np.floor((nfft + 1) * hz / sample_rate)
    bank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = edges[j], edges[j + 1], edges[j + 2]
        rise = np.arange(int(lo), int(mid))
        fall = np.arange(int(mid), int(hi))
        bank[j, rise] = (rise - lo) / (mid - lo)
        bank[j, fall] = (hi - fall) / (hi - mid)
    return bank


def _embed_video(model: SyncNet, crops: Iterable[np.ndarray], batch_size: int,
                 device: torch.device) -> tuple[torch.Tensor, int]:
    """Embeddings ``[N−4, 1024]`` of every 5-frame window of the 224×224 RGB crops, and the frame count N."""
    window: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    out: list[torch.Tensor] = []
    count = 0
    for crop in crops:
        count += 1
        window.append(crop[..., ::-1].transpose(2, 0, 1))   # BGR, [3,H,W]: the official frames come from cv2
        if len(window) > VIDEO_WINDOW:
            window.pop(0)
        if len(window) == VIDEO_WINDOW:
            batch.append(np.stack(window, axis=1))           # [3,5,H,W]
        if len(batch) == batch_size:
            out.append(_forward(model.embed_video, batch, device))
            batch = []
    if batch:
        out.append(_forward(model.embed_video, batch, device))
    empty = torch.zeros(0, model.netfclip[-1].out_features)
    return (torch.cat(out) if out else empty), count


def _embed_audio(model: SyncNet, features: np.ndarray, windows: int, batch_size: int,
                 device: torch.device) -> torch.Tensor:
    """Embeddings ``[windows, 1024]`` of MFCC windows ``features[:, 4i : 4i+20]``."""
    out = []
    for start in range(0, windows, batch_size):
        batch = [features[None, :, MFCC_PER_FRAME * i: MFCC_PER_FRAME * i + AUDIO_WINDOW]
                 for i in range(start, min(windows, start + batch_size))]
        out.append(_forward(model.embed_audio, batch, device))
    return torch.cat(out)


@torch.no_grad()
def _forward(fn, batch: list[np.ndarray], device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(np.stack(batch), dtype=np.float32)).to(device)
    return fn(x).float().cpu()


def _track_boxes(frames: Iterable[np.ndarray], detector: str) -> tuple[np.ndarray, int]:
    """The largest face's box per frame ``[N,4]`` (x0,y0,x1,y1), gaps filled by interpolation; and how many
    frames had a face."""
    tracker = LandmarkTracker(detector)
    found: list[np.ndarray | None] = [(f.box if f is not None else None) for f in map(tracker, frames)]
    have = np.array([b is not None for b in found])
    if not have.any():
        raise NoFaceError(f"no face in any of the {len(found)} frames; LSE needs a visible talking face")
    known = np.flatnonzero(have)
    boxes = np.stack([found[i] for i in known])
    every = np.arange(len(found))
    filled = np.stack([np.interp(every, known, boxes[:, c]) for c in range(4)], axis=1)
    return filled, int(have.sum())


def _face_crops(frames: Iterable[np.ndarray], boxes: np.ndarray) -> Iterator[np.ndarray]:
    """224×224 crops with the official ``crop_video`` geometry (run_pipeline.py), boxes smoothed over 13 frames."""
    from scipy.signal import medfilt

    size = medfilt(np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2, BOX_SMOOTHING)
    cy = medfilt((boxes[:, 1] + boxes[:, 3]) / 2, BOX_SMOOTHING)
    cx = medfilt((boxes[:, 0] + boxes[:, 2]) / 2, BOX_SMOOTHING)
    for i, frame in enumerate(frames):
        bs = size[i]
        pad = int(bs * (1 + 2 * CROP_SCALE))
        padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=PAD_VALUE)
        my, mx = cy[i] + pad, cx[i] + pad
        face = padded[int(my - bs):int(my + bs * (1 + 2 * CROP_SCALE)),
                      int(mx - bs * (1 + CROP_SCALE)):int(mx + bs * (1 + CROP_SCALE))]
        yield _resize(face, CROP_SIZE)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size))          # bilinear, as the official cv2.resize calls


# ---------------------------------------------------------------------------------------------------------
# Mouth–audio correlation
# ---------------------------------------------------------------------------------------------------------

def mouth_audio_correlation(video: FrameSource, audio: str | os.PathLike | np.ndarray | None = None,
                            fps: float | None = None, detector: str = "dlib", max_lag_s: float = 0.5,
                            max_gap_s: float = 0.2, sample_rate: int = SYNCNET_SAMPLE_RATE) -> dict:
    """How well the mouth's opening follows the loudness of the sound, without any learned weights.

    Args:
        video: a video file, a folder of frames, or uint8 RGB frames ``[T,H,W,3]``.
        audio: a sound file (or video with sound), or mono float samples in [-1, 1] at ``sample_rate``; None
            takes the sound of ``video``.
        fps: frame rate of ``video``; None reads it from the file (frames and folders need it).
        max_lag_s: lags searched each way, in seconds.
        max_gap_s: runs of frames without a face up to this long are linearly interpolated; longer runs (and
            runs at either end) are left out of the correlation.

    Returns:
        ``{"mouth_audio_corr", "best_lag_frames", "best_lag_s", "corr_at_zero", "correlations" (per lag,
        from -max_lag to +max_lag frames), "frames", "frames_with_face", "frames_interpolated",
        "frames_used", "fps"}``. Correlations are None where fewer than 3 frames pair up, or a side is constant.

    Raises:
        MediaError: no sound (``video`` has no sound track and ``audio`` is None), or no frames.
        ConfigError: ``fps`` missing for frames without a time base, or a negative lag/gap.
    """
    if max_lag_s < 0 or max_gap_s < 0:
        raise ConfigError(f"max_lag_s and max_gap_s must be >= 0, got {max_lag_s} and {max_gap_s}")
    rate = _frame_rate(video, fps, default=None)
    samples = _sound(video, audio, sample_rate)
    tracker = LandmarkTracker(detector)
    from facesynth.evaluate.landmarks import mouth_opening

    opening = np.array([mouth_opening(f.landmarks) if f is not None else np.nan
                        for f in map(tracker, iter_rgb(video))], dtype=np.float64)
    if opening.size == 0:
        raise MediaError(f"{_label(video)}: has no frames")
    with_face = int(np.isfinite(opening).sum())
    mouth = _fill_short_gaps(opening, max_gap=int(round(max_gap_s * rate)))
    loudness = _frame_rms(samples, sample_rate, rate, len(opening))
    max_lag = int(round(max_lag_s * rate))
    lags = list(range(-max_lag, max_lag + 1))
    corrs = [_lagged_pearson(mouth, loudness, -lag) for lag in lags]
    scored = [(c, lag) for c, lag in zip(corrs, lags) if c is not None]
    best, best_lag = max(scored, key=lambda t: (t[0], -abs(t[1]))) if scored else (None, None)
    return {"mouth_audio_corr": best, "best_lag_frames": best_lag,
            "best_lag_s": None if best_lag is None else best_lag / rate,
            "corr_at_zero": corrs[max_lag], "correlations": corrs, "frames": len(opening),
            "frames_with_face": with_face,
            "frames_interpolated": int(np.isfinite(mouth).sum()) - with_face,
            "frames_used": int((np.isfinite(mouth) & np.isfinite(loudness)).sum()), "fps": rate}


def _fill_short_gaps(values: np.ndarray, max_gap: int) -> np.ndarray:
    """Linear interpolation over interior NaN runs of at most ``max_gap`` samples; other NaNs stay."""
    out = values.copy()
    known = np.flatnonzero(np.isfinite(values))
    for left, right in zip(known[:-1], known[1:]):
        if 1 < right - left <= max_gap + 1:
            out[left + 1:right] = np.interp(np.arange(left + 1, right), [left, right], values[[left, right]])
    return out


def _frame_rms(samples: np.ndarray, sample_rate: int, fps: float, frames: int) -> np.ndarray:
    """RMS of the sound over each frame's display interval [k/fps, (k+1)/fps); NaN where the sound has ended."""
    bounds = np.round(np.arange(frames + 1) * sample_rate / fps).astype(np.int64)
    rms = np.full(frames, np.nan)
    squares = np.concatenate([[0.0], np.cumsum(np.asarray(samples, np.float64) ** 2)])
    for k in range(frames):
        lo, hi = bounds[k], min(bounds[k + 1], samples.size)
        if hi > lo:
            rms[k] = np.sqrt((squares[hi] - squares[lo]) / (hi - lo))
    return rms


def _lagged_pearson(mouth: np.ndarray, loudness: np.ndarray, shift: int) -> float | None:
    """Pearson correlation of mouth[k] with loudness[k + shift] over the k where both are known."""
    n = len(mouth)
    a = mouth[max(0, -shift):n - max(0, shift)]
    b = loudness[max(0, shift):n - max(0, -shift)]
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return None
    a, b = a[ok], b[ok]
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.mean((a - a.mean()) / a.std() * (b - b.mean()) / b.std()))


# ---------------------------------------------------------------------------------------------------------
# Both
# ---------------------------------------------------------------------------------------------------------

def evaluate_lipsync(video: FrameSource, audio: str | os.PathLike | np.ndarray | None = None,
                     syncnet: str | os.PathLike | None = "syncnet", detector: str = "dlib",
                     fps: float | None = None) -> dict:
    """The mouth–audio correlation always, and LSE-D/LSE-C when SyncNet's weights are on disk.

    ``syncnet``: registry name or path of ``syncnet_v2.model``; None skips LSE. When the weights cannot be found,
    ``lse_d``/``lse_c``/``offset_frames`` are None and ``notes`` says which file to get and where to put it.

    Returns the keys of ``mouth_audio_correlation`` and ``lse`` (``lse_distances`` for its distance curve), plus
    ``definitions`` (metric → definition with units), ``weights`` (the landmark and SyncNet files used, with their
    SHA-256), ``versions``, ``detector`` and ``notes``.
    """
    from facesynth.errors import WeightsNotFoundError
    from facesynth.evaluate.report import provenance

    result = mouth_audio_correlation(video, audio, fps=fps, detector=detector)
    result.update(lse_d=None, lse_c=None, offset_frames=None, notes=[])
    syncnet_file = None
    if syncnet is None:
        result["notes"].append("LSE-D/LSE-C skipped (syncnet=None)")
    else:
        try:
            model = load_syncnet(syncnet)
        except WeightsNotFoundError as e:
            result["notes"].append(f"LSE-D/LSE-C not computed: {e}")
        else:
            scores = lse(video, audio, model, detector=detector, fps=fps)
            result.update(lse_d=scores["lse_d"], lse_c=scores["lse_c"], offset_frames=scores["offset_frames"],
                          lse_distances=scores["distances"], lse_windows=scores["windows"])
            syncnet_file = model.source
    result["definitions"] = dict(DEFINITIONS)
    result.update(provenance(detector=detector, extra_weights={"syncnet": syncnet_file} if syncnet_file else None))
    return result


# ---------------------------------------------------------------------------------------------------------
# Media helpers
# ---------------------------------------------------------------------------------------------------------

def _sound(video: FrameSource, audio: str | os.PathLike | np.ndarray | None,
           sample_rate: int = SYNCNET_SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at ``sample_rate``: of ``audio``, or of ``video``'s own sound track."""
    from facesynth.media import has_audio, read_audio

    if isinstance(audio, np.ndarray):
        if audio.ndim != 1 or audio.size == 0:
            raise MediaError(f"audio samples must be a non-empty mono array [N], got shape {audio.shape}")
        return audio.astype(np.float32)
    source = audio if audio is not None else video
    if not isinstance(source, (str, os.PathLike)):
        raise MediaError("the frames given have no sound track; pass audio= (a sound file or samples)")
    if Path(source).is_dir() or not has_audio(source):
        raise MediaError(f"{source}: has no sound track; pass audio= (a sound file, or a video with sound)")
    return read_audio(source, sr=sample_rate)


def _pcm16(samples: np.ndarray) -> np.ndarray:
    """float [-1,1] → the int16 sample values (as float64) that the official wavfile.read gives."""
    return np.clip(np.round(np.asarray(samples, np.float64) * 32768.0), -32768, 32767)


def _frame_rate(video: FrameSource, fps: float | None, default: float | None) -> float:
    if fps is not None:
        if fps <= 0:
            raise ConfigError(f"fps must be positive, got {fps}")
        return float(fps)
    rate = source_fps(video)
    if rate is None:
        if default is None:
            raise ConfigError(f"{_label(video)} has no frame rate; pass fps= (e.g. fps=25)")
        return float(default)
    return float(rate)


def _resampled(video: FrameSource, src_fps: float, fps: float):
    """A function giving a fresh iterator of the frames at ``fps`` (nearest source frame; every frame when
    the rates agree). One-shot iterables are materialised, since the frames are read twice."""
    if not isinstance(video, (str, os.PathLike, np.ndarray)) and not hasattr(video, "detach"):
        video = list(iter_rgb(video))

    def frames() -> Iterator[np.ndarray]:
        if abs(src_fps - fps) < 1e-3:
            yield from iter_rgb(video)
            return
        k = 0
        for i, frame in enumerate(iter_rgb(video)):
            while int(np.floor(k * src_fps / fps + 0.5)) == i:
                yield frame
                k += 1
    return frames


def _label(video: FrameSource) -> str:
    from facesynth.evaluate.frames import source_label
    return source_label(video)


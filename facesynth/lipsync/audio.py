"""Wav2Lip's audio features: the official mel spectrogram and its per-video-frame windows.

``melspectrogram`` reproduces the official ``audio.melspectrogram`` (Rudrabha/Wav2Lip ``audio.py`` with the
``hparams.py`` defaults, as run under its pinned librosa 0.7) in numpy, without librosa: pre-emphasis 0.97,
STFT (n_fft 800, hop 200, periodic Hann window 800, centred with **reflect** padding — librosa ≥ 0.10 pads
with zeros by default, which moves the first and last two frames by up to 1.4), magnitude, 80 Slaney mel
bands 55–7600 Hz with Slaney area normalisation, ``20·log10(max(1e-5, ·)) − 20``, then ``8·(S+100)/100 − 4``
clipped to ±4. 16 kHz audio gives 80 mel frames per second.

``chunk_starts`` is the official inference loop's windowing: one 16-frame window (200 ms, looking ahead of
the frame time) per output video frame.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from facesynth.errors import MediaError

__all__ = ["SAMPLE_RATE", "HOP", "N_FFT", "N_MELS", "MEL_STEP", "melspectrogram", "iter_mel", "mel_filterbank",
           "load_audio", "iter_audio", "count_mel_frames", "chunk_starts", "mel_windows", "MelWindows", "synthetic_speech"]

SAMPLE_RATE = 16000
N_FFT = 800            # = window length
HOP = 200              # 12.5 ms: 80 mel frames per second
N_MELS = 80
FMIN, FMAX = 55.0, 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB, REF_LEVEL_DB, MAX_ABS = -100.0, 20.0, 4.0
MEL_STEP = 16          # mel frames per window (official ``mel_step_size``)
MEL_FPS = SAMPLE_RATE / HOP
_BLOCK = 2048          # STFT frames per block, so memory stays small for long audio


def melspectrogram(wav: np.ndarray | torch.Tensor, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The official Wav2Lip mel spectrogram of a mono signal.

    Args:
        wav: mono samples in [-1, 1], shape (N,) (numpy or torch, any float dtype).
        sr: its sample rate; other rates than 16 kHz are resampled to 16 kHz first (polyphase, so results
            differ slightly from the official librosa/resampy resampling).

    Returns:
        float32 (80, 1 + N16 // 200) in [-4, 4], N16 the length at 16 kHz.

    Raises:
        MediaError: not a 1-D signal, non-finite samples, or shorter than one STFT window (401 samples).

    Example:
        >>> melspectrogram(np.zeros(32000, np.float32)).shape
        (80, 161)
    """
    x = wav.detach().cpu().double().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float64)
    if x.ndim != 1:
        raise MediaError(f"melspectrogram expects mono samples of shape (N,), got {x.shape}; average the "
                         f"channels first (media.read_audio decodes any file as mono)")
    if sr != SAMPLE_RATE:
        x = _resample(x, sr)
    blocks = (x[i:i + _BLOCK * HOP] for i in range(0, x.size, _BLOCK * HOP))
    return np.concatenate(list(iter_mel(blocks)), axis=1)


def iter_mel(blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """``melspectrogram`` of a signal that arrives in blocks: yields its mel frames in order, (80, t) float32 each.

    ``blocks`` are consecutive pieces of one mono 16 kHz signal, of any lengths. Memory stays at one block
    plus one STFT window, however long the signal: pre-emphasis carries its last sample over, and the centred
    STFT's reflect padding needs only the first and the last 401 samples. The frames equal ``melspectrogram``'s.

    Raises:
        MediaError: non-finite samples, or fewer than 401 samples in all.
    """
    window, basis = _hann(N_FFT), mel_filterbank()
    pad = N_FFT // 2
    previous = 0.0          # x[-1] = 0: the official lfilter starts from rest
    head: np.ndarray | None = None    # the first samples, until there are enough for the left reflection
    buf = np.empty(0)       # the padded signal from the next frame's start on
    for block in blocks:
        x = np.asarray(block, np.float64).ravel()
        if x.size == 0:
            continue
        if not np.all(np.isfinite(x)):
            raise MediaError("the audio contains NaN or infinite samples; decode it again or clean it")
        y = x - PREEMPHASIS * np.concatenate(([previous], x[:-1]))
        previous = x[-1]
        if head is not None or buf.size == 0:
            head = y if head is None else np.concatenate((head, y))
            if head.size <= pad:
                continue
            y, head = np.concatenate((head[pad:0:-1], head)), None   # left reflection, then the signal
        buf = np.concatenate((buf, y))
        n = (buf.size - N_FFT) // HOP + 1 if buf.size >= N_FFT else 0
        if n:
            yield _mel_frames(buf, n, window, basis)
            buf = buf[n * HOP:]
    if head is not None or buf.size == 0:
        got = 0 if head is None else head.size
        raise MediaError(f"the audio has {got} samples at 16 kHz; at least {pad + 1} (25 ms) are needed")
    buf = np.concatenate((buf, buf[-2:-pad - 2:-1]))          # right reflection of the last samples
    n = (buf.size - N_FFT) // HOP + 1
    if n > 0:
        yield _mel_frames(buf, n, window, basis)


def _mel_frames(padded: np.ndarray, n: int, window: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Mel frames of the first ``n`` windows (hop 200) of a padded signal → (80, n) float32, official scaling."""
    frames = np.lib.stride_tricks.sliding_window_view(padded[:(n - 1) * HOP + N_FFT], N_FFT)[::HOP]
    out = np.empty((N_MELS, n), np.float32)
    for start in range(0, n, _BLOCK):
        spec = np.abs(np.fft.rfft(frames[start:start + _BLOCK] * window, axis=1))      # (t, 401)
        mel = basis @ spec.T                                                            # (80, t)
        db = 20.0 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
        norm = 2 * MAX_ABS * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS
        out[:, start:start + _BLOCK] = np.clip(norm, -MAX_ABS, MAX_ABS)
    return out


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = FMIN,
                   fmax: float = FMAX) -> np.ndarray:
    """Triangular mel filters on the Slaney scale with Slaney area normalisation (librosa's ``htk=False``,
    ``norm="slaney"``, what the official ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)`` gives).

    Shape: (n_mels, 1 + n_fft // 2), float64.
    """
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(rising, falling))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def load_audio(path: str | os.PathLike) -> np.ndarray:
    """Decode the sound of any file (wav, mp3, a video…) as mono float32 at 16 kHz, through the bundled ffmpeg.

    Raises MediaError when the file is missing or has no audio stream. ``iter_audio`` streams instead.
    """
    from facesynth.media import read_audio

    return read_audio(path, sr=SAMPLE_RATE)


def iter_audio(path: str | os.PathLike, block: int = 10 * SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Stream the sound of any file as mono float32 blocks of ``block`` samples at 16 kHz (the last one shorter).

    Decoded by the bundled ffmpeg through a pipe, so memory does not depend on the sound's length; the samples
    equal ``load_audio``'s. Raises MediaError when nothing can be decoded.
    """
    import subprocess

    from facesynth.media import ffmpeg_exe

    p = Path(path)
    if not p.is_file():
        raise MediaError(f"{p}: no such audio file; check the path")
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(p), "-vn", "-ac", "1",
           "-ar", str(SAMPLE_RATE), "-f", "s16le", "-acodec", "pcm_s16le", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    total = 0
    try:
        while True:
            data = proc.stdout.read(2 * block)
            if not data:
                break
            data = data[:len(data) - len(data) % 2]
            total += len(data) // 2
            yield np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()
        proc.stderr.close()
        code = proc.wait()
    if code != 0 or total == 0:
        from facesynth.media import has_audio

        if not has_audio(p):       # ffmpeg's own message for this ("Invalid argument") says nothing useful
            raise MediaError(f"{p}: has no sound track; give a sound file (wav, mp3...) or a video with sound")
        raise MediaError(f"{p}: no audio could be decoded ({err[-1] if err else 'no audio stream'})")


def count_mel_frames(path: str | os.PathLike) -> int:
    """Number of mel frames the sound of ``path`` gives (``1 + samples // 200`` at 16 kHz), by streaming it once."""
    return 1 + sum(b.size for b in iter_audio(path)) // HOP


def chunk_starts(num_mel_frames: int, fps: float, window: int = MEL_STEP) -> np.ndarray:
    """First mel frame of each output video frame's window, as the official inference loop makes them.

    Frame i starts at ``int(i * (80 / fps))`` (float64, ``80 / fps`` computed first) while the window fits;
    then one last window ending at the last mel frame is added and the list stops, so the last start is
    always ``num_mel_frames - window`` and may repeat the one before.

    Shape: (number of output frames,) int64.

    Raises:
        MediaError: fewer than ``window`` mel frames (audio shorter than 0.2 s), or a non-positive fps.
    """
    if not fps or not np.isfinite(fps) or fps <= 0:
        raise MediaError(f"fps must be a positive number, got {fps}")
    if num_mel_frames < window:
        raise MediaError(f"the audio gives {num_mel_frames} mel frames but one window needs {window} "
                         f"({window / MEL_FPS:.2f} s); use a longer sound")
    step = 80.0 / fps
    last = num_mel_frames - window
    n = int((last + 1) / step) + 3
    starts = np.floor(np.arange(n, dtype=np.float64) * step).astype(np.int64)
    starts = starts[starts <= last]
    return np.append(starts, last)


def mel_windows(mel: np.ndarray | torch.Tensor, starts: np.ndarray) -> torch.Tensor:
    """The windows of ``mel`` beginning at ``starts``, in the network's layout.

    Shape: mel (80, T), starts (B,) → float32 (B, 1, 80, 16).
    """
    m = torch.as_tensor(np.asarray(mel), dtype=torch.float32)
    idx = torch.as_tensor(np.asarray(starts), dtype=torch.long)[:, None] + torch.arange(MEL_STEP)
    return m[:, idx].permute(1, 0, 2).unsqueeze(1).contiguous()


class MelWindows:
    """The mel windows of a sound, taken batch by batch in order, computed as the sound streams in.

    ``take(starts)`` returns the windows beginning at ``starts`` (non-decreasing across calls, as
    ``chunk_starts`` gives them) as (b, 1, 80, 16) float32. Only the mel frames from the current start on are
    kept, so memory does not grow with the sound's length. ``source`` is a sound file (streamed through ffmpeg)
    or mono 16 kHz samples.
    """

    def __init__(self, source: str | os.PathLike | np.ndarray):
        if isinstance(source, np.ndarray):
            blocks: Iterable[np.ndarray] = (source[i:i + _BLOCK * HOP] for i in range(0, source.size, _BLOCK * HOP))
        else:
            blocks = iter_audio(source)
        self._frames = iter_mel(blocks)
        self._mel = np.empty((N_MELS, 0), np.float32)
        self._offset = 0         # absolute index of self._mel's first column

    def take(self, starts: np.ndarray) -> torch.Tensor:
        starts = np.asarray(starts, np.int64)
        if starts.size == 0:
            return torch.empty(0, 1, N_MELS, MEL_STEP)
        if starts[0] < self._offset:
            raise ValueError(f"window starts must not go back: {starts[0]} after {self._offset}")
        end = int(starts.max()) + MEL_STEP
        while self._offset + self._mel.shape[1] < end:
            try:
                self._mel = np.concatenate((self._mel, next(self._frames)), axis=1)
            except StopIteration:
                raise MediaError(f"the sound ended at mel frame {self._offset + self._mel.shape[1]}, before "
                                 f"window end {end}; was it changed while being read?") from None
        windows = mel_windows(self._mel, starts - self._offset)
        drop = int(starts[-1]) - self._offset
        self._mel, self._offset = self._mel[:, drop:], self._offset + drop
        return windows


def synthetic_speech(seconds: float = 2.0, sr: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """A speech-like test sound for demos without a recording: harmonics of a gliding voice pitch (110-230 Hz)
    under a 2.5 Hz syllable rhythm, with a little noise. Mono float32 in [-1, 1], shape (seconds * sr,)."""
    t = np.arange(int(round(seconds * sr))) / sr
    phase = 2 * np.pi * np.cumsum(110 + 60 * (1 + np.sin(np.pi * t / max(seconds, 1e-3)))) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 0.5
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return np.clip(0.3 * syllables * voice + 0.02 * noise, -1, 1).astype(np.float32)


def _hann(n: int) -> np.ndarray:
    """Periodic Hann window (scipy's ``get_window('hann', n, fftbins=True)``, which librosa uses)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def _hz_to_mel(f):
    """Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per 6.4x)."""
    f = np.asarray(f, np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m):
    m = np.asarray(m, np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def _resample(x: np.ndarray, sr: int) -> np.ndarray:
    from scipy.signal import resample_poly

    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise MediaError(f"sample rate must be a positive integer, got {sr!r}")
    ratio = Fraction(SAMPLE_RATE, int(sr))
    return resample_poly(x, ratio.numerator, ratio.denominator)

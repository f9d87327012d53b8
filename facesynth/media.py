"""Reading and writing images, videos and audio; the one place where pixels change representation.

Inside the library images are float tensors ``[N,3,H,W]`` in ``[0,1]``, RGB. At the edges (files,
widgets) they are uint8 ``H×W×3`` RGB arrays. Videos are streamed frame by frame through the ffmpeg binary
that imageio-ffmpeg ships: a long video is never held whole in memory.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from facesynth.errors import MediaError
from facesynth.fileio import current_umask

if TYPE_CHECKING:        # torch is imported where tensors are made, so reading media does not load it
    import torch

__all__ = ["IMAGE_EXTS", "VIDEO_EXTS", "VideoInfo", "MediaWarning", "ffmpeg_exe", "probe", "is_video", "is_image",
           "list_images", "iter_frames", "sample_indices", "read_image", "write_image", "VideoWriter", "write_video",
           "has_audio", "read_audio", "write_wav", "to_tensor", "to_image"]

MP4_EXTS = frozenset({".mp4", ".m4v", ".mov"})     # what VideoWriter writes: H.264 in an MP4 container
IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_EXTS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".gif",
                        ".3gp", ".ts"})


class MediaWarning(UserWarning):
    """Something about the input was not as expected but the readable part was used (e.g. a truncated video)."""


@dataclass(frozen=True)
class VideoInfo:
    """What ffmpeg says about a video file before decoding it."""
    path: Path
    fps: float
    width: int
    height: int
    duration: float          # seconds, from the container (0.0 when unknown)
    has_audio: bool
    codec: str

    @property
    def frame_count(self) -> int:
        """Frames expected from the container's duration and rate (an estimate; decoding gives the truth)."""
        return int(round(self.duration * self.fps)) if self.duration > 0 else 0


def ffmpeg_exe() -> str:
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def _check_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{p}: file not found; check the path")
    if p.is_dir():
        raise MediaError(f"{p}: is a folder, expected a file")
    if p.stat().st_size == 0:
        raise MediaError(f"{p}: file is empty (0 bytes); re-copy or re-download it")
    return p


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def is_image(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p) and not p.name.startswith("."))


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO_STREAM = re.compile(r"Stream #\S+.*?: Video: (\w+).*?, (\d{2,5})x(\d{2,5})")
_FPS = re.compile(r"([\d.]+) (?:fps|tbr)")


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's rate, size, duration and whether it has an audio track, without decoding it.

    Raises MediaError for a missing, empty, unreadable or non-video file.
    """
    p = _check_file(path)
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(p)], capture_output=True,
                         text=True, errors="replace").stderr
    m = _VIDEO_STREAM.search(out)
    if m is not None and m.group(1) == "ansi":  # ffmpeg's tty demuxer shows any text file as an 'ansi' video
        raise MediaError(f"{p}: is a text file, not a video; check the path")
    if m is None:
        reason = out.strip().splitlines()[-1] if out.strip() else "no output from ffmpeg"
        if "moov atom not found" in out:
            reason = "the file is damaged or incomplete: its index (the 'moov atom') is missing, as after a cut-off download"
        raise MediaError(f"{p}: not a readable video ({reason}); check the file or convert it with ffmpeg")
    video_line = out[m.start():].splitlines()[0]
    fps_m = _FPS.search(video_line)
    fps = float(fps_m.group(1)) if fps_m else 25.0
    d = _DURATION.search(out)
    duration = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3)) if d else 0.0
    audio = re.search(r"Stream #\S+.*?: Audio:", out) is not None
    return VideoInfo(path=p, fps=fps, width=int(m.group(2)), height=int(m.group(3)), duration=duration,
                     has_audio=audio, codec=m.group(1))


def has_audio(path: str | os.PathLike) -> bool:
    """True when the file (a video or an audio file) has an audio stream."""
    p = _check_file(path)
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(p)], capture_output=True,
                         text=True, errors="replace").stderr
    return re.search(r"Stream #\S+.*?: Audio:", out) is not None


def sample_indices(source_fps: float, fps: float | None) -> Iterator[int]:
    """Infinite increasing stream of the source frame indices to keep when sampling at ``fps``.

    ``fps=None`` (or a rate at or above the source's) keeps every frame. Otherwise frame ``i`` is kept when it
    is the first frame at or after the time ``k / fps`` of the k-th output frame, so the kept frames are
    evenly spread and the first frame is always kept.
    """
    if fps is not None and fps <= 0:
        raise MediaError(f"fps must be positive or None (every frame), got {fps}")
    i = 0
    k = 0
    while True:
        if fps is None or fps >= source_fps:
            yield i
            i += 1
            continue
        # first source index whose timestamp i/source_fps reaches k/fps (tolerance for float rates like 29.97)
        i = int(np.ceil(k * source_fps / fps - 1e-6))
        yield i
        k += 1


def iter_frames(path: str | os.PathLike, fps: float | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Stream a video's frames as ``(source_index, uint8 H×W×3 RGB)``, sampled at ``fps`` (None: every frame).

    Memory stays at one frame however long the video. A truncated file gives its readable frames and a
    MediaWarning that says how many were read of how many expected.
    """
    import imageio_ffmpeg

    info = probe(path)
    keep = sample_indices(info.fps, fps)
    next_keep = next(keep)
    reader = imageio_ffmpeg.read_frames(str(info.path), pix_fmt="rgb24", input_params=["-nostdin"])
    try:
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as e:
        raise MediaError(f"{info.path}: ffmpeg could not open the video ({str(e).splitlines()[0]})") from None
    w, h = meta["size"]
    n_read = 0
    try:
        while True:
            try:
                buf = next(reader)
            except StopIteration:
                break
            except RuntimeError as e:   # ffmpeg stopped in the middle of a frame
                warnings.warn(f"{info.path}: decoding stopped early ({str(e).splitlines()[0]})", MediaWarning,
                              stacklevel=2)
                break
            index = n_read
            n_read += 1
            if index == next_keep:
                next_keep = next(keep)
                yield index, np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)
    finally:
        reader.close()
    if n_read == 0:
        raise MediaError(f"{info.path}: no frame could be decoded; the file is damaged or not a video")
    expected = info.frame_count
    if expected and n_read < expected - max(2, int(0.02 * expected)):
        warnings.warn(f"{info.path}: read {n_read} of about {expected} frames; the file looks truncated, "
                      f"using the {n_read} readable frames", MediaWarning, stacklevel=2)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 ``H×W×3`` RGB.

    EXIF rotation is applied; grey becomes RGB; an alpha channel is composited over white; 16-bit and float
    images are scaled to 8 bits. Raises MediaError for a missing, empty, damaged or non-image file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = _check_file(path)
    try:
        with Image.open(p) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return _pil_to_rgb(im)
    except UnidentifiedImageError:
        raise MediaError(f"{p}: not an image file PIL can read; use PNG or JPEG") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise MediaError(f"{p}: damaged image ({e}); re-export or re-download it") from None


def _pil_to_rgb(im) -> np.ndarray:
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def write_image(path: str | os.PathLike, image: np.ndarray | torch.Tensor, quality: int = 95,
                compress_level: int = 6) -> Path:
    """Write uint8 ``H×W×3`` RGB, ``H×W`` grey, or a float ``[3,H,W]``/``[1,3,H,W]`` tensor in [0,1].

    ``quality`` is JPEG's and WebP's; ``compress_level`` is PNG's zlib level (0-9, Pillow's default 6; lower
    writes faster and larger, the pixels are the same). The file appears complete or not at all (written to a
    temporary name, then renamed).
    """
    from PIL import Image

    p = Path(path)
    arr = to_image(image) if _is_tensor(image) else np.asarray(image)
    if arr.dtype != np.uint8:
        raise MediaError(f"write_image expects uint8 pixels, got {arr.dtype}; use facesynth.media.to_image")
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4))):
        raise MediaError(f"write_image expects H×W, H×W×3 or H×W×4 pixels, got shape {arr.shape}")
    p.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF",
           ".tiff": "TIFF"}.get(p.suffix.lower())
    if fmt is None:
        raise MediaError(f"{p}: unknown image extension; use .png or .jpg")
    tmp = p.with_name(f".{p.name}.tmp")
    img = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    kwargs = {"JPEG": {"quality": quality}, "WEBP": {"quality": quality},
              "PNG": {"compress_level": compress_level}}.get(fmt, {})
    try:
        img.save(tmp, format=fmt, **kwargs)
        os.replace(tmp, p)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise MediaError(f"{p}: could not write the image ({e})") from None
    return p


def _is_tensor(x) -> bool:
    """A torch tensor, recognised without importing torch (it is loaded whenever a tensor exists)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def to_tensor(images: np.ndarray | Iterable[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``H×W×3`` (or ``N×H×W×3``, or a list of equal-size images) → float ``[N,3,H,W]`` in [0,1]."""
    arr = np.asarray(images) if isinstance(images, np.ndarray) else np.stack(list(images))
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise MediaError(f"to_tensor expects H×W×3 or N×H×W×3 RGB images, got shape {arr.shape}")
    import torch

    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """float ``[3,H,W]`` → uint8 ``H×W×3``; ``[N,3,H,W]`` → uint8 ``N×H×W×3``. Values are clipped to [0,1]."""
    import torch

    t = tensor.detach().float().clamp(0, 1).mul(255.0).round_().to(torch.uint8).cpu()
    if t.dim() == 3:
        return t.permute(1, 2, 0).numpy()
    if t.dim() == 4:
        return t.permute(0, 2, 3, 1).numpy()
    raise MediaError(f"to_image expects [3,H,W] or [N,3,H,W], got {tuple(t.shape)}")


class VideoWriter:
    """Stream frames into an H.264 MP4 (yuv420p, faststart), optionally muxing an audio track at close.

    ``audio`` is any file with an audio stream (a wav, or the source video whose sound should be kept);
    a file without one is skipped with a MediaWarning. The video keeps every frame: shorter audio is padded
    with silence, longer audio is cut at the video's end. Odd frame sizes are padded by one edge pixel
    (H.264 in yuv420p needs even sizes). The output appears only when complete::

        with VideoWriter("out.mp4", fps=25, audio="speech.wav") as w:
            for frame in frames:          # uint8 H×W×3 RGB
                w.write(frame)
    """

    def __init__(self, path: str | os.PathLike, fps: float, audio: str | os.PathLike | None = None,
                 crf: int = 18, preset: str = "medium"):
        if not fps or fps <= 0:
            raise MediaError(f"video fps must be positive, got {fps}")
        self.path = Path(path)
        if self.path.suffix.lower() not in MP4_EXTS:
            raise MediaError(f"{self.path}: videos are written as H.264 MP4, so the name must end in .mp4 (or "
                             f".m4v, .mov), not {self.path.suffix or 'nothing'!r}")
        self.fps = float(fps)
        self.audio = Path(audio) if audio is not None else None
        self.crf, self.preset = crf, preset
        self.frames_written = 0
        self._gen = None
        self._size: tuple[int, int] | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".mp4", prefix=f".{self.path.stem}.", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)

    def write(self, frame: np.ndarray | torch.Tensor) -> None:
        import imageio_ffmpeg

        arr = to_image(frame) if _is_tensor(frame) else np.asarray(frame)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise MediaError(f"VideoWriter.write expects uint8 H×W×3 RGB, got {arr.dtype} {arr.shape}")
        h, w = arr.shape[:2]
        if self._gen is None:
            self._size = (w, h)
            self._gen = imageio_ffmpeg.write_frames(
                str(self._tmp), (w + w % 2, h + h % 2), fps=self.fps, codec="libx264", pix_fmt_in="rgb24",
                pix_fmt_out="yuv420p", quality=None, macro_block_size=1, ffmpeg_log_level="error",
                output_params=["-crf", str(self.crf), "-preset", self.preset, "-movflags", "+faststart"])
            self._gen.send(None)
        elif (w, h) != self._size:
            raise MediaError(f"all frames of a video must have one size: first was {self._size}, got {(w, h)}")
        if w % 2 or h % 2:
            arr = np.pad(arr, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        self._gen.send(np.ascontiguousarray(arr))
        self.frames_written += 1

    def close(self) -> Path:
        if self._gen is None:
            self._tmp.unlink(missing_ok=True)
            raise MediaError(f"{self.path}: no frame was written, so no video was made")
        self._gen.close()
        self._gen = None
        try:
            if self.audio is not None and has_audio(self.audio):
                self._mux_audio()
            elif self.audio is not None:
                warnings.warn(f"{self.audio}: has no audio track; {self.path} is silent", MediaWarning,
                              stacklevel=2)
            os.chmod(self._tmp, 0o666 & ~current_umask())     # mkstemp made it 0600; a video is meant to be shared
            os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)
        return self.path

    def _mux_audio(self) -> None:
        muxed = self._tmp.with_name(self._tmp.stem + ".av.mp4")
        cmd = [ffmpeg_exe(), "-y", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(self._tmp),
               "-i", str(self.audio), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac",
               "-b:a", "192k", "-af", "apad", "-shortest", "-movflags", "+faststart", str(muxed)]
        res = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if res.returncode != 0:
            muxed.unlink(missing_ok=True)
            raise MediaError(f"could not add the audio of {self.audio} to {self.path}: {res.stderr.strip()[-300:]}")
        os.replace(muxed, self._tmp)

    def abort(self) -> None:
        if self._gen is not None:
            self._gen.close()
            self._gen = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray | torch.Tensor], fps: float,
                audio: str | os.PathLike | None = None) -> Path:
    """Write an iterable of uint8 ``H×W×3`` frames (or [3,H,W] tensors) as MP4, with optional audio muxed."""
    with VideoWriter(path, fps, audio=audio) as w:
        for frame in frames:
            w.write(frame)
    return Path(path)


def read_audio(path: str | os.PathLike, sr: int = 16000) -> np.ndarray:
    """Decode the audio track of any file as mono float32 in [-1,1] at ``sr`` Hz (ffmpeg resamples)."""
    p = _check_file(path)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(p), "-vn", "-ac", "1",
           "-ar", str(sr), "-f", "s16le", "-acodec", "pcm_s16le", "-"]
    res = subprocess.run(cmd, capture_output=True)
    if res.returncode != 0 or not res.stdout:
        msg = res.stderr.decode(errors="replace").strip().splitlines()
        raise MediaError(f"{p}: no audio could be decoded ({msg[-1] if msg else 'no audio stream'})")
    return np.frombuffer(res.stdout, dtype="<i2").astype(np.float32) / 32768.0


def write_wav(path: str | os.PathLike, audio: np.ndarray, sr: int) -> Path:
    """Write mono float audio in [-1,1] as 16-bit PCM WAV (atomically)."""
    import wave

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(np.asarray(audio, dtype=np.float64), -1, 1) * 32767).astype("<i2")
    tmp = p.with_name(f".{p.name}.tmp")
    with wave.open(str(tmp), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sr)
        f.writeframes(pcm.tobytes())
    os.replace(tmp, p)
    return p

"""An invisible 64-bit facesynth watermark in the luma of images and of every tenth video frame.

The embedding rule is invisible-watermark's ``dwtDct`` (``imwatermark.maxDct.EmbedMaxDct``): one Haar DWT level, then
in each 4×4 block of the approximation band the largest coefficient (the first excluded) is quantised onto one of two
lattices, one per bit, the 64 payload bits repeated over the blocks. It is applied to luma with scale 24 rather than
the package's default chroma (U, scale 36), because JPEG and H.264 halve chroma resolution and the mark in U did not
survive a JPEG re-save even at quality 95 (measured: 33 of 64 bits wrong, i.e. chance). The DWT round trip is done
here: the package's own ``encode`` swaps the horizontal and vertical detail bands when it inverts the DWT
(``pywt.idwt2((ca1, (v1, h1, d1)))`` in ``maxDct.py``) and writes floats back into uint8 without clipping, which
is harmless in U but costs about 25 dB PSNR in Y. Decoding needs only the forward DWT, so the package's own decoder
reads the mark: ``WatermarkDecoder("bytes", 64).decode(bgr, "dwtDct", scales=[24, 0, 0])``.

Measured on the astronaut sample (512×512): PSNR 46.5 dB, max change 9 levels; 0 of 64 bits wrong after a JPEG
re-save at quality 80, 3 at quality 60. In video, H.264 at CRF 18 (VideoWriter's default) keeps the mark in enough
blocks that votes pooled over the marked frames recover it; a re-encode at CRF 23 or worse erases it (the C2PA
manifest and the hash chain are the evidence then, not the watermark). invisible-watermark refuses images under
256×256 pixels (65,536 in area); such outputs are left unmarked and the provenance record says why.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

__all__ = ["PAYLOAD", "SCALE", "INTERVAL", "MIN_PIXELS", "WatermarkReading", "watermark_skip_reason",
           "watermark_frame", "watermark_frames", "read_watermark", "WatermarkVotes"]

PAYLOAD = b"facesyn1"       # 64 bits; the last byte is the payload's version
SCALE = 24                  # lattice step in luma levels: 46.5 dB PSNR, survives JPEG q80 (scale 16: q80 too, 12: not)
INTERVAL = 10               # video: frames 0, 10, 20, ... carry the mark
MIN_PIXELS = 256 * 256      # invisible-watermark's own lower limit (WatermarkEncoder.encode)
_BLOCK = 4
_BITS = np.unpackbits(np.frombuffer(PAYLOAD, np.uint8))
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)     # cv2's BGR2YUV luma, which the package's decoder uses
# Found when the votes pooled over all marked frames miss at most 12 of 64 bits, or one frame misses at most 6.
# By chance (an unmarked image decodes to about 32 wrong bits): P(≤12) ≈ 2e-7, P(≤6) ≈ 4e-12 per frame and shift.
MAX_POOLED_ERRORS, MAX_FRAME_ERRORS = 12, 6


@dataclass(frozen=True)
class WatermarkReading:
    """What a read found: ``found``, the wrong bits of 64 pooled over ``frames`` marked frames and in the best one."""
    found: bool
    bit_errors: int | None           # pooled over every frame read; None when nothing could be read
    best_frame_errors: int | None
    frames: int                      # frames (1 for an image) the votes came from
    reason: str | None = None        # why nothing could be read (too small)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.reason:
            return f"not readable: {self.reason}"
        where = "the image" if self.frames == 1 else f"{self.frames} marked frames"
        if self.found:
            return f"found ({self.bit_errors} of 64 bits wrong over {where})"
        return f"not found ({self.bit_errors} of 64 bits wrong over {where}; about 32 is chance)"


def watermark_skip_reason(height: int, width: int) -> str | None:
    """Why an image of this size cannot carry the mark, or None when it can."""
    if height * width < MIN_PIXELS:
        return (f"{width}x{height} is below the 256x256 pixels ({MIN_PIXELS} in area) that invisible-watermark's "
                f"dwtDct needs")
    return None


def watermark_frame(frame: np.ndarray) -> np.ndarray:
    """Embed the facesynth payload into a uint8 ``H×W×3`` RGB image; returns a new array of the same shape.

    An image smaller than 256×256 pixels is returned unchanged (see ``watermark_skip_reason``).
    """
    import pywt

    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"watermark_frame expects uint8 H×W×3 RGB, got {frame.dtype} {frame.shape}")
    h, w = frame.shape[:2]
    if watermark_skip_reason(h, w):
        return frame.copy()
    rgb = frame.astype(np.float32)
    y = rgb @ _LUMA
    h4, w4 = h // 4 * 4, w // 4 * 4       # the package marks the largest area divisible by 4, as here
    approx, details = pywt.dwt2(y[:h4, :w4], "haar")
    _embed_max_dct()(list(_BITS), wmLen=len(_BITS), block=_BLOCK).encode_frame(approx, SCALE)
    delta = np.zeros_like(y)
    delta[:h4, :w4] = pywt.idwt2((approx, details), "haar") - y[:h4, :w4]
    # adding the same amount to R, G and B changes luma by it and leaves both chroma components as they were
    return np.clip(np.rint(rgb + delta[..., None]), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def _embed_max_dct():
    """invisible-watermark's ``EmbedMaxDct``, loaded from its file: the package's ``__init__`` imports its rivaGan
    method, which imports torch (4.5 s here), and ``maxDct.py`` itself needs only numpy, cv2 and pywt."""
    spec = importlib.util.find_spec("imwatermark")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the invisible watermark needs invisible-watermark: pip install invisible-watermark")
    path = Path(list(spec.submodule_search_locations)[0]) / "maxDct.py"
    module_spec = importlib.util.spec_from_file_location("_facesynth_imwatermark_maxdct", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.EmbedMaxDct


def watermark_frames(frames: Iterable[np.ndarray], interval: int = INTERVAL) -> Iterator[np.ndarray]:
    """Yield the frames with the mark embedded in frames 0, ``interval``, 2·``interval``, … (others unchanged)."""
    for i, frame in enumerate(frames):
        yield watermark_frame(frame) if i % interval == 0 else frame


class WatermarkVotes:
    """Pools the block votes of several frames (``add``) into one reading (``reading``).

    Decoding follows ``EmbedMaxDct.decode_frame`` (vectorised here: the package loops over blocks in Python), with
    one addition: the votes are also taken with the luma shifted by -2…+2 levels in steps of 0.5 and the best shift
    is kept. A quantisation mark is read on an absolute lattice, so a uniform level shift moves every block toward
    the wrong bit; VideoWriter's RGB → YUV conversion shifts luma by about +1.2 levels, which alone raised the
    pooled errors on the sample clip from 8 to 17 of 64. Nine shifts make chance detection nine times likelier
    (still ≈ 2e-6 pooled).
    """

    _SHIFTS = np.arange(-2.0, 2.01, 0.5)

    def __init__(self):
        self._ones = np.zeros((len(self._SHIFTS), len(_BITS)))
        self._count = np.zeros(len(_BITS))
        self.frames = 0
        self.best: int | None = None
        self.reason: str | None = None

    def add(self, luma: np.ndarray) -> None:
        """Add one frame given as luma in [0,255] (``H×W`` float), e.g. ``rgb @ [0.299, 0.587, 0.114]``."""
        import pywt

        h, w = luma.shape
        reason = watermark_skip_reason(h, w)
        if reason:
            self.reason = reason
            return
        approx, _ = pywt.dwt2(np.asarray(luma, np.float64)[:h // 4 * 4, :w // 4 * 4], "haar")
        rows, cols = approx.shape[0] // _BLOCK, approx.shape[1] // _BLOCK
        blocks = (approx[:rows * _BLOCK, :cols * _BLOCK].reshape(rows, _BLOCK, cols, _BLOCK)
                  .transpose(0, 2, 1, 3).reshape(rows * cols, _BLOCK * _BLOCK))
        pos = np.argmax(np.abs(blocks[:, 1:]), axis=1) + 1           # the largest coefficient, the first excluded
        value = blocks[np.arange(len(blocks)), pos]
        bit_of_block = np.arange(len(blocks)) % len(_BITS)            # blocks take the bits in turn, row by row
        count = np.bincount(bit_of_block, minlength=len(_BITS))
        # a luma shift of d moves an approximation coefficient (a 2×2 sum / 2) by 2d
        votes = (np.abs(value[None, :] + 2 * self._SHIFTS[:, None]) % SCALE) > 0.5 * SCALE
        ones = np.stack([np.bincount(bit_of_block, weights=v, minlength=len(_BITS)) for v in votes])
        errors = ((ones / count > 0.5) != _BITS).sum(axis=1)
        self.best = int(errors.min()) if self.best is None else min(self.best, int(errors.min()))
        self._ones += ones
        self._count += count
        self.frames += 1

    def add_rgb(self, frame: np.ndarray) -> None:
        self.add(np.asarray(frame, np.float32) @ _LUMA)

    def reading(self) -> WatermarkReading:
        if self.frames == 0:
            return WatermarkReading(False, None, None, 0, self.reason or "no frame was read")
        pooled = int(((self._ones / self._count > 0.5) != _BITS).sum(axis=1).min())
        found = pooled <= MAX_POOLED_ERRORS or self.best <= MAX_FRAME_ERRORS
        return WatermarkReading(found, pooled, self.best, self.frames)


def read_watermark(source: str | os.PathLike | np.ndarray, interval: int = INTERVAL) -> WatermarkReading:
    """Look for the facesynth mark in an image array (uint8 ``H×W×3`` RGB), an image file, or a video file.

    A video is read at frames 0, ``interval``, 2·``interval``, … and the votes of those frames are pooled.
    """
    from facesynth.media import is_video, iter_frames, read_image

    votes = WatermarkVotes()
    if isinstance(source, np.ndarray):
        votes.add_rgb(source)
    elif is_video(source):
        for i, frame in iter_frames(source):
            if i % interval == 0:
                votes.add_rgb(frame)
    else:
        votes.add_rgb(read_image(source))
    return votes.reading()

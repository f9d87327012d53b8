"""facesynth.media on the real sample video and portraits, and on files these tests make."""
from __future__ import annotations

import subprocess
import warnings
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facesynth import media
from facesynth.errors import MediaError
from facesynth.media import MediaWarning

N_FRAMES = 120
W, H = 176, 144


@pytest.fixture(scope="module")
def all_frames(samples) -> list[tuple[int, np.ndarray]]:
    return list(media.iter_frames(samples.talking_head))


def _media_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, MediaWarning)]


def _only_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------------------------- probe / frames

def test_probe_sample(samples):
    info = media.probe(samples.talking_head)
    assert info.fps == pytest.approx(29.97, abs=0.005)
    assert (info.width, info.height) == (W, H)
    assert info.duration == pytest.approx(4.0, abs=0.02)
    assert info.has_audio is False
    assert info.frame_count == N_FRAMES
    assert info.codec == "h264"
    assert media.has_audio(samples.talking_head) is False


def test_iter_frames_every_frame(all_frames):
    assert len(all_frames) == N_FRAMES
    assert [i for i, _ in all_frames] == list(range(N_FRAMES))
    for _, f in all_frames:
        assert f.shape == (H, W, 3) and f.dtype == np.uint8
    # a real video: frames differ from one another and are not blank
    assert not np.array_equal(all_frames[0][1], all_frames[-1][1])
    assert 20 < all_frames[0][1].mean() < 235


def test_iter_frames_decoding_is_repeatable(samples, all_frames):
    first = list(islice(media.iter_frames(samples.talking_head), 5))
    for (i, a), (j, b) in zip(first, all_frames[:5]):
        assert i == j and np.array_equal(a, b)


def test_iter_frames_at_10_fps(samples, all_frames):
    got = list(media.iter_frames(samples.talking_head, fps=10))
    assert len(got) == 40
    assert [i for i, _ in got] == list(range(0, N_FRAMES, 3))
    for i, f in got:
        assert np.array_equal(f, all_frames[i][1])


@pytest.mark.parametrize("fps", [None, 60, 29.97])
def test_iter_frames_at_or_above_source_rate_keeps_all(samples, fps):
    got = [i for i, _ in media.iter_frames(samples.talking_head, fps=fps)]
    assert got == list(range(N_FRAMES))


def test_iter_frames_bad_fps(samples):
    with pytest.raises(MediaError):
        next(media.iter_frames(samples.talking_head, fps=0))


def test_sample_indices_every_frame():
    assert list(islice(media.sample_indices(25.0, None), 6)) == [0, 1, 2, 3, 4, 5]
    assert list(islice(media.sample_indices(25.0, 25.0), 6)) == [0, 1, 2, 3, 4, 5]
    assert list(islice(media.sample_indices(25.0, 100.0), 6)) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("src, fps, expected", [
    (30.0, 7.5, [0, 4, 8, 12, 16, 20]),
    (25.0, 10.0, [0, 3, 5, 8, 10, 13]),
    (29.97, 10.0, [0, 3, 6, 9, 12, 15]),
    (30000 / 1001, 15.0, [0, 2, 4, 6, 8, 10]),
])
def test_sample_indices_exact(src, fps, expected):
    assert list(islice(media.sample_indices(src, fps), len(expected))) == expected


@pytest.mark.parametrize("src, fps", [(29.97, 10.0), (25.0, 10.0), (30.0, 7.0), (59.94, 24.0), (24.0, 23.0)])
def test_sample_indices_properties(src, fps):
    idx = list(islice(media.sample_indices(src, fps), 500))
    assert idx[0] == 0
    gaps = np.diff(idx)
    assert (gaps > 0).all()                                       # strictly increasing, no duplicates
    ratio = src / fps
    assert set(gaps.tolist()) <= {int(np.floor(ratio)), int(np.ceil(ratio))}   # evenly spread
    # kept frame k is the first at or after time k/fps
    for k, i in enumerate(idx):
        assert i / src >= k / fps - 1e-6
        assert (i - 1) / src < k / fps
    # over 10 s of source, the count kept matches the rate to one frame
    n_src = int(10 * src)
    assert abs(sum(1 for i in idx if i < n_src) - 10 * fps) <= 1


@pytest.mark.parametrize("fps", [0, -5])
def test_sample_indices_rejects_non_positive(fps):
    with pytest.raises(MediaError):
        next(media.sample_indices(25.0, fps))


# ------------------------------------------------------------------------------------------------ write video

def _flat(h, w, colour) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, np.uint8), (h, w, 3)).copy()


def test_write_video_round_trip(tmp_path):
    colours = [((17 * i) % 256, (255 - 9 * i) % 256, 128) for i in range(30)]
    frames = [_flat(64, 96, c) for c in colours]
    out = media.write_video(tmp_path / "flat.mp4", frames, fps=15)
    assert out == tmp_path / "flat.mp4"
    assert _only_files(tmp_path) == ["flat.mp4"]            # no temp file left behind
    info = media.probe(out)
    assert (info.width, info.height) == (96, 64)
    assert info.fps == pytest.approx(15, abs=0.01)
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.has_audio is False
    back = list(media.iter_frames(out))
    assert len(back) == 30
    for (_, f), c in zip(back, colours):
        assert f.shape == (64, 96, 3)
        assert np.abs(f.astype(int) - np.asarray(c)).max() <= 6
        assert np.abs(f.reshape(-1, 3).mean(0) - np.asarray(c)).max() <= 3


def test_write_video_smooth_gradient_and_tensor_frames(tmp_path):
    yy, xx = np.mgrid[0:48, 0:64]
    frames = []
    for t in range(10):
        f = np.stack([xx * 4 % 256, yy * 5, np.full_like(xx, 20 * t)], axis=-1).astype(np.uint8)
        frames.append(f)
    tensors = [media.to_tensor(f)[0] for f in frames]        # [3,H,W] float tensors are accepted too
    with media.VideoWriter(tmp_path / "grad.mp4", fps=24.0) as w:
        for t in tensors:
            w.write(t)
    assert w.frames_written == 10
    back = [f for _, f in media.iter_frames(tmp_path / "grad.mp4")]
    assert len(back) == 10
    for a, b in zip(frames, back):
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.mean() < 2.0 and diff.max() <= 16
    assert media.probe(tmp_path / "grad.mp4").fps == pytest.approx(24.0, abs=0.01)


def test_write_video_odd_size_is_padded_by_edge(tmp_path):
    colour = (200, 100, 50)
    frames = [_flat(21, 33, colour)] * 8
    media.write_video(tmp_path / "odd.mp4", frames, fps=12.5)
    info = media.probe(tmp_path / "odd.mp4")
    assert (info.width, info.height) == (34, 22)              # padded one pixel each way (yuv420p needs even)
    assert info.fps == pytest.approx(12.5, abs=0.01)
    back = [f for _, f in media.iter_frames(tmp_path / "odd.mp4")]
    assert len(back) == 8
    for f in back:
        assert f.shape == (22, 34, 3)
        assert np.abs(f.astype(int) - np.asarray(colour)).max() <= 6    # padding repeats the edge colour


def test_video_writer_errors_leave_nothing(tmp_path):
    with pytest.raises(MediaError):
        media.VideoWriter(tmp_path / "x.mp4", fps=0)
    with pytest.raises(MediaError, match="one size"):
        with media.VideoWriter(tmp_path / "mixed.mp4", fps=10) as w:
            w.write(_flat(16, 16, (1, 2, 3)))
            w.write(_flat(16, 18, (1, 2, 3)))
    with pytest.raises(MediaError, match="no frame"):
        media.VideoWriter(tmp_path / "empty.mp4", fps=10).close()
    with pytest.raises(MediaError):
        with media.VideoWriter(tmp_path / "grey.mp4", fps=10) as w:
            w.write(np.zeros((16, 16), np.uint8))
    assert _only_files(tmp_path) == []


def test_write_video_with_audio(tmp_path):
    sr, dur, freq = 16000, 2.0, 440.0
    t = np.arange(int(sr * dur)) / sr
    wav = media.write_wav(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * freq * t), sr)
    assert media.has_audio(wav)
    pcm = media.read_audio(wav, sr=sr)
    assert len(pcm) == int(sr * dur)
    assert np.abs(pcm).max() == pytest.approx(0.5, abs=0.01)

    frames = [_flat(64, 80, (i * 5, 90, 160)) for i in range(50)]      # 2 s at 25 fps
    out = media.write_video(tmp_path / "av.mp4", frames, fps=25, audio=wav)
    assert media.has_audio(out) is True
    info = media.probe(out)
    assert info.has_audio is True
    assert info.duration == pytest.approx(dur, abs=0.1)
    assert len(list(media.iter_frames(out))) == 50
    audio = media.read_audio(out, sr=16000)
    assert abs(len(audio) - dur * 16000) <= 2048                # aac priming/padding: about one 1024-sample frame
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    peak_hz = np.argmax(spectrum) * 16000 / len(audio)
    assert peak_hz == pytest.approx(freq, abs=2.0)
    assert np.sqrt(np.mean(audio ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["av.mp4", "tone.wav"]


def test_silent_audio_source_warns_and_writes_silent_video(tmp_path, samples):
    frames = [_flat(32, 32, (50, 60, 70))] * 5
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        media.write_video(tmp_path / "silent.mp4", frames, fps=10, audio=samples.talking_head)
    msgs = _media_warnings(rec)
    assert len(msgs) == 1 and "no audio" in msgs[0]
    assert media.has_audio(tmp_path / "silent.mp4") is False
    assert len(list(media.iter_frames(tmp_path / "silent.mp4"))) == 5
    with pytest.raises(MediaError):
        media.read_audio(tmp_path / "silent.mp4")


# ------------------------------------------------------------------------------------------------ images

def test_read_sample_portraits(samples):
    a = media.read_image(samples.astronaut)
    g = media.read_image(samples.grace_hopper)
    assert a.shape == (512, 512, 3) and a.dtype == np.uint8
    assert g.shape == (600, 512, 3) and g.dtype == np.uint8
    assert sorted(p.name for p in media.list_images(samples.portraits)) == ["astronaut.png", "grace_hopper.jpg"]


def test_read_grey_png(tmp_path):
    grey = (np.arange(30 * 40).reshape(30, 40) % 256).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "L"
    img = media.read_image(tmp_path / "g.png")
    assert img.shape == (30, 40, 3) and img.dtype == np.uint8
    for c in range(3):
        assert np.array_equal(img[..., c], grey)


def test_read_rgba_png_composited_over_white(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[...] = (10, 20, 30, 255)
    rgba[0, 0] = (10, 20, 30, 0)          # fully transparent → white
    rgba[1, 1] = (0, 0, 0, 128)           # half transparent black → mid grey
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = media.read_image(tmp_path / "a.png")
    assert img.shape == (4, 5, 3)
    assert img[0, 0].tolist() == [255, 255, 255]
    assert img[2, 3].tolist() == [10, 20, 30]
    assert np.abs(img[1, 1].astype(int) - 127).max() <= 1


def test_read_16bit_grey_png(tmp_path):
    k = np.arange(256, dtype=np.uint16)
    a16 = np.tile(k * 257, (3, 1))                          # full 16-bit range: k*257 maps to k exactly
    Image.fromarray(a16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    img = media.read_image(tmp_path / "g16.png")
    assert img.shape == (3, 256, 3) and img.dtype == np.uint8
    assert np.array_equal(img[0, :, 0], k.astype(np.uint8))
    assert np.array_equal(img[..., 0], img[..., 2])
    # a dark 16-bit image stays dark (is not read as if it were 8-bit)
    Image.fromarray(np.full((2, 2), 1000, np.uint16)).save(tmp_path / "dark16.png")
    assert media.read_image(tmp_path / "dark16.png")[0, 0].tolist() == [4, 4, 4]


def test_read_exif_rotated_jpeg_upright(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)                 # stored 40 wide × 20 tall
    stored[:, :20] = (255, 0, 0)                             # left half red
    stored[:, 20:] = (0, 0, 255)                             # right half blue
    im = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = 6                                         # Orientation: rotate 90° clockwise to display
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    assert np.asarray(Image.open(tmp_path / "rot.jpg")).shape == (20, 40, 3)   # PIL alone: as stored
    img = media.read_image(tmp_path / "rot.jpg")
    assert img.shape == (40, 20, 3)                          # upright: 20 wide × 40 tall
    top, bottom = img[:15].reshape(-1, 3).mean(0), img[25:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 50                      # the stored left (red) is now on top
    assert bottom[2] > 200 and bottom[0] < 50


def test_write_image_png_round_trip_exact_and_atomic(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 51, 3), dtype=np.uint8)
    out = media.write_image(tmp_path / "sub" / "x.png", img)
    assert out == tmp_path / "sub" / "x.png"
    assert np.array_equal(media.read_image(out), img)
    assert _only_files(tmp_path / "sub") == ["x.png"]
    # overwrite in place, still exact, still no temp file
    img2 = 255 - img
    media.write_image(out, img2)
    assert np.array_equal(media.read_image(out), img2)
    assert _only_files(tmp_path / "sub") == ["x.png"]


def test_png_compress_level_changes_the_size_not_the_pixels(samples, tmp_path):
    img = media.read_image(samples.grace_hopper)
    fast = media.write_image(tmp_path / "fast.png", img, compress_level=1)
    small = media.write_image(tmp_path / "small.png", img, compress_level=9)
    assert np.array_equal(media.read_image(fast), img) and np.array_equal(media.read_image(small), img)
    assert small.stat().st_size < 0.97 * fast.stat().st_size


def test_write_image_grey_tensor_and_jpeg(tmp_path):
    grey = (np.arange(12 * 16).reshape(12, 16) % 256).astype(np.uint8)
    media.write_image(tmp_path / "g.png", grey)
    assert np.array_equal(media.read_image(tmp_path / "g.png")[..., 1], grey)

    t = torch.rand(3, 10, 14, generator=torch.Generator().manual_seed(1))
    media.write_image(tmp_path / "t.png", t)
    assert np.array_equal(media.read_image(tmp_path / "t.png"), media.to_image(t))
    media.write_image(tmp_path / "t1.png", t[None])            # [1,3,H,W] too
    assert np.array_equal(media.read_image(tmp_path / "t1.png"), media.to_image(t))

    flat = _flat(32, 32, (120, 60, 200))
    media.write_image(tmp_path / "f.jpg", flat)
    assert np.abs(media.read_image(tmp_path / "f.jpg").astype(int) - (120, 60, 200)).max() <= 4


def test_write_image_rejects_bad_input(tmp_path):
    with pytest.raises(MediaError):
        media.write_image(tmp_path / "f.png", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(MediaError):
        media.write_image(tmp_path / "f.png", np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(MediaError, match="extension"):
        media.write_image(tmp_path / "f.xyz", np.zeros((4, 4, 3), np.uint8))
    assert _only_files(tmp_path) == []


# ------------------------------------------------------------------------------------------------ tensors

def test_to_tensor_to_image_round_trip():
    rng = np.random.default_rng(42)
    batch = rng.integers(0, 256, (4, 9, 7, 3), dtype=np.uint8)
    batch[0, 0, 0] = (0, 255, 128)
    t = media.to_tensor(batch)
    assert t.shape == (4, 3, 9, 7) and t.dtype == torch.float32
    assert float(t.min()) == 0.0 and float(t.max()) == 1.0
    assert t[0, :, 0, 0].tolist() == pytest.approx([0.0, 1.0, 128 / 255])
    assert np.array_equal(media.to_image(t), batch)
    single = media.to_tensor(batch[1])
    assert single.shape == (1, 3, 9, 7)
    assert np.array_equal(media.to_image(single[0]), batch[1])
    assert np.array_equal(media.to_image(media.to_tensor(list(batch))), batch)


def test_to_image_clips_and_rejects_bad_shapes():
    t = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.7]).view(1, 5, 1).expand(3, 5, 1)
    img = media.to_image(t)
    assert img.shape == (5, 1, 3) and img.dtype == np.uint8
    assert img[:, 0, 0].tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(MediaError):
        media.to_image(torch.zeros(5, 5))
    with pytest.raises(MediaError):
        media.to_tensor(np.zeros((5, 5), np.uint8))
    with pytest.raises(MediaError):
        media.to_tensor(np.zeros((2, 5, 5, 4), np.uint8))


# ------------------------------------------------------------------------------------------------ bad input

def _bad_files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(7)
    files = {
        "missing": tmp_path / "nope.mp4",
        "empty": tmp_path / "empty.mp4",
        "folder": tmp_path / "folder.mp4",
        "random_mp4": tmp_path / "random.mp4",
        "random_png": tmp_path / "random.png",
        "text": tmp_path / "notes.txt",
    }
    files["empty"].write_bytes(b"")
    files["folder"].mkdir()
    files["random_mp4"].write_bytes(rng.bytes(20000))
    files["random_png"].write_bytes(rng.bytes(20000))
    files["text"].write_text("this is not a video\n" * 50)
    return files


BAD = ["missing", "empty", "folder", "random_mp4", "random_png", "text"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_video_input(tmp_path, kind):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(MediaError):
        media.probe(path)
    with pytest.raises(MediaError):
        list(media.iter_frames(path))


@pytest.mark.parametrize("kind", BAD)
def test_bad_image_input(tmp_path, kind):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(MediaError):
        media.read_image(path)


def test_bad_input_messages_say_what(tmp_path):
    files = _bad_files(tmp_path)
    with pytest.raises(MediaError, match="not found"):
        media.read_image(files["missing"])
    with pytest.raises(MediaError, match="empty"):
        media.probe(files["empty"])
    with pytest.raises(MediaError, match="folder"):
        media.read_image(files["folder"])


def test_read_image_on_video_file_is_media_error(samples):
    with pytest.raises(MediaError):
        media.read_image(samples.talking_head)


# ------------------------------------------------------------------------------------------------ truncation

def test_truncated_faststart_video_gives_readable_frames_and_warns(tmp_path, samples, all_frames):
    fast = tmp_path / "fast.mp4"
    subprocess.run([media.ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error", "-i", str(samples.talking_head),
                    "-c", "copy", "-movflags", "+faststart", str(fast)], check=True)
    assert len(list(media.iter_frames(fast))) == N_FRAMES      # the remux itself is complete
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:int(len(data) * 0.6)])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        got = list(media.iter_frames(cut))
    n = len(got)
    assert 10 < n < N_FRAMES
    assert [i for i, _ in got] == list(range(n))
    for i in (0, n // 2, n - 1):
        assert np.array_equal(got[i][1], all_frames[i][1])      # the readable frames are the real ones
    msgs = _media_warnings(rec)
    assert len(msgs) == 1
    assert f"read {n} " in msgs[0] and "truncated" in msgs[0]


def test_truncated_plain_video_is_incomplete_error(tmp_path, samples):
    data = samples.talking_head.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:int(len(data) * 0.6)])
    with pytest.raises(MediaError, match="incomplete"):
        media.probe(cut)
    with pytest.raises(MediaError, match="incomplete"):
        list(media.iter_frames(cut))


def test_video_writer_gives_the_mode_the_umask_allows_and_refuses_other_names(tmp_path):
    import os

    previous = os.umask(0o022)
    try:
        with media.VideoWriter(tmp_path / "clip.mp4", fps=10) as w:
            for _ in range(3):
                w.write(np.zeros((16, 16, 3), np.uint8))
    finally:
        os.umask(previous)
    assert (tmp_path / "clip.mp4").stat().st_mode & 0o777 == 0o644
    with pytest.raises(MediaError, match=r"must end in \.mp4.*not '\.png'"):
        media.VideoWriter(tmp_path / "clip.png", fps=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]

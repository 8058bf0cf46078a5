import os
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from talkinghead.errors import InputError, OutputError
from talkinghead.io.atomic import atomic_output
from talkinghead.io.audio import read_audio
from talkinghead.io.image import read_image
from talkinghead.io.video import iter_frames, video_info, write_video


def encode_tone(path, codec, rate, layout, seconds=1.0, fmt=None):
    """A 440 Hz tone in any container/codec PyAV can write."""
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate, layout=layout)
        n = int(seconds * rate)
        t = np.arange(n) / rate
        ch = 1 if layout == "mono" else 2
        a = np.tile(0.3 * np.sin(2 * np.pi * 440 * t), (ch, 1)).astype(np.float32)
        sfmt = s.codec_context.codec.audio_formats[0].name
        res = av.AudioResampler(format=sfmt, layout=layout, rate=rate,
                                frame_size=s.codec_context.frame_size or 1024)
        frame = av.AudioFrame.from_ndarray(a, format="fltp", layout=layout)
        frame.sample_rate = rate
        for f in res.resample(frame) + res.resample(None):
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


@pytest.mark.parametrize("name,codec,rate,layout,fmt", [
    ("a.wav", "pcm_s16le", 44100, "stereo", None),
    ("a.mp3", "libmp3lame", 48000, "stereo", None),
    ("a.flac", "flac", 22050, "mono", None),
    ("a.ogg", "libopus", 48000, "stereo", None),
    ("a.m4a", "aac", 32000, "mono", "mp4"),
])
def test_audio_any_format_to_16k_mono(tmp_path, name, codec, rate, layout, fmt):
    path = tmp_path / name
    encode_tone(path, codec, rate, layout, fmt=fmt)
    clip = read_audio(path)
    assert clip.sample_rate == 16000 and clip.samples.shape[0] == 1
    assert abs(clip.duration - 1.0) < 0.08
    spectrum = np.abs(np.fft.rfft(clip.samples[0]))
    assert abs(np.argmax(spectrum) * 16000 / clip.samples.shape[1] - 440) < 5


def test_audio_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    with av.open(str(empty), "w") as c:
        c.add_stream("pcm_s16le", rate=16000, layout="mono")
    with pytest.raises(InputError, match="empty"):
        read_audio(empty)
    corrupt = tmp_path / "bad.mp3"
    corrupt.write_bytes(os.urandom(2000))
    with pytest.raises(InputError):
        read_audio(corrupt)
    with pytest.raises(InputError, match="not found"):
        read_audio(tmp_path / "missing.wav")


@pytest.fixture
def rgb():
    y, x = np.mgrid[0:40, 0:60]  # smooth, so lossy formats stay close
    return np.stack([x * 4, y * 6, (x + y) * 2], -1).astype(np.uint8)


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "bmp", "tiff"])
def test_image_formats(tmp_path, rgb, ext):
    p = tmp_path / f"x.{ext}"
    Image.fromarray(rgb).save(p, quality=100) if ext in ("jpg", "webp") else Image.fromarray(rgb).save(p)
    out = read_image(p)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < (4 if ext in ("jpg", "webp") else 1e-9)


def test_image_modes(tmp_path, rgb):
    rgba = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])  # fully transparent -> white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert (read_image(tmp_path / "a.png") == 255).all()
    Image.fromarray(rgb[:, :, 0], "L").save(tmp_path / "g.png")
    g = read_image(tmp_path / "g.png")
    assert g.shape == rgb.shape and (g[:, :, 0] == rgb[:, :, 0]).all()
    sixteen = (rgb[:, :, 0].astype(np.uint16) * 257)
    Image.fromarray(sixteen).save(tmp_path / "s.png")
    assert np.abs(read_image(tmp_path / "s.png")[:, :, 0].astype(int) - rgb[:, :, 0]).max() <= 1


def test_exif_orientation(tmp_path, rgb):
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    im.save(tmp_path / "r.jpg", exif=exif, quality=100)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (60, 40, 3)


def test_image_errors(tmp_path):
    (tmp_path / "t.txt").write_text("hello, not an image")
    with pytest.raises(InputError, match="not an image"):
        read_image(tmp_path / "t.txt")
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(tmp_path / "c.jpg")
    data = (tmp_path / "c.jpg").read_bytes()
    (tmp_path / "c.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="corrupt|truncated"):
        read_image(tmp_path / "c.jpg")


def test_write_video_with_audio_round_trip(tmp_path, speech_path):
    frames = [np.full((64, 81, 3), i * 10, np.uint8) for i in range(25)]  # odd width: padded
    out = tmp_path / "v.mp4"
    n = write_video(out, iter(frames), fps=25, audio=speech_path, num_frames=25)
    assert n == 25
    info = video_info(out)
    assert (info.width, info.height) == (82, 64) and info.has_audio and abs(info.fps - 25) < 1e-6
    back = list(iter_frames(out))
    assert len(back) == 25 and abs(int(back[10].mean()) - 100) <= 3
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        assert a.codec_context.name == "aac" and a.rate == 16000
        dur = float(a.duration * a.time_base)
    assert abs(dur - 1.0) < 0.1  # audio cut to the video's one second
    assert clip_duration(out) > 0.9


def clip_duration(path):
    return read_audio(path).duration


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.mp4"

    def frames():
        yield np.zeros((32, 32, 3), np.uint8)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError):
        write_video(target, frames(), fps=25)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="does not exist"):
        with atomic_output(tmp_path / "nope" / "x.mp4"):
            pass

"""Audio reading through PyAV: wav, mp3, flac, ogg, m4a, video files; any rate and channel count."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from talkinghead.errors import InputError
from talkinghead.types import AudioClip

AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
MAX_SECONDS = 3 * 3600  # refuse absurd lengths with a message instead of filling the disk


def _open(path: str | Path):
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: audio file not found")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError):
        raise InputError(f"{path}: not a readable audio or video file") from None
    if not container.streams.audio:
        container.close()
        raise InputError(f"{path}: has no audio stream")
    return container


def output_layout(path: str | Path) -> tuple[int, str]:
    """(sample_rate, layout) to encode `path`'s audio as AAC: its own rate and up to 2 channels."""
    with _open(path) as c:
        s = c.streams.audio[0]
        rate = s.rate or 48000
        channels = s.codec_context.channels or 1
    return (rate if rate in AAC_RATES else 48000), ("mono" if channels == 1 else "stereo")


def iter_audio(path: str | Path, rate: int, layout: str = "mono", fmt: str = "flt",
               frame_size: int | None = None) -> Iterator:
    """Decoded av.AudioFrames of `path`'s first audio stream, resampled; streams, never loads all."""
    import av

    container = _open(path)
    resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate, frame_size=frame_size)
    try:
        for frame in container.decode(audio=0):
            frame.pts = None
            yield from resampler.resample(frame)
        yield from resampler.resample(None)
    except av.error.FFmpegError as e:
        raise InputError(f"{path}: corrupt audio ({e})") from None
    finally:
        container.close()


def check_audio(path: str | Path) -> None:
    """Fail now, with a one-line message, on missing, unreadable or empty audio; decodes only
    up to the first samples, so long files are not read twice."""
    for frame in iter_audio(path, 16000, "mono", "flt"):
        if frame.samples > 0:
            return
    raise InputError(f"{path}: audio is empty (zero length)")


def read_audio(path: str | Path, sample_rate: int = 16000) -> AudioClip:
    """Whole file as 16 kHz (by default) mono float32."""
    chunks = []
    total = 0
    for frame in iter_audio(path, sample_rate, "mono", "flt"):
        a = frame.to_ndarray().reshape(-1)
        chunks.append(a)
        total += a.size
        if total > MAX_SECONDS * sample_rate:
            raise InputError(f"{path}: longer than {MAX_SECONDS // 3600} hours; split it first")
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise InputError(f"{path}: audio is empty (zero length)")
    return AudioClip(samples=samples[None, :], sample_rate=sample_rate)


def write_wav(path: str | Path, clip: AudioClip) -> Path:
    """16-bit PCM WAV (what the corpus, tests and benchmarks hand to the CLI)."""
    import wave

    samples = np.atleast_2d(clip.samples)
    pcm = (np.clip(samples.T, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[0])
        w.setsampwidth(2)
        w.setframerate(clip.sample_rate)
        w.writeframes(pcm.tobytes())
    return Path(path)

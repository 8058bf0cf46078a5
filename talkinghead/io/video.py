"""Video reading (PyAV, streamed) and MP4 writing: H.264 + AAC, atomic, flat memory."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from talkinghead.errors import InputError, OutputError
from talkinghead.io.atomic import atomic_output


VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    num_frames: int  # an estimate from the container when the stream does not say
    width: int
    height: int
    has_audio: bool


def _open_video(path: str | Path):
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: video not found")
    try:
        c = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError):
        raise InputError(f"{path}: not a readable video file") from None
    if not c.streams.video:
        c.close()
        raise InputError(f"{path}: has no video stream")
    return c


def video_info(path: str | Path) -> VideoInfo:
    with _open_video(path) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate or s.guessed_rate or 25)
        n = s.frames
        if not n and s.duration:
            n = int(round(float(s.duration * s.time_base) * fps))
        if not n and c.duration:
            n = int(round(c.duration / 1e6 * fps))
        return VideoInfo(fps=fps, num_frames=int(n or 0), width=s.codec_context.width,
                         height=s.codec_context.height, has_audio=bool(c.streams.audio))


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 RGB frames, decoded one at a time."""
    import av

    with _open_video(path) as c:
        try:
            for frame in c.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise InputError(f"{path}: corrupt video ({e})") from None


def _even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: repeat the last row/column where a side is odd."""
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frame


class _AudioTrack:
    """Feeds an AAC stream from an audio file, in step with the video clock."""

    def __init__(self, container, source: str | Path, max_seconds: float) -> None:
        import av

        from talkinghead.io.audio import iter_audio, output_layout

        self.rate, layout = output_layout(source)
        self.stream = container.add_stream("aac", rate=self.rate, layout=layout)
        self.stream.bit_rate = 128000
        self.frames = iter_audio(source, self.rate, layout, "fltp", frame_size=1024)
        self.limit = int(max_seconds * self.rate)
        self.written = 0
        self.container = container
        self._av = av

    def write_until(self, seconds: float) -> None:
        while self.written < min(self.limit, seconds * self.rate):
            frame = next(self.frames, None)
            if frame is None:
                self.limit = self.written
                break
            n = min(frame.samples, self.limit - self.written)
            if n < frame.samples:  # trim the tail to the video's length
                a = frame.to_ndarray()[:, :n]
                frame = self._av.AudioFrame.from_ndarray(np.ascontiguousarray(a), format="fltp",
                                                         layout=frame.layout.name)
                frame.sample_rate = self.rate
            frame.pts = self.written
            frame.time_base = Fraction(1, self.rate)
            self.written += n
            for packet in self.stream.encode(frame):
                self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 25.0,
                audio: str | Path | None = None, crf: int = 18, num_frames: int | None = None) -> int:
    """Encode RGB frames (and the audio of file `audio`, cut to the video's length) into MP4.

    Frames are consumed one at a time; the file appears at `path` only when complete.
    Returns the number of frames written.
    """
    import av

    rate = Fraction(fps).limit_denominator(1001)
    written = 0
    with atomic_output(path) as tmp:
        try:
            container = av.open(str(tmp), mode="w", format="mp4")
        except av.error.FFmpegError as e:
            raise OutputError(f"{path}: cannot write ({e})") from None
        try:
            vstream = None
            track = None
            for frame in frames:
                frame = _even(np.ascontiguousarray(frame, dtype=np.uint8))
                if vstream is None:
                    vstream = container.add_stream("libx264", rate=rate)
                    vstream.height, vstream.width = frame.shape[:2]
                    vstream.pix_fmt = "yuv420p"
                    vstream.options = {"crf": str(crf), "preset": "veryfast"}
                    if audio is not None:
                        max_s = (num_frames / float(rate)) if num_frames else 1e9
                        track = _AudioTrack(container, audio, max_s)
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                vf.pts = written
                for packet in vstream.encode(vf):
                    container.mux(packet)
                written += 1
                if track is not None:
                    track.write_until(written / float(rate))
            if vstream is None:
                raise InputError(f"{path}: no frames to write")
            for packet in vstream.encode(None):
                container.mux(packet)
            if track is not None:
                track.limit = min(track.limit, int(written / float(rate) * track.rate))
                track.write_until(written / float(rate))
                track.close()
        finally:
            container.close()
    return written

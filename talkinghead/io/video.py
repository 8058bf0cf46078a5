"""Video reading (PyAV, streamed) and writing, atomic and in flat memory. The container follows
the output's extension: .mp4/.mov (H.264 + AAC), .mkv/.webm (VP9 + Opus), .gif and animated
.webp (no sound)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from talkinghead.errors import InputError, OutputError
from talkinghead.io.atomic import atomic_output, check_not_input, check_output

log = logging.getLogger("talkinghead")

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})


@dataclass(frozen=True)
class Container:
    """How a video is written for one output extension."""

    name: str                  # as the user is told
    format: str                # FFmpeg muxer
    video: str                 # video encoder
    pix_fmt: str
    audio: str | None = None   # audio encoder; None: the format holds no sound
    sample_fmt: str = "fltp"
    audio_frame: int = 1024    # samples per frame the audio encoder takes
    audio_rate: int | None = None  # fixed sample rate (Opus: 48 kHz); None: the source's
    muxer_options: tuple[tuple[str, str], ...] = ()


_H264 = dict(video="libx264", pix_fmt="yuv420p", audio="aac")
_VP9 = dict(video="libvpx-vp9", pix_fmt="yuv420p", audio="libopus", sample_fmt="flt",
            audio_frame=960, audio_rate=48000)
CONTAINERS: dict[str, Container] = {
    ".mp4": Container("MP4 (H.264 + AAC)", "mp4", **_H264),
    ".mov": Container("QuickTime (H.264 + AAC)", "mov", **_H264),
    ".mkv": Container("Matroska (VP9 + Opus)", "matroska", **_VP9),
    ".webm": Container("WebM (VP9 + Opus)", "webm", **_VP9),
    ".gif": Container("GIF", "gif", "gif", "pal8", muxer_options=(("loop", "0"),)),
    ".webp": Container("animated WebP", "webp", "libwebp_anim", "yuv420p",
                       muxer_options=(("loop", "0"),)),
}
DEFAULT_SUFFIX = ".mp4"


def output_container(path: str | Path) -> Container:
    """The container for an output path, by its extension (none: MP4)."""
    suffix = Path(path).suffix.lower()
    if not suffix:
        return CONTAINERS[DEFAULT_SUFFIX]
    if suffix not in CONTAINERS:
        raise OutputError(f"{path}: cannot write {suffix} video; use one of "
                          f"{', '.join(CONTAINERS)}")
    return CONTAINERS[suffix]


def check_video_output(path: str | Path, inputs: Mapping[str, str | Path | None] | None = None,
                       audio: bool = False) -> Path:
    """Check an output video path before any work; returns the path to write.

    The extension picks the container (a name without one gets `.mp4` appended, and says so);
    the path must be none of `inputs` and writable (io.atomic.check_output). With `audio`, says
    when the container cannot hold the soundtrack.
    """
    path = Path(path)
    check_not_input(path, inputs or {})  # before the extension: the clearer reason to refuse
    if not path.suffix:
        path = path.with_name(path.name + DEFAULT_SUFFIX)
        log.warning("%s has no extension; writing MP4 to %s", path.with_suffix(""), path)
    spec = output_container(path)
    path = check_output(path, inputs)
    if audio and spec.audio is None:
        log.warning("%s: %s holds no sound; the audio is not written (.mp4, .mov, .mkv or .webm "
                    "keep it)", path, spec.name)
    return path


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


class _Pal8:
    """RGB frames -> 256-colour (image, ARGB palette) pairs for GIF, one palette for the whole
    video (median cut of the first frame): a talking head keeps its colours, and a fixed
    palette lets the encoder store only what changed."""

    def __init__(self) -> None:
        self.palette = None
        self.argb = np.zeros((256, 4), np.uint8)

    def __call__(self, frame: np.ndarray):
        from PIL import Image

        im = Image.fromarray(frame)
        if self.palette is None:
            self.palette = im.quantize(256, method=Image.Quantize.MEDIANCUT)
            rgb = np.asarray(self.palette.getpalette()[:768], np.uint8).reshape(-1, 3)  # (C, 3)
            self.argb[:, 0] = 255
            self.argb[:len(rgb), 1:] = rgb
        q = im.quantize(palette=self.palette, dither=Image.Dither.NONE)
        return np.asarray(q), self.argb


# veryfast at CRF 16: 39.4 dB mean, 39.0 min against the uncompressed frames of a 12 s clip (CRF 18:
# 38.6 / 38.2, near the 38 dB floor), 1.3x the bytes of CRF 18. superfast at CRF 18 reaches
# 40.3 dB for the same CPU but 2.6x the bytes, and without mbtree its P-frames keep refining a
# still image (first vs last frame of a still video differ by 1.35 levels, veryfast 0.06).
# Tried on top of veryfast: diamond motion search and one subpixel pass ("me=dia:subme=1"):
# write_video's CPU per second of 512x512 video 0.081 -> 0.065, PSNR 39.43 -> 39.40 dB, but the
# drive round trip's jawOpen r fell 0.813 -> 0.795 (under its 0.8 bar), so veryfast's own search
# stays. X264_PARAMS takes x264's option string where a use wants it.
X264_PRESET = "veryfast"
X264_PARAMS = ""
X264_CRF = 16
PREFETCH = 4          # frames rendered ahead of the encoder
# BT.601 limited range (what swscale does by default; the stream is tagged so): rows Y, U, V
_RGB_TO_YUV = np.array([[65.481, 128.553, 24.966, 16 * 255.0],
                        [-37.797, -74.203, 112.0, 128 * 255.0],
                        [112.0, -93.786, -18.214, 128 * 255.0]], np.float32) / 255.0


class _Yuv420:
    """RGB frames -> one reused yuv420p buffer, converting only the rectangle that changed since
    the previous frame (a talking head changes a face-sized box; the rest is converted once).
    Chroma is the 2x2 box average (42.3 dB round trip on the sample vs swscale's 42.0)."""

    def __init__(self) -> None:
        self.prev: np.ndarray | None = None

    def _convert(self, rgb: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> None:
        import cv2

        sub = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        self.y[y0:y1, x0:x1] = cv2.transform(sub, _RGB_TO_YUV[:1]).reshape(y1 - y0, x1 - x0)
        half = cv2.resize(sub, ((x1 - x0) // 2, (y1 - y0) // 2), interpolation=cv2.INTER_AREA)
        uv = cv2.transform(half, _RGB_TO_YUV[1:])                     # (h/2, w/2, 2)
        self.u[y0 // 2:y1 // 2, x0 // 2:x1 // 2] = uv[..., 0]
        self.v[y0 // 2:y1 // 2, x0 // 2:x1 // 2] = uv[..., 1]

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 with even sides -> (3H/2, W) uint8 planes Y, U, V (a reused buffer)."""
        import cv2

        h, w = rgb.shape[:2]
        if self.prev is None or self.prev.shape != rgb.shape:
            flat = np.empty(h * w * 3 // 2, np.uint8)
            self.planes = flat.reshape(h * 3 // 2, w)
            self.y = flat[:h * w].reshape(h, w)
            self.u = flat[h * w:h * w * 5 // 4].reshape(h // 2, w // 2)
            self.v = flat[h * w * 5 // 4:].reshape(h // 2, w // 2)
            self.prev = rgb.copy()
            self._convert(rgb, 0, h, 0, w)
            return self.planes
        diff = cv2.absdiff(rgb, self.prev).reshape(h, w * 3)
        x, y, bw, bh = cv2.boundingRect(diff)  # of the non-zero bytes; (0, 0, 0, 0) if none
        if bw and bh:
            x0, x1 = (x // 3) & ~1, min(w, (-(-(x + bw) // 3) + 1) & ~1)
            y0, y1 = y & ~1, min(h, (y + bh + 1) & ~1)
            self.prev[y0:y1, x0:x1] = rgb[y0:y1, x0:x1]
            self._convert(rgb, y0, y1, x0, x1)
        return self.planes


class Background:
    """Iterates `items` in a background thread, up to `depth` items ahead. An exception in the
    producer is raised in the consumer; close() stops and joins it (also when the consumer
    stopped early)."""

    _DONE = object()

    def __init__(self, items: Iterable, depth: int = PREFETCH, name: str = "talkinghead-background") -> None:
        self.queue: queue.Queue = queue.Queue(depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(items,), daemon=True, name=name)
        self.thread.start()

    def take(self, item):
        return item

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterable) -> None:
        it = iter(items)
        try:
            for item in it:
                if not self._put(self.take(item)):
                    break
            else:
                self._put(self._DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put(e)
        finally:
            if hasattr(it, "close"):
                it.close()

    def __iter__(self) -> Iterator:
        while True:
            item = self.queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


class _Producer(Background):
    """Frames rendered in a background thread while earlier ones encode (numpy, OpenCV and the
    encoder release the GIL). Each frame is copied as it is taken (a producer may reuse its
    buffer, as it could when nothing ran ahead)."""

    def __init__(self, frames: Iterable[np.ndarray], depth: int = PREFETCH) -> None:
        super().__init__(frames, depth, "talkinghead-frames")

    def take(self, frame: np.ndarray) -> np.ndarray:
        return np.array(frame, dtype=np.uint8, order="C")

    def __iter__(self) -> Iterator[np.ndarray]:
        return super().__iter__()


def _tag_bt601(vstream) -> None:
    """Say in the stream what the conversion did (players otherwise guess BT.709 for HD)."""
    cc = vstream.codec_context
    cc.colorspace, cc.color_range = 6, 1  # AVCOL_SPC_SMPTE170M, AVCOL_RANGE_MPEG


def _video_options(spec: Container, crf: int | None) -> dict[str, str]:
    """Encoder settings: x264's CRF; VP9 in constant quality at real-time speed."""
    if spec.video == "libx264":
        options = {"crf": str(X264_CRF if crf is None else crf), "preset": X264_PRESET}
        return {**options, "x264-params": X264_PARAMS} if X264_PARAMS else options
    crf = 18 if crf is None else crf
    if spec.video == "libvpx-vp9":
        return {"crf": str(crf + 12), "b": "0", "deadline": "realtime", "cpu-used": "8",
                "row-mt": "1"}
    if spec.video == "libwebp_anim":  # method 1: 2.3x faster than the default 4, same PSNR
        return {"quality": "80", "compression_level": "1"}
    return {}


class _AudioTrack:
    """Feeds an AAC (or Opus) stream from an audio file, in step with the video clock."""

    def __init__(self, container, source: str | Path, max_seconds: float,
                 spec: Container = CONTAINERS[DEFAULT_SUFFIX]) -> None:
        import av

        from talkinghead.io.audio import iter_audio, output_layout

        self.rate, layout = output_layout(source)
        self.rate = spec.audio_rate or self.rate
        self.stream = container.add_stream(spec.audio, rate=self.rate, layout=layout)
        self.stream.bit_rate = 128000
        if spec.audio == "aac":  # 12 s of speech: 0.0113 -> 0.0043 CPU s per s, SNR 40.5 -> 39.1 dB
            self.stream.options = {"aac_coder": "fast"}
        self.fmt = spec.sample_fmt
        self.frames = iter_audio(source, self.rate, layout, spec.sample_fmt,
                                 frame_size=spec.audio_frame)
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
                a = frame.to_ndarray()  # (channels, samples) planar, (1, samples * channels) packed
                a = a[:, :n] if frame.format.is_planar else a[:, :n * len(frame.layout.channels)]
                frame = self._av.AudioFrame.from_ndarray(np.ascontiguousarray(a), format=self.fmt,
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
                audio: str | Path | None = None, crf: int | None = None,
                num_frames: int | None = None) -> int:
    """Encode RGB frames (and the audio of file `audio`, cut to the video's length) into the
    container that `path`'s extension names (output_container; none: MP4). A container without
    sound (GIF, WebP) leaves the audio out.

    Frames are consumed one at a time, produced in a background thread (up to PREFETCH ahead)
    while earlier ones encode; numpy's BLAS runs single-threaded meanwhile, so the two share
    the cores instead of fighting over them. The file appears at `path` only when complete.
    Returns the number of frames written.
    """
    import av
    from threadpoolctl import threadpool_limits

    spec = output_container(path)
    rate = Fraction(fps).limit_denominator(1001)
    pal8 = _Pal8() if spec.pix_fmt == "pal8" else None
    yuv = _Yuv420() if spec.pix_fmt == "yuv420p" else None
    written = 0
    with atomic_output(path) as tmp, threadpool_limits(1, user_api="blas"):
        try:
            container = av.open(str(tmp), mode="w", format=spec.format,
                                options=dict(spec.muxer_options))
        except av.error.FFmpegError as e:
            raise OutputError(f"{path}: cannot write ({e})") from None
        source = _Producer(frames)
        try:
            vstream = None
            track = None
            for frame in source:
                frame = np.ascontiguousarray(frame, dtype=np.uint8)
                frame = _even(frame) if spec.pix_fmt.startswith("yuv420") else frame
                if vstream is None:
                    vstream = container.add_stream(spec.video, rate=rate)
                    vstream.height, vstream.width = frame.shape[:2]
                    vstream.pix_fmt = spec.pix_fmt
                    vstream.options = _video_options(spec, crf)
                    if yuv is not None:
                        _tag_bt601(vstream)
                    if audio is not None and spec.audio is not None:
                        max_s = (num_frames / float(rate)) if num_frames else 1e9
                        track = _AudioTrack(container, audio, max_s, spec)
                if pal8 is not None:
                    vf = av.VideoFrame.from_ndarray(pal8(frame), format="pal8")
                elif yuv is not None:
                    vf = av.VideoFrame.from_ndarray(yuv(frame), format="yuv420p")
                else:
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
            source.close()
            container.close()
    return written

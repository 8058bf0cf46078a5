"""Video-driven animation: portrait + driving video -> talking video (relative motion transfer).

Expression, head pose and blinks of the driving face are taken relative to its first frame
(delta = frame - first, as DAWN's pose/blink control and SadTalker's reenactment do) and
applied to the portrait by the geometric renderer. Frames stream from decoder to encoder, so
memory stays flat in the video's length.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from talkinghead.errors import InputError
from talkinghead.face.canvas import MAX_SIZE, PROXY_SIDE, Canvas, fit_max_size, scale_to
from talkinghead.face.crop import MODES, crop_box, crop_image
from talkinghead.face.extract import extract_video_motion
from talkinghead.face.landmarker import MIN_FACE_PX, FaceLandmarker, analyze_portrait
from talkinghead.io.audio import check_audio
from talkinghead.io.image import read_image
from talkinghead.io.video import check_video_output, video_info, write_video
from talkinghead.motion.filters import smooth_pose, still
from talkinghead.render.geometric import GeometricRenderer, RenderConfig, SourceState
from talkinghead.types import FaceAnalysis, Motion


@dataclass(frozen=True)
class DriveConfig:
    fps: float = 25.0
    mode: str = "full"            # "full": paste back into the whole image; "crop": face crop
    crop_size: int = 512
    expression_scale: float = 1.0
    pose_scale: float = 1.0
    still: bool = False
    smooth: bool = True
    calibrate: bool = True        # fit the rig's jaw/lid response to the face model (~0.2 s)
    render: RenderConfig = field(default_factory=RenderConfig)
    max_size: int | None = MAX_SIZE  # cap on the full output's longer side (None: keep)


@dataclass
class Portrait:
    """The source as rendered: (possibly cropped) image and its face. For a large portrait,
    `image` is the working crop around the face and `canvas` the full image it goes back into."""

    image: np.ndarray
    face: FaceAnalysis
    canvas: Canvas | None = None

    def paste(self, frames: Iterator[np.ndarray], state: object = None) -> Iterator[np.ndarray]:
        """Output frames: rendered frames of `image`, pasted back into the canvas if there is
        one, through the renderer state's region_mask() where it has one."""
        if self.canvas is None:
            return frames
        mask = state.region_mask() if hasattr(state, "region_mask") else None
        return self.canvas.paste(frames, mask)


@dataclass
class DriveOutput:
    path: Path
    num_frames: int
    fps: float
    motion: Motion                # the relative motion that was rendered
    portrait: Portrait
    timings: dict[str, float]     # seconds per stage


def load_portrait(path: str | Path, landmarker: FaceLandmarker, mode: str = "full",
                  crop_size: int = 512, max_size: int | None = MAX_SIZE) -> Portrait:
    """Read and analyse a portrait; in crop mode, cut the face crop and analyse that. In full
    mode the longer side is capped at `max_size`; above PROXY_SIDE px the face is found on a
    smaller copy, and a working crop around it is analysed and animated (face/canvas.py)."""
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    image = read_image(path)
    if mode == "full":
        image = fit_max_size(image, max_size, str(path))
    proxy, k = scale_to(image, PROXY_SIDE)
    face = analyze_portrait(proxy, str(path), landmarker, min_face=MIN_FACE_PX * k)
    if k == 1.0 and mode == "full":
        return Portrait(image, face)
    face = replace(face, landmarks=face.landmarks / k)   # canvas px
    if mode == "crop":
        image = crop_image(image, crop_box(face), crop_size)
        return Portrait(image, analyze_portrait(image, f"{path} (crop)", landmarker))
    canvas, work = Canvas.crop(image, face.bbox)
    return Portrait(work, analyze_portrait(work, f"{path} (face)", landmarker), canvas)


def timed(frames: Iterator[np.ndarray], timings: dict[str, float], key: str = "render"
          ) -> Iterator[np.ndarray]:
    """The frames of a lazy iterator; the time spent producing them accumulates in timings[key]
    (so a streamed render can be told apart from the encoder consuming it)."""
    timings.setdefault(key, 0.0)
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        timings[key] += time.perf_counter() - t0
        if frame is None:
            return
        yield frame


@contextmanager
def library_threads(get, set_, n: int):
    """A library's thread count set to `n` by `set_` while it lasts, `get`'s value restored."""
    before = get()
    set_(n)
    try:
        yield
    finally:
        set_(before)


def cv2_threads(n: int):
    """OpenCV's threads set to `n` while it lasts (process-wide). Its pool's worker yields in a
    loop between jobs (sched_yield, seen with strace for a whole run): in generate's warm
    pipeline that thread alone took 0.041-0.048 CPU s per s of video. Quiet A/B (bench_speed.py,
    20 s clip, two runs each, alternated, load 0.8-2.2): warm 512 0.615 / 0.539 -> 0.475 /
    0.480 CPU s/s, 0.416 / 0.335 -> 0.304 / 0.318 s/s wall; 1024 / 2048 within the noise. The
    frames are the same bytes (OpenCV splits rows, each computed alike)."""
    import cv2

    return library_threads(cv2.getNumThreads, cv2.setNumThreads, n)


def render_frames(renderer: GeometricRenderer, state: SourceState, motion: Motion,
                  progress: bool = True, timings: dict[str, float] | None = None
                  ) -> Iterator[np.ndarray]:
    """Rendered frames, one at a time; time spent rendering accumulates in timings["render"]."""
    from talkinghead.render.base import RenderInputs

    frames = renderer.frames(state, motion, RenderInputs(progress=progress))
    return timed(frames, {} if timings is None else timings)


class DrivePipeline:
    def __init__(self, config: DriveConfig = DriveConfig()) -> None:
        self.config = config
        self.renderer = GeometricRenderer(config.render)

    def driving_motion(self, video: str | Path, progress: bool = True) -> Motion:
        """Driving video -> relative, re-timed, scaled Motion."""
        cfg = self.config
        absolute = extract_video_motion(video, progress=progress)
        motion = absolute.relative_to(absolute[0]).resample(cfg.fps)
        if cfg.smooth:
            motion = smooth_pose(motion)
        motion = motion.scaled(cfg.expression_scale, cfg.pose_scale)
        return still(motion) if cfg.still else motion

    def __call__(self, image: str | Path, video: str | Path, output: str | Path,
                 audio: str | Path | None = None, progress: bool = True) -> DriveOutput:
        cfg = self.config
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        # 1. Check inputs and the output path before any work
        info = video_info(video)
        if audio is not None:
            check_audio(audio)
        soundtrack = audio if audio is not None else (video if info.has_audio else None)
        output = check_video_output(output, {"portrait": image, "driving video": video,
                                             "audio": audio}, audio=soundtrack is not None)
        # 2. Analyse the portrait
        with FaceLandmarker() as landmarker:
            portrait = load_portrait(image, landmarker, cfg.mode, cfg.crop_size, cfg.max_size)
            state = self.renderer.prepare(portrait.image, portrait.face)
            if cfg.calibrate:
                self.renderer.calibrate(state, landmarker)
        timings["portrait"] = time.perf_counter() - t0
        # 3. Driving motion, relative to its first frame
        t1 = time.perf_counter()
        motion = self.driving_motion(video, progress)
        timings["motion"] = time.perf_counter() - t1
        # 4. Render and encode, streaming (the driving video's audio when it has one)
        t2 = time.perf_counter()
        frames = timed(portrait.paste(render_frames(self.renderer, state, motion, progress), state),
                       timings)
        n = write_video(output, frames, cfg.fps, audio=soundtrack, num_frames=len(motion))
        timings["encode"] = time.perf_counter() - t2 - timings["render"]
        return DriveOutput(Path(output), n, cfg.fps, motion, portrait, timings)

"""Live animation: audio chunks in (20-40 ms, 16 kHz), (frame, audio) pairs out at 25 fps.

The offline `generate` recipe (Whisper-base features -> FD2Talk's expression and pose diffusion
transformers, Yao et al. 2024, `../shared/papers/fd2talk.txt` -> the geometric renderer), run
one hop at a time with a bounded look-ahead:

  1. audio accumulates in a buffer of a few seconds (memory stays flat however long it runs);
  2. as soon as the audio reaches `hop + lookahead` frames past the next frame to show, the
     features of the newest `hop + 2 * lookahead` frames are computed, with `features_s` seconds
     of audio before them as context (Whisper is bidirectional, so a frame's features change
     while its right context grows; older frames keep the features they were last given);
  3. the motion transformers sample the window [known | new | look-ahead] with the shown
     frames pinned (`motion/streaming.py`), so blinks and head motion carry across hops;
  4. the mouth rests where the last `gate_s` seconds say the audio is quiet (the offline
     speech gate, on a causal window);
  5. the geometric renderer draws each new frame; each leaves with its 40 ms of audio.

A hop's audio end is fixed by frame indices, not by how the audio was chunked, so the output
is the same for any chunking, and a change in the audio at frame t moves no frame before
t - window.reach. Pacing at 25 fps against a wall clock is the caller's job
(`serve/live.py`); this module yields frames as soon as they are computed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from talkinghead.audio.features import SAMPLE_RATE
from talkinghead.data.visemes import MOUTH_CHANNELS
from talkinghead.errors import InputError
from talkinghead.motion.filters import gate_mouth, speech_gate, still
from talkinghead.motion.generate import MotionControls, to_motion
from talkinghead.motion.streaming import StreamingFD2Talk, StreamWindow
from talkinghead.render.geometric import RenderConfig
from talkinghead.types import BS, Motion


@dataclass(frozen=True)
class StreamConfig:
    fps: float = 25.0
    mode: str = "crop"               # "crop": the face crop (crop_size square); "full"
    crop_size: int = 384
    window: StreamWindow = StreamWindow()
    features_s: float = 0.5          # seconds of audio before the recomputed frames (context)
    gate: bool = True
    gate_s: float = 4.0              # seconds of past audio the speech gate learns its floor from
    expression_scale: float = 1.0
    pose_scale: float = 1.0
    still: bool = False
    calibrate: tuple[str, ...] = ("eyeBlink",)
    render: RenderConfig = field(default_factory=lambda: RenderConfig(seal_gain=2.5))

    @property
    def frame_samples(self) -> int:
        return int(round(SAMPLE_RATE / self.fps))


@dataclass
class StreamFrame:
    """One output frame, the audio it shows and its index (0 = the stream's first 40 ms)."""

    index: int
    frame: np.ndarray                # (H, W, 3) uint8
    audio: np.ndarray                # (frame_samples,) float32, 16 kHz
    motion: Motion                   # the one-frame relative Motion that was rendered

    def __iter__(self):              # `frame, audio = out`
        return iter((self.frame, self.audio))


class StreamMotion:
    """Audio samples (pushed in any chunks) -> relative Motion, `hop` frames at a time."""

    def __init__(self, config: StreamConfig, model: StreamingFD2Talk, extractor) -> None:
        self.config, self.model, self.extractor = config, model, extractor
        w = config.window
        fs = config.frame_samples
        self.refresh = w.hop + 2 * w.lookahead      # newest frames whose features are recomputed
        self.feature_samples = int(config.features_s * SAMPLE_RATE) // fs * fs + self.refresh * fs
        self.gate_samples = int(config.gate_s * SAMPLE_RATE) // fs * fs
        self.keep = max(self.feature_samples, self.gate_samples) + (w.hop + w.lookahead + 1) * fs
        self.feat = np.zeros((0, 0), np.float32)    # features of frames [feat_start, ...)
        self.feat_start = 0
        self.buf = np.zeros(0, np.float32)
        self.buf_start = 0               # absolute sample index of buf[0]
        self.next_hop = 0                # first frame of the next hop to prepare
        self.next_frame = 0              # ... and to sample
        # wall seconds per stage, and the worker thread's CPU seconds ("*_cpu": what the stage
        # costs on a core of its own, whatever else the machine runs)
        self.timings = {"features": 0.0, "motion": 0.0, "features_cpu": 0.0, "motion_cpu": 0.0}

    @property
    def received(self) -> int:
        return self.buf_start + len(self.buf)

    def samples(self, start: int, stop: int) -> np.ndarray:
        """Absolute samples [start, stop) (zeros where the buffer has none yet)."""
        lo = max(start, self.buf_start)
        out = np.zeros(stop - start, np.float32)
        part = self.buf[lo - self.buf_start: max(lo, stop) - self.buf_start]
        out[lo - start: lo - start + len(part)] = part
        return out

    def push(self, samples: np.ndarray) -> list[Motion]:
        """Add audio; return the Motion hops it completes (possibly none)."""
        return [self.sample(h) for h in self.prepare(samples)]

    def finish(self) -> list[Motion]:
        """The input ended: the remaining frames, silence standing in for the look-ahead."""
        return [self.sample(h) for h in self.prepare(None)]

    def prepare(self, samples: np.ndarray | None) -> list[Hop]:
        """First stage of `push` (None: of `finish`): add audio, compute the features (and speech
        gate) of every hop it completes. `sample` is the second stage; the two may run in
        two threads, hops passed in order (the motion model's state is only `sample`'s)."""
        w, fs = self.config.window, self.config.frame_samples
        out = []
        if samples is None:
            total = -(-self.received // fs)                # frames, the last partial one counts
            while self.next_hop < total:
                out.append(self._prepare(self.next_hop + w.hop + w.lookahead, min(w.hop, total - self.next_hop)))
            return out
        x = np.asarray(samples, np.float32).reshape(-1)
        self.buf = np.concatenate([self.buf, x])
        while self.received >= (self.next_hop + w.hop + w.lookahead) * fs:
            out.append(self._prepare(self.next_hop + w.hop + w.lookahead, w.hop))
        drop = max(0, len(self.buf) - self.keep)
        self.buf, self.buf_start = self.buf[drop:], self.buf_start + drop
        return out

    def _features(self, lo: int, end: int) -> np.ndarray:
        """(end - lo, A) features of frames [lo, end): the newest `refresh` frames (and any not
        yet computed) encoded now, the older ones as they were last encoded."""
        fs = self.config.frame_samples
        r0 = max(0, min(end - self.refresh, self.feat_start + len(self.feat)))
        s0, s1 = max(0, r0 * fs - (self.feature_samples - self.refresh * fs)), end * fs
        new = self.extractor.frames(self.samples(s0, s1), self.config.fps, (s1 - s0) // fs)
        new = new[len(new) - (end - r0):]                                               # [r0, end)
        cached = self.feat[max(0, lo - self.feat_start): max(0, r0 - self.feat_start)]  # [lo, r0)
        self.feat = np.concatenate([cached, new[max(0, lo - r0):]]) if len(cached) else new[max(0, lo - r0):]
        self.feat_start = lo
        return self.feat

    def _prepare(self, end: int, emit: int) -> Hop:
        cfg, fs = self.config, self.config.frame_samples
        first = self.next_hop
        t0, c0 = time.perf_counter(), time.thread_time()
        s1 = end * fs
        known = min(cfg.window.context, first)              # the frames the model holds by then
        window = self._features(first - known, end)                                   # (K+H+L, A)
        gate = None
        if cfg.gate:
            g0 = max(0, s1 - self.gate_samples)
            offset = first - g0 // fs
            gate = speech_gate(self.samples(g0, s1), (s1 - g0) // fs, cfg.fps)[offset:offset + emit]
        audio = self.samples(first * fs, (first + emit) * fs)
        self.timings["features"] += time.perf_counter() - t0
        self.timings["features_cpu"] += time.thread_time() - c0
        self.next_hop += emit
        return Hop(first, emit, window, gate, audio)

    def sample(self, hop: Hop) -> Motion:
        """Second stage: the motion transformers on a prepared hop -> its Motion."""
        cfg = self.config
        if hop.first != self.next_frame:
            raise ValueError(f"hop at frame {hop.first}, expected {self.next_frame}: hops go in order")
        t1, c1 = time.perf_counter(), time.thread_time()
        expr, pose = self.model.step(hop.features, hop.first, hop.emit)
        motion = to_motion(expr, pose, cfg.fps)
        if hop.gate is not None:
            motion = gate_mouth(motion, hop.gate, [BS[c] for c in MOUTH_CHANNELS])
        motion = motion.scaled(cfg.expression_scale, cfg.pose_scale)
        motion = still(motion) if cfg.still else motion
        self.timings["motion"] += time.perf_counter() - t1
        self.timings["motion_cpu"] += time.thread_time() - c1
        self.next_frame += hop.emit
        return motion


@dataclass
class Hop:
    """A hop's features, ready for the motion model: frames [first, first + emit)."""

    first: int
    emit: int
    features: np.ndarray             # (K + H + L, A): the known frames, the new ones, the look-ahead
    gate: np.ndarray | None          # (emit,) speech gate
    audio: np.ndarray                # (emit * frame_samples,) the audio these frames show


def fd2talk_stream(config: StreamConfig, controls: MotionControls, expression, pose,
                   extractor) -> StreamMotion:
    """FD2Talk's expression and pose models and their feature extractor, streaming."""
    styles = pose.config.num_styles
    if controls.pose_style is not None and not 0 <= controls.pose_style < max(styles, 1):
        raise InputError(f"--pose-style must be 0..{styles - 1}, got {controls.pose_style}")
    model = StreamingFD2Talk(expression, pose, config.window, controls.seed, controls.steps,
                             controls.sampler, controls.pose_style, controls.blink_rate)
    return StreamMotion(config, model, extractor)


class StreamSession:
    """One live stream: a prepared portrait, pushed audio, rendered frames out."""

    def __init__(self, renderer, state, motion: StreamMotion) -> None:
        self.renderer, self.state, self.motion = renderer, state, motion
        self.queued = 0                  # frames handed to `render` so far
        self.timings = motion.timings
        self.timings.update(render=0.0, render_cpu=0.0)

    def hops(self, samples: np.ndarray | None) -> list[tuple[int, Motion, np.ndarray]]:
        """Features + motion for pushed audio (None: the input ended): (first frame, Motion,
        its audio) per hop. With `render`, the two halves of `push`, for two threads; or
        `prepare` (features) + `sample` (motion) + `render`, for three."""
        return self.sample(self.prepare(samples))

    def prepare(self, samples: np.ndarray | None) -> list[Hop]:
        return self.motion.prepare(samples)

    def sample(self, hops: list[Hop]) -> list[tuple[int, Motion, np.ndarray]]:
        out = []
        for h in hops:
            m = self.motion.sample(h)
            out.append((h.first, m, h.audio))
            self.queued += len(m)
        return out

    def render(self, hops: list[tuple[int, Motion, np.ndarray]]) -> list[StreamFrame]:
        out, fs = [], self.motion.config.frame_samples
        for first, m, audio in hops:
            for i in range(len(m)):
                t, c = time.perf_counter(), time.thread_time()
                frame = self.renderer.render(self.state, m[i])
                self.timings["render"] += time.perf_counter() - t
                self.timings["render_cpu"] += time.thread_time() - c
                out.append(StreamFrame(first + i, frame, audio[i * fs:(i + 1) * fs], m[i]))
        return out

    def push(self, samples: np.ndarray) -> list[StreamFrame]:
        return self.render(self.hops(samples))

    def finish(self) -> list[StreamFrame]:
        return self.render(self.hops(None))


class StreamPipeline:
    """`StreamPipeline(config)(image, chunks)` -> iterator of StreamFrame (frame, audio)."""

    def __init__(self, config: StreamConfig = StreamConfig(), expression=None, pose=None,
                 extractor=None) -> None:
        from talkinghead.motion.registry import load_checkpoint, shipped
        from talkinghead.render.geometric import GeometricRenderer

        self.config = config
        self.renderer = GeometricRenderer(config.render)
        # loaded once, shared by every session (each session keeps its own state)
        self.expression = expression if expression is not None else load_checkpoint(shipped("fd2talk_expression"))
        self.pose = pose if pose is not None else load_checkpoint(shipped("fd2talk_pose"))
        self._extractor = extractor

    @property
    def extractor(self):
        if self._extractor is None:
            from talkinghead.audio.features import get_extractor

            self._extractor = get_extractor(self.expression.feature)
        return self._extractor

    def prepare(self, image):
        """Portrait (path) -> the renderer's state, calibrated as `generate` does (~1 s)."""
        from talkinghead.face.landmarker import FaceLandmarker
        from talkinghead.pipelines.drive import load_portrait

        with FaceLandmarker() as landmarker:
            portrait = load_portrait(image, landmarker, self.config.mode, self.config.crop_size)
            state = self.renderer.prepare(portrait.image, portrait.face)
            if self.config.calibrate:
                self.renderer.calibrate(state, landmarker, self.config.calibrate)
        return state

    def session(self, state, controls: MotionControls = MotionControls()) -> StreamSession:
        motion = fd2talk_stream(self.config, controls, self.expression, self.pose, self.extractor)
        return StreamSession(self.renderer, state, motion)

    def __call__(self, image, chunks: Iterable[np.ndarray],
                 controls: MotionControls = MotionControls()) -> Iterator[StreamFrame]:
        # 1. Analyse the portrait; 2. per chunk: features, motion, render; 3. flush at the end
        session = self.session(self.prepare(image), controls)
        for chunk in chunks:
            yield from session.push(chunk)
        yield from session.finish()


@contextmanager
def single_threaded():
    """One torch and one BLAS thread while it lasts (process-wide); wrap a session's pushes in
    it. A hop is many small operations: on 2 cores, and above all on a loaded machine, thread
    hand-offs cost more than they save (measured: 2 s of debug-model streaming took 67 s with
    torch's default threads at load 21, 2.6 s with one)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


def chunked(samples: np.ndarray, chunk_s: float = 0.02) -> Iterator[np.ndarray]:
    """Cut a waveform into chunks of `chunk_s` seconds (the last may be shorter)."""
    n = max(1, int(round(chunk_s * SAMPLE_RATE)))
    for i in range(0, len(samples), n):
        yield samples[i:i + n]

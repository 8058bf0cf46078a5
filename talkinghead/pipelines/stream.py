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

Few steps per hop and features from a second of audio make the stream less alive than offline
sampling (measured on the real-speech set, motion of 6 seeds: 4.8 vs 8.3 blinks in 20 s; head
pose std 1.3 vs 1.6 deg). Few-step DDIM shrinks a blink toward the posterior mean (a half-closed
lid), and the short-context features carry less of what drives head motion. So once per
pipeline, `calibrate_alive` samples both recipes on the bundled sample speech (not the test
set) and matches their moments: the expression model's blink-rate condition is set where the
stream blinks at the offline rate, and the head pose is scaled to the offline standard
deviation.
The per-hop compute is unchanged.

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
from pathlib import Path

import numpy as np

from talkinghead.audio.features import SAMPLE_RATE
from talkinghead.data.visemes import MOUTH_CHANNELS
from talkinghead.errors import InputError
from talkinghead.motion.filters import gate_mouth, speech_gate, still
from talkinghead.motion.generate import MotionControls, _both, to_motion
from talkinghead.motion.streaming import (AliveCalibration, StreamingFD2Talk, StreamWindow, fit_alive,
                                          sample_offline, weights_digest)
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
    # as alive as offline (`calibrate_alive`): blink-rate condition and head-pose gain matched to
    # the offline sampler, measured once per pipeline and controls on the bundled sample speech
    alive: bool = True
    alive_seconds: float = 20.0      # calibration audio (the sample speech, looped)
    alive_seeds: int = 3             # streamed seeds per condition (offline: 8 x as many, cheap)
    alive_conditions: tuple[float, ...] = (0.5, 1.0, 1.5)

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
                   extractor, alive: AliveCalibration | None = None) -> StreamMotion:
    """FD2Talk's expression and pose models and their feature extractor, streaming; `alive`:
    the calibrated blink-rate condition and pose gain (None: the user's condition, gain 1)."""
    styles = pose.config.num_styles
    if controls.pose_style is not None and not 0 <= controls.pose_style < max(styles, 1):
        raise InputError(f"--pose-style must be 0..{styles - 1}, got {controls.pose_style}")
    rate = controls.blink_rate if alive is None or alive.blink_rate is None else alive.blink_rate
    model = StreamingFD2Talk(expression, pose, config.window, controls.seed, controls.steps,
                             controls.sampler, controls.pose_style, rate,
                             1.0 if alive is None else alive.pose_gain)
    return StreamMotion(config, model, extractor)


def hops_from_features(features: np.ndarray, window: StreamWindow) -> list[Hop]:
    """Hops over features given for every frame at once ((T, A)), cut as `StreamMotion.prepare`
    cuts them (zero rows past the end); no gate, no audio."""
    t, out, first = len(features), [], 0
    pad = np.concatenate([features, np.zeros((window.hop + window.lookahead, features.shape[1]), features.dtype)])
    while first < t:
        known, emit = min(window.context, first), min(window.hop, t - first)
        out.append(Hop(first, emit, pad[first - known:first + window.hop + window.lookahead], None, np.zeros(0)))
        first += emit
    return out


def _liveliness(expr: np.ndarray, pose: np.ndarray, fps: float) -> tuple[float, float]:
    """(blinks per second, head-pose variance in deg^2, mean over the axes) of (T, 20)
    expression and (T, 3) pose."""
    from talkinghead.evaluation.motion_stats import motion_stats

    st = motion_stats(to_motion(expr, pose - pose[:1], fps))
    return st.blinks_per_second, float(np.mean(np.square(st.pose_std_axes)))


def calibrate_alive(config: StreamConfig, controls: MotionControls, expression, pose,
                    offline_features: np.ndarray, hops: list[Hop]) -> AliveCalibration:
    """Measure the streamed sampler against the offline one on the same audio and match them.

    The streamed recipe (few steps per hop, a short context, features encoded from a second of
    audio) blinks less and moves the head less than offline `generate` (10 steps over the whole
    clip, features with 8 s windows). Both are sampled here, `config.alive_seeds` seeds each:
    offline (8 x as many seeds) on `offline_features` under the user's blink-rate condition; streamed on `hops`
    under each of `config.alive_conditions` (one batch, so it costs about one stream). The
    returned condition makes the stream blink at the offline rate; the gain gives its head pose
    the offline variance (`fit_alive`). Numpy or torch models (`motion/streaming.py`). The
    streamed and the offline sampling run side by side, the offline in a second thread (their
    products release the GIL; the same numbers): shipped models, default settings, 50-54 CPU s
    in 29-32 s of wall on 2 cores instead of 49 (load 0.5-1)."""
    seeds, fps = list(range(config.alive_seeds)), config.fps
    b = 8 * len(seeds)               # offline samples the whole clip in one pass: more seeds, cheap
    steps = MotionControls().steps                                    # offline `generate`'s default
    conds = list(config.alive_conditions)
    model = StreamingFD2Talk(expression, pose, config.window, [s for _ in conds for s in seeds],
                             controls.steps, controls.sampler, controls.pose_style,
                             [c for c in conds for _ in seeds])

    def sample(i: int):
        if i == 0:
            return [model.step(h.features, h.first, h.emit) for h in hops]
        return sample_offline(expression, pose, offline_features, b, steps, controls.sampler,
                              controls.blink_rate, controls.pose_style)

    parts, (ex, po) = _both(sample, parallel=True)
    off = [_liveliness(ex[i], po[i], fps) for i in range(b)]
    se, sp = (np.concatenate([p[i] for p in parts], 1) for i in (0, 1))             # (B', T, C)
    st = [_liveliness(se[i], sp[i], fps) for i in range(len(se))]
    n = len(seeds)
    rates = [float(np.mean([r for r, _ in st[j * n:(j + 1) * n]])) for j in range(len(conds))]
    return fit_alive(float(np.mean([r for r, _ in off])), float(np.mean([v for _, v in off])), conds, rates,
                     float(np.mean([v for _, v in st])))


def calibration_audio(seconds: float) -> np.ndarray:
    """The bundled sample speech (not the real-speech test set), looped with 0.6 s pauses."""
    from talkinghead.assets import SAMPLE_DIR
    from talkinghead.io.audio import read_audio

    x = read_audio(SAMPLE_DIR / "speech.wav").mono()
    one = np.concatenate([x, np.zeros(int(0.6 * SAMPLE_RATE), np.float32)])
    return np.resize(one, int(seconds * SAMPLE_RATE)).astype(np.float32)


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


# settings that act after the motion is sampled (the portrait, the renderer, the output scales):
# they do not change `calibrate_alive`'s result, so `--size`/`--still` share one calibration
_AFTER_MOTION = frozenset({"mode", "crop_size", "calibrate", "render", "expression_scale", "pose_scale",
                           "still", "alive"})


def alive_key(config: StreamConfig, key: tuple, expression, pose, extractor) -> str:
    """The key of `calibrate_alive`'s result for these models, settings and controls: a hash of
    the models' weights (`weights_digest`: numpy and torch models hash apart, their
    calibrations differ by ~1e-6), the stream's settings that reach the motion and the controls."""
    import dataclasses
    import hashlib

    settings = [(f.name, getattr(config, f.name)) for f in dataclasses.fields(config)
                if f.name not in _AFTER_MOTION]
    h = hashlib.sha256(repr((settings, key, type(extractor).__name__)).encode())
    for model in (expression, pose):
        weights_digest(model, h)
    return h.hexdigest()[:24]


def alive_cache_path(digest: str) -> Path | None:
    """Where the calibration under `alive_key` `digest` is kept: the cache folder (None when the
    cache is off: `TALKINGHEAD_ALIVE_CACHE=off`, which also skips the shipped one). A first
    calibration costs about 50 CPU s (30 s wall on 2 cores); a second `live` start reads it."""
    import os

    from talkinghead.assets import cache_dir

    if os.environ.get("TALKINGHEAD_ALIVE_CACHE", "") == "off":
        return None
    return cache_dir() / "live_alive" / f"{digest}.json"


def shipped_alive_path() -> Path:
    """The calibration shipped for the shipped models under `talkinghead live`'s defaults."""
    from talkinghead.motion.registry import WEIGHTS_DIR

    return WEIGHTS_DIR / "alive_calibration.json"


def shipped_alive(digest: str, path: Path | None = None) -> AliveCalibration | None:
    """The shipped calibration if it was made under exactly this key (the shipped models and the
    default settings), else None: other models or settings calibrate (and cache) as before."""
    import json
    import os

    path = path if path is not None else shipped_alive_path()
    if os.environ.get("TALKINGHEAD_ALIVE_CACHE", "") == "off" or not path.exists():
        return None
    try:
        entry = json.loads(path.read_text())["calibrations"].get(digest)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return _alive_from(entry["calibration"]) if entry else None


def _alive_from(raw: dict) -> AliveCalibration | None:
    try:
        raw = {**raw, "conditions": tuple(raw["conditions"]),
               "streamed_blinks_per_s": tuple(raw["streamed_blinks_per_s"])}
        return AliveCalibration(**raw)
    except (TypeError, KeyError):
        return None


def write_shipped_alive(pipeline: StreamPipeline, controls: MotionControls, path: Path,
                        command: str) -> dict:
    """Run the real `calibrate_alive` for `pipeline`'s models and settings under `controls` and
    store it in `path` under its `alive_key`, with how it was made (command, date, git commit,
    CPU and wall seconds, the settings). Made for the shipped defaults by
    `python -m talkinghead.pipelines.stream --write-shipped-calibration`; never edited by hand."""
    import json
    import subprocess
    import time
    from datetime import datetime, timezone

    cfg = pipeline.config
    key = (controls.steps, controls.sampler, controls.pose_style, controls.blink_rate)
    digest = alive_key(cfg, key, pipeline.expression, pipeline.pose, pipeline.extractor)
    wall, cpu = time.perf_counter(), time.process_time()
    cal = pipeline._calibrate(controls)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=30,
                                  cwd=Path(__file__).parent).stdout.strip()
        except OSError:
            return ""

    made = {"command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_commit": git("rev-parse", "HEAD"),
            "git_dirty_paths": len(git("status", "--porcelain").splitlines()),
            "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
            "settings": repr(cfg), "controls": repr(key), "extractor": type(pipeline.extractor).__name__}
    doc = {"about": "calibrate_alive's result for the shipped FD2Talk models under `talkinghead "
                    "live`'s default settings, keyed as the user cache is (pipelines/stream.py: "
                    "alive_key); any other key calibrates on the first start",
           "calibrations": {digest: {"made": made, "calibration": cal.as_dict()}}}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def read_alive(path: Path | None) -> AliveCalibration | None:
    """A stored calibration, or None (absent, unreadable or of another layout: recomputed)."""
    import json

    if path is None or not path.exists():
        return None
    try:
        return _alive_from(json.loads(path.read_text()))
    except ValueError:
        return None


def write_alive(path: Path | None, calibration: AliveCalibration) -> None:
    """Store a calibration (written whole or not at all; a read-only cache is skipped)."""
    import json

    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(calibration.as_dict()))
        tmp.replace(path)
    except OSError:
        pass


class StreamPipeline:
    """`StreamPipeline(config)(image, chunks)` -> iterator of StreamFrame (frame, audio)."""

    def __init__(self, config: StreamConfig = StreamConfig(), expression=None, pose=None,
                 extractor=None) -> None:
        from talkinghead.motion.fd2talk_numpy import NumpyMotionDiT
        from talkinghead.motion.registry import shipped
        from talkinghead.render.geometric import GeometricRenderer

        self.config = config
        self.renderer = GeometricRenderer(config.render)
        # loaded once, shared by every session (each session keeps its own state); numpy models
        # unless torch ones are given (`motion/streaming.py`)
        load = NumpyMotionDiT.from_checkpoint
        self.expression = expression if expression is not None else load(shipped("fd2talk_expression"))
        self.pose = pose if pose is not None else load(shipped("fd2talk_pose"))
        self._extractor = extractor
        self._alive: dict[tuple, AliveCalibration] = {}

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
        motion = fd2talk_stream(self.config, controls, self.expression, self.pose, self.extractor,
                                self.calibration(controls))
        return StreamSession(self.renderer, state, motion)

    def calibration(self, controls: MotionControls) -> AliveCalibration | None:
        """`calibrate_alive` on the sample speech for these controls (not the seed), once per
        pipeline: the shipped value for the shipped models under the defaults, else the user
        cache's, else measured (about 50 CPU s) and cached; None when `config.alive` is off."""
        cfg = self.config
        if not cfg.alive:
            return None
        key = (controls.steps, controls.sampler, controls.pose_style, controls.blink_rate)
        if key not in self._alive:
            digest = alive_key(cfg, key, self.expression, self.pose, self.extractor)
            stored = alive_cache_path(digest)
            cal = shipped_alive(digest) or read_alive(stored)       # shipped: the defaults' (instant)
            if cal is None:
                cal = self._calibrate(controls)
                write_alive(stored, cal)
            self._alive[key] = cal
        return self._alive[key]

    def _calibrate(self, controls: MotionControls) -> AliveCalibration:
        cfg = self.config
        x = calibration_audio(cfg.alive_seconds)
        n = int(np.ceil(len(x) / cfg.frame_samples))
        probe = StreamMotion(cfg, StreamingFD2Talk(self.expression, self.pose, cfg.window), self.extractor)
        with single_threaded():
            hops = probe.prepare(x) + probe.prepare(None)
            offline = self.extractor.frames(x, cfg.fps, n)
            return calibrate_alive(cfg, controls, self.expression, self.pose, offline, hops)

    def __call__(self, image, chunks: Iterable[np.ndarray],
                 controls: MotionControls = MotionControls()) -> Iterator[StreamFrame]:
        # 1. Analyse the portrait; 2. per chunk: features, motion, render; 3. flush at the end
        session = self.session(self.prepare(image), controls)
        for chunk in chunks:
            yield from session.push(chunk)
        yield from session.finish()


@contextmanager
def single_threaded():
    """One torch, one BLAS and one OpenCV thread while it lasts (process-wide); wrap a session's
    pushes in it. A hop is many small operations: on 2 cores, and above all on a loaded machine,
    thread hand-offs cost more than they save (measured: 2 s of debug-model streaming took 67 s
    with torch's default threads at load 21, 2.6 s with one). OpenCV's pool worker spins between
    the renderer's calls (pipelines.drive.cv2_threads): a session's pushes on 3 s of the sample
    speech, 11 interleaved process pairs at load 1.0-2.1, medians 6.34 -> 5.97 and 5.89 -> 5.12
    CPU s (lower in 8 of 11), wall 6.06 -> 5.98 and 5.76 -> 5.14 s (6 of 11); the same frames."""
    import sys

    from threadpoolctl import threadpool_limits

    from talkinghead.pipelines.drive import cv2_threads

    torch = sys.modules.get("torch")     # torch's threads where it is loaded (numpy models: never)
    before = torch.get_num_threads() if torch else 0
    if torch:
        torch.set_num_threads(1)
    try:
        with threadpool_limits(1), cv2_threads(1):
            yield
    finally:
        if torch:
            torch.set_num_threads(before)


def chunked(samples: np.ndarray, chunk_s: float = 0.02) -> Iterator[np.ndarray]:
    """Cut a waveform into chunks of `chunk_s` seconds (the last may be shorter)."""
    n = max(1, int(round(chunk_s * SAMPLE_RATE)))
    for i in range(0, len(samples), n):
        yield samples[i:i + n]


if __name__ == "__main__":
    import argparse
    import json
    import sys

    from talkinghead.pipelines import stream as _stream     # the module's own objects, not __main__'s

    ap = argparse.ArgumentParser(description="write the liveliness calibration shipped with the models")
    ap.add_argument("--write-shipped-calibration", action="store_true", required=True,
                    help="run calibrate_alive on the shipped models, `talkinghead live`'s defaults "
                         "(about 50 CPU s) and write talkinghead/weights/alive_calibration.json")
    ap.parse_args()
    doc = _stream.write_shipped_alive(_stream.StreamPipeline(), MotionControls(steps=3),
                                      _stream.shipped_alive_path(),
                                      "python -m talkinghead.pipelines.stream " + " ".join(sys.argv[1:]))
    print(json.dumps(doc, indent=1))

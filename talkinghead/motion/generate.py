"""Audio features -> relative `Motion`, through one of the papers' motion models.

* `fd2talk` (default): expression and pose diffusion transformers, few-step DDIM, run in numpy
  (`fd2talk_numpy.py`): choosing and sampling it never imports torch (`backend="torch"` runs
  the torch modules, the reference; the same seed gives the same motion to rounding).
* `sadtalker`: ExpNet (expression, blinks from a blink control signal) + PoseVAE (pose).
* `pbnet`: DAWN's PBNet for pose and blinks; the mouth comes from the FD2Talk expression model
  (in DAWN the lips come from its video diffusion model, issue #5; with the geometric renderer
  an expression model has to supply them).

All return a Motion relative to the portrait (deltas), so the renderer applies them directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from talkinghead.data.corpus import EXPRESSION_CHANNELS
from talkinghead.data.prosody import NUM_STYLES, BlinkConfig, blink_curve
from talkinghead.errors import InputError
from talkinghead.motion.registry import load_checkpoint, shipped
from talkinghead.types import BS, Motion

if TYPE_CHECKING:
    import torch

    from talkinghead.audio.features import AudioFeatures

MOUTH_N = 17
# chunked sampling (FD2TalkMotion.stream): frames of the first chunk (small, so the first frames
# come early), of later chunks (larger, so the margins cost less: at least CHUNK_FRAMES, as many
# as are done, at most CHUNK_MAX unless the rest is shorter than one more chunk), and of feature
# context on each side: 4 blocks x 25 frames of self-attention reach
CHUNK_FIRST, CHUNK_FRAMES, CHUNK_MAX, CHUNK_MARGIN = 100, 500, 1000, 100


def _chunk_size(done: int, total: int) -> int:
    """Frames of the next chunk after `done`: growing with the clip (each chunk samples
    2 * CHUNK_MARGIN frames more than it keeps: 60 s took 1.4x its frames in chunks of 500,
    1.27x in 100, 500, 900; 10 min 1.2x), the whole rest when less than CHUNK_FRAMES would be
    left. Chunks stay under 2 * CHUNK_MAX frames: the motion's peak memory grows with them
    (10 min of features: +37 MiB in chunks of 600, +118 MiB with chunks up to 3,900)."""
    if done == 0:
        return CHUNK_FIRST
    want = min(CHUNK_MAX, max(CHUNK_FRAMES, done))
    return total - done if total - done - want < CHUNK_FRAMES else want


@dataclass
class MotionControls:
    seed: int = 0
    steps: int = 10                 # diffusion sampling steps (fd2talk)
    pose_style: int | None = None   # 0..7, None = the model's own mix
    blink_rate: float | None = None  # blinks per second, None = the model's own
    sampler: str = "ddim"


def _generator(seed: int) -> torch.Generator:
    import torch

    return torch.Generator().manual_seed(int(seed))


def _audio(features: AudioFeatures) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.asarray(features.values, np.float32))[None]          # (1, T, A)


def to_motion(expression: np.ndarray, pose: np.ndarray, fps: float) -> Motion:
    """(T, 20) expression channels + (T, 3) pose deltas -> relative Motion."""
    t = len(expression)
    blend = np.zeros((t, 52), np.float32)
    for i, name in enumerate(EXPRESSION_CHANNELS):
        blend[:, BS[name]] = expression[:, i]
    return Motion(np.clip(blend, -0.2, 1.2), pose, np.zeros((t, 3)), np.ones(t), np.zeros((t, 2)), fps=fps,
                  relative=True)


def _check_style(style: int | None) -> None:
    if style is not None and not 0 <= style < NUM_STYLES:
        raise InputError(f"--pose-style must be 0..{NUM_STYLES - 1}, got {style}")


class MotionModel:
    name = "base"
    feature = "whisper"

    def __call__(self, features: AudioFeatures, controls: MotionControls) -> Motion:
        raise NotImplementedError

    def stream(self, chunks: Iterable[np.ndarray], total: int, fps: float,
               controls: MotionControls) -> Iterator[Motion]:
        """Feature rows arriving in chunks (`total` frames in all) -> Motion in consecutive
        chunks. This default waits for every row and yields the whole clip's Motion once."""
        from talkinghead.audio.features import AudioFeatures

        values = np.concatenate([np.asarray(c, np.float32) for c in chunks])
        yield self(AudioFeatures(values, fps, self.feature), controls)


class _NumpyIO:
    """How FD2TalkMotion hands arrays to numpy models (`fd2talk_numpy.NumpyMotionDiT`)."""

    @staticmethod
    def array(x: np.ndarray) -> np.ndarray:
        return x

    @staticmethod
    def generator(seed: int):
        from talkinghead.diffusion.torch_rng import TorchGenerator

        return TorchGenerator(seed)

    @staticmethod
    def randn(g, shape: tuple[int, ...]) -> np.ndarray:
        return g.randn(*shape)

    @staticmethod
    def numpy(y: np.ndarray) -> np.ndarray:
        return y

    @staticmethod
    def window(model, audio: np.ndarray, noise: np.ndarray, steps: int, sampler: str, **extra) -> np.ndarray:
        """audio (1, T, A), noise (T, C) -> x0 (T, C), normalised."""
        return model.sample_from(audio, noise[None], steps, sampler, **extra)[0]


class _TorchIO:
    """The same for torch models (`fd2talk.MotionDiT`, the prompt model's expression)."""

    @staticmethod
    def array(x: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(x)

    generator = staticmethod(_generator)

    @staticmethod
    def randn(g, shape: tuple[int, ...]) -> torch.Tensor:
        import torch

        return torch.randn(*shape, generator=g)

    @staticmethod
    def numpy(y: torch.Tensor) -> np.ndarray:
        return y.numpy()

    @staticmethod
    def window(model, audio: torch.Tensor, noise: torch.Tensor, steps: int, sampler: str, **extra) -> torch.Tensor:
        from talkinghead.motion.streaming import sample_window

        return sample_window(model, audio, noise[:0], noise, steps, sampler, **extra)


class FD2TalkMotion(MotionModel):
    """FD2Talk's expression and pose transformers; numpy models by default, `backend="torch"`
    for the torch modules (the reference). A subclass may set torch models (motion/prompt.py):
    the calls below follow the models they find."""

    name = "fd2talk"

    def __init__(self, expression_dir=None, pose_dir=None, backend: str = "numpy") -> None:
        if backend not in ("numpy", "torch"):
            raise ValueError(f"backend must be 'numpy' or 'torch', not {backend!r}")
        if backend == "torch":
            load = load_checkpoint
        else:
            from talkinghead.motion.fd2talk_numpy import NumpyMotionDiT

            load = NumpyMotionDiT.from_checkpoint
        self.expression = load(expression_dir or shipped("fd2talk_expression"))
        self.pose = load(pose_dir or shipped("fd2talk_pose"))
        self.feature = self.expression.feature

    def _io(self):
        from talkinghead.motion.fd2talk_numpy import NumpyMotionDiT

        numpy = isinstance(self.expression, NumpyMotionDiT) and isinstance(self.pose, NumpyMotionDiT)
        return _NumpyIO if numpy else _TorchIO

    def _conditions(self, io, controls: MotionControls) -> tuple[dict, dict]:
        """(expression's, pose's) keyword conditions: blink rate, pose style."""
        _check_style(controls.pose_style)
        rate = None if controls.blink_rate is None else io.array(np.array([controls.blink_rate], np.float32))
        style = None if controls.pose_style is None else io.array(np.array([controls.pose_style], np.int64))
        return {"blink_rate": rate}, {"style": style}

    def __call__(self, features: AudioFeatures, controls: MotionControls) -> Motion:
        io = self._io()
        expr_kw, pose_kw = self._conditions(io, controls)
        audio = io.array(np.asarray(features.values, np.float32)[None])              # (1, T, A)
        g = io.generator(int(controls.seed))   # one generator: the expression's noise, then the pose's
        expr = io.numpy(self.expression.sample(audio, controls.steps, g, sampler=controls.sampler, **expr_kw))[0]
        pose = io.numpy(self.pose.sample(audio, controls.steps, g, sampler=controls.sampler, **pose_kw))[0]
        return to_motion(expr, pose - pose[:1], features.fps)

    def stream(self, chunks: Iterable[np.ndarray], total: int, fps: float,
               controls: MotionControls) -> Iterator[Motion]:
        """Motion chunk by chunk while the features still arrive (the first frames can be shown
        before the clip's last features exist). Both transformers attend locally (+-
        `window` frames per block), so a chunk sampled with CHUNK_MARGIN frames of features on
        each side equals the whole clip's sampling up to rounding (measured: max difference
        5e-6 in blendshapes, 2e-5 degrees, on 30 s of speech); the noise is the whole clip's
        draw, sliced. A clip whose features arrive at once is sampled whole, as `__call__` does."""
        if type(self) is not FD2TalkMotion:  # a subclass samples otherwise (motion/prompt.py)
            yield from super().stream(chunks, total, fps, controls)
            return
        io = self._io()
        extras = self._conditions(io, controls)
        g = io.generator(int(controls.seed))
        models = (self.expression, self.pose)
        noise = [io.randn(g, (1, total, m.config.channels))[0] for m in models]       # (T, C)
        buf, buf_start, done, pose0 = [], 0, 0, None
        for rows in chunks:
            buf.append(np.asarray(rows, np.float32))
            have = buf_start + sum(len(b) for b in buf)
            want = _chunk_size(done, total)
            if have < total and have - CHUNK_MARGIN - done < want:
                continue
            stop = total if have >= total else have - CHUNK_MARGIN
            audio = np.concatenate(buf)                                               # (n, A)
            lo, hi = max(0, done - CHUNK_MARGIN), min(have, stop + CHUNK_MARGIN)
            a = io.array(np.ascontiguousarray(audio[lo - buf_start:hi - buf_start])[None])  # (1, hi-lo, A)

            def sample(i: int) -> np.ndarray:
                model = models[i]
                x0 = io.window(model, a, noise[i][lo:hi], controls.steps, controls.sampler, **extras[i])
                return io.numpy(model.denormalise(x0[done - lo:stop - lo]))

            # the first chunk is what the first frame waits for: the pose model samples it in a
            # second thread (numpy's products and torch release the GIL; the same operations,
            # so the same numbers)
            expr, pose = _both(sample, parallel=done == 0)
            pose0 = pose[:1].copy() if pose0 is None else pose0
            yield to_motion(expr, pose - pose0, fps)
            drop = max(0, stop - CHUNK_MARGIN - buf_start)         # rows no later chunk reads
            buf, buf_start, done = [audio[drop:]], buf_start + drop, stop


def _both(sample, parallel: bool) -> tuple[np.ndarray, np.ndarray]:
    """(sample(0), sample(1)), the second in another thread when `parallel`."""
    if not parallel:
        return sample(0), sample(1)
    import threading

    second: list = []

    def run() -> None:
        try:
            second.append(sample(1))
        except BaseException as e:  # re-raised in the caller's thread
            second.append(e)

    t = threading.Thread(target=run, name="talkinghead-pose", daemon=True)
    t.start()
    try:
        first = sample(0)
    finally:
        t.join()
    if isinstance(second[0], BaseException):
        raise second[0]
    return first, second[0]


class SadTalkerMotion(MotionModel):
    name = "sadtalker"

    def __init__(self, expnet_dir=None, posevae_dir=None) -> None:
        self.expnet = load_checkpoint(expnet_dir or shipped("sadtalker_expnet"))
        self.posevae = load_checkpoint(posevae_dir or shipped("sadtalker_posevae"))
        self.feature = self.expnet.feature

    def __call__(self, features: AudioFeatures, controls: MotionControls) -> Motion:
        import torch

        with torch.no_grad():
            return self._sample(features, controls)

    def _sample(self, features: AudioFeatures, controls: MotionControls) -> Motion:
        import torch

        _check_style(controls.pose_style)
        audio = _audio(features)
        t = audio.shape[1]
        rng = np.random.default_rng(controls.seed)
        rate = 0.3 if controls.blink_rate is None else controls.blink_rate
        speaking = np.ones(t, bool)
        z_blink = blink_curve(t, speaking, rng, BlinkConfig(rate=rate), features.fps)
        beta0 = torch.zeros(1, self.expnet.config.channels)
        expr = self.expnet(audio, beta0, torch.from_numpy(z_blink)[None])[0].numpy()
        style = controls.pose_style if controls.pose_style is not None else int(rng.integers(NUM_STYLES))
        pose = self.posevae.generate(audio, torch.tensor([style]), _generator(controls.seed))[0].numpy()
        return to_motion(expr, pose, features.fps)


class PBNetMotion(MotionModel):
    name = "pbnet"

    def __init__(self, pbnet_dir=None, expression_dir=None) -> None:
        self.pbnet = load_checkpoint(pbnet_dir or shipped("dawn_pbnet"))
        self.expression = load_checkpoint(expression_dir or shipped("fd2talk_expression"))
        self.feature = self.pbnet.feature

    def __call__(self, features: AudioFeatures, controls: MotionControls) -> Motion:
        audio = _audio(features)
        g = _generator(controls.seed)
        pb = self.pbnet.generate(audio, generator=g)[0].numpy()                       # (T, 5)
        expr = self.expression.sample(audio, controls.steps, g, sampler=controls.sampler)[0].numpy()
        expr[:, MOUTH_N:MOUTH_N + 2] = np.clip(pb[:, 3:5], 0, 1)
        return to_motion(expr, pb[:, :3] - pb[:1, :3], features.fps)


MOTION_MODELS = {"fd2talk": FD2TalkMotion, "sadtalker": SadTalkerMotion, "pbnet": PBNetMotion}


def get_motion_model(name: str) -> MotionModel:
    if name not in MOTION_MODELS:
        raise InputError(f"unknown motion model {name!r}; choose one of {', '.join(MOTION_MODELS)}")
    return MOTION_MODELS[name]()

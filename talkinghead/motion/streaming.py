"""FD2Talk's motion transformers on a sliding context with a bounded look-ahead (live mode).

FD2Talk (Yao et al. 2024, `../shared/papers/fd2talk.txt`, Sec. 3.2) denoises a whole motion
sequence at once. Its self-attention here is local with RoPE (`layers.py`), so the model only
ever sees relative positions and runs unchanged on a short window. Live, every hop runs it on

    [ C known frames | H new frames | L look-ahead frames ]

and keeps only the H new frames. The known frames are the ones already shown: at every
denoising step the model's x0 estimate is overwritten there by their stored values (x0
replacement, the inpainting form of RePaint, Lugmayr et al. 2022, for an x0-predicting model).
Under DDIM (eta = 0) a frame whose x0 is pinned keeps its own initial noise, so the window's
past is exactly what was shown and the new frames continue it: a blink or a head turn that
started in the last hop finishes in this one, with no blend seam. The look-ahead frames give
the new ones L frames of future audio, and are sampled again in the next hop.

Noise is drawn per absolute frame index (one generator per frame and model), so the output
does not depend on how the audio was cut into chunks, and a frame depends only on the audio up
to its hop's end: a change in the audio at frame t moves no frame before t - (L + H - 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from talkinghead.diffusion.samplers import SAMPLERS
from talkinghead.diffusion.schedule import Schedule
from talkinghead.motion.fd2talk import MotionDiT


@dataclass(frozen=True)
class StreamWindow:
    """Frames per hop: `context` known, `hop` new, `lookahead` future (all at the video rate)."""

    context: int = 20
    hop: int = 3
    lookahead: int = 3

    @property
    def reach(self) -> int:
        """Frames of future audio a frame may depend on (the worst case, first frame of a hop)."""
        return self.lookahead + self.hop - 1


def frame_noise(seed: int, start: int, stop: int, channels: int) -> torch.Tensor:
    """(stop - start, channels) standard normal noise, a fixed draw per absolute frame index."""
    rows = [torch.randn(channels, generator=torch.Generator().manual_seed(seed * 1_000_003 + f))
            for f in range(start, stop)]
    return torch.stack(rows) if rows else torch.zeros(0, channels)


class _History:
    """The last `size` emitted frames of one model, in normalised units: (B, K, C)."""

    def __init__(self, size: int, channels: int, batch: int = 1) -> None:
        self.size = size
        self.values = torch.zeros(batch, 0, channels)

    def push(self, x: torch.Tensor) -> None:
        self.values = torch.cat([self.values, x], 1)[:, -self.size:] if self.size else self.values[:, :0]


@torch.no_grad()
def sample_window(model: MotionDiT, audio: torch.Tensor, known: torch.Tensor, noise: torch.Tensor,
                  steps: int, sampler: str = "ddim", style: torch.Tensor | None = None,
                  blink_rate: torch.Tensor | None = None) -> torch.Tensor:
    """audio (1, T, A), known (K, C) normalised, noise (T, C) -> x0 (T, C), normalised, whose
    first K frames are `known` and the rest is sampled conditioned on them. Batched: audio
    (B or 1, T, A), known (B, K, C), noise (B, T, C) -> (B, T, C)."""
    batched = noise.dim() == 3
    known, noise = (known, noise) if batched else (known[None], noise[None])        # (B, K, C), (B, T, C)
    audio = audio.expand(len(noise), -1, -1)                                          # (B, T, A)
    k = known.shape[1]

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0 = model(x_t, t, audio, style, blink_rate)                                  # (B, T, C)
        if k:
            x0 = torch.cat([known, x0[:, k:]], 1)
        return x0

    schedule = Schedule.cosine(model.config.train_steps)
    x0 = SAMPLERS[sampler](denoise, noise, schedule, steps)
    return x0 if batched else x0[0]


class StreamingFD2Talk:
    """Expression + pose DiTs, one hop at a time; carries the shown frames between hops.

    `step(audio, first)` takes the audio features of window frames [first - K, first + n) where
    K = the known frames it holds, and returns (expression (H, 20), pose (H, 3)) for frames
    [first, first + H) in data units, pose relative to the stream's first frame and multiplied
    by `pose_gain` (`AliveCalibration`; the model's own history stays unscaled).

    A sequence of seeds (and of blink rates, one per seed) samples that many streams at once,
    as one batch (`calibrate_alive`): `step` then returns (B, H, 20), (B, H, 3).
    """

    def __init__(self, expression: MotionDiT, pose: MotionDiT, window: StreamWindow = StreamWindow(),
                 seed: int | Sequence[int] = 0, steps: int = 10, sampler: str = "ddim",
                 pose_style: int | None = None, blink_rate: float | None | Sequence[float | None] = None,
                 pose_gain: float = 1.0) -> None:
        self.expression, self.pose, self.window = expression, pose, window
        self.batched = not isinstance(seed, int)
        self.seeds = list(seed) if self.batched else [seed]
        self.steps, self.sampler, self.pose_gain = steps, sampler, pose_gain
        b = len(self.seeds)
        self.style = None if pose_style is None else torch.full((b,), pose_style)
        rates = list(blink_rate) if isinstance(blink_rate, Sequence) else [blink_rate] * b
        if len(rates) != b:
            raise ValueError(f"{len(rates)} blink rates for {b} seeds")
        self.rate = None if all(r is None for r in rates) else \
            torch.tensor([float("nan") if r is None else float(r) for r in rates])     # NaN: none given
        self.hist_expr = _History(window.context, expression.config.channels, b)
        self.hist_pose = _History(window.context, pose.config.channels, b)
        self.pose0: torch.Tensor | None = None

    @property
    def known(self) -> int:
        return self.hist_expr.values.shape[1]

    def step(self, audio: np.ndarray, first: int, emit: int) -> tuple[np.ndarray, np.ndarray]:
        k = self.known
        a = torch.from_numpy(np.asarray(audio, np.float32))[None]                     # (1, T, A)
        start, stop = first - k, first - k + a.shape[1]
        if emit > stop - first:
            raise ValueError(f"asked for {emit} frames, the window holds {stop - first} new ones")
        outs = []
        for i, (model, hist, extra) in enumerate(((self.expression, self.hist_expr, {"blink_rate": self.rate}),
                                                  (self.pose, self.hist_pose, {"style": self.style}))):
            c = model.config.channels
            noise = torch.stack([frame_noise(s * 2 + i, start, stop, c) for s in self.seeds])  # (B, T, C)
            x0 = sample_window(model, a, hist.values, noise, self.steps, self.sampler, **extra)
            new = x0[:, k:k + emit]                                                   # (B, H, C)
            hist.push(new)
            outs.append(model.denormalise(new))
        expr, pose = outs
        if self.pose0 is None:
            self.pose0 = pose[:, :1].clone()
        pose = (pose - self.pose0) * self.pose_gain
        if not self.batched:
            expr, pose = expr[0], pose[0]
        return expr.numpy(), pose.numpy()


@dataclass(frozen=True)
class AliveCalibration:
    """What makes the streamed sampler as alive as the offline one (`calibrate_alive`).

    blink_rate: the blink-rate condition under which the streamed sampler blinks as often as
    the offline sampler does under the user's condition (None: leave the user's condition).
    The streamed sampler takes fewer steps, and few-step DDIM shrinks a blink toward the
    posterior mean (a half-closed lid that the blink detector does not count); the model's
    blink-rate condition (FD2Talk's expression DiT, `fd2talk.py`) is the knob that restores
    the count.
    pose_gain: offline / streamed head-pose standard deviation (1: unchanged).
    The other fields are the measurements behind them.
    """

    blink_rate: float | None = None
    pose_gain: float = 1.0
    offline_blinks_per_s: float = float("nan")
    offline_pose_std: float = float("nan")
    streamed_pose_std: float = float("nan")
    conditions: tuple[float, ...] = ()
    streamed_blinks_per_s: tuple[float, ...] = ()    # per condition, mean over the seeds

    def as_dict(self) -> dict:
        return asdict(self)


def fit_alive(offline_rate: float, offline_pose_var: float, conditions: Sequence[float],
              streamed_rates: Sequence[float], streamed_pose_var: float) -> AliveCalibration:
    """Moment matching: the blink-rate condition at which a least-squares line through the
    streamed rates (one per condition) meets the offline rate, clamped to the measured
    conditions' range (None if the rate does not rise with the condition); and the gain that
    gives the streamed head pose the offline variance."""
    c, r = np.asarray(conditions, np.float64), np.asarray(streamed_rates, np.float64)
    slope, icept = np.polyfit(c, r, 1) if len(c) > 1 else (0.0, 0.0)
    rate = float(np.clip((offline_rate - icept) / slope, c.min(), c.max())) if slope > 0 else None
    gain = float(np.sqrt(offline_pose_var / streamed_pose_var)) if streamed_pose_var > 0 else 1.0
    return AliveCalibration(rate, gain, float(offline_rate), float(np.sqrt(offline_pose_var)),
                            float(np.sqrt(streamed_pose_var)), tuple(float(x) for x in c),
                            tuple(float(x) for x in r))

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

from dataclasses import dataclass

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
    """The last `size` emitted frames of one model, in normalised units."""

    def __init__(self, size: int, channels: int) -> None:
        self.size = size
        self.values = torch.zeros(0, channels)

    def push(self, x: torch.Tensor) -> None:
        self.values = torch.cat([self.values, x])[-self.size:] if self.size else self.values[:0]


@torch.no_grad()
def sample_window(model: MotionDiT, audio: torch.Tensor, known: torch.Tensor, noise: torch.Tensor,
                  steps: int, sampler: str = "ddim", style: torch.Tensor | None = None,
                  blink_rate: torch.Tensor | None = None) -> torch.Tensor:
    """audio (1, T, A), known (K, C) normalised, noise (T, C) -> x0 (T, C), normalised, whose
    first K frames are `known` and the rest is sampled conditioned on them."""
    k = len(known)

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0 = model(x_t, t, audio, style, blink_rate)                                  # (1, T, C)
        if k:
            x0 = torch.cat([known[None], x0[:, k:]], 1)
        return x0

    schedule = Schedule.cosine(model.config.train_steps)
    return SAMPLERS[sampler](denoise, noise[None], schedule, steps)[0]


class StreamingFD2Talk:
    """Expression + pose DiTs, one hop at a time; carries the shown frames between hops.

    `step(audio, first)` takes the audio features of window frames [first - K, first + n) where
    K = the known frames it holds, and returns (expression (H, 20), pose (H, 3)) for frames
    [first, first + H) in data units, pose relative to the stream's first frame.
    """

    def __init__(self, expression: MotionDiT, pose: MotionDiT, window: StreamWindow = StreamWindow(),
                 seed: int = 0, steps: int = 10, sampler: str = "ddim", pose_style: int | None = None,
                 blink_rate: float | None = None) -> None:
        self.expression, self.pose, self.window = expression, pose, window
        self.seed, self.steps, self.sampler = seed, steps, sampler
        self.style = None if pose_style is None else torch.tensor([pose_style])
        self.rate = None if blink_rate is None else torch.tensor([float(blink_rate)])
        self.hist_expr = _History(window.context, expression.config.channels)
        self.hist_pose = _History(window.context, pose.config.channels)
        self.pose0: torch.Tensor | None = None

    @property
    def known(self) -> int:
        return len(self.hist_expr.values)

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
            noise = frame_noise(self.seed * 2 + i, start, stop, c)                    # (T, C)
            x0 = sample_window(model, a, hist.values, noise, self.steps, self.sampler, **extra)
            new = x0[k:k + emit]                                                      # (H, C)
            hist.push(new)
            outs.append(model.denormalise(new))
        expr, pose = outs
        if self.pose0 is None:
            self.pose0 = pose[:1].clone()
        return expr.numpy(), (pose - self.pose0).numpy()

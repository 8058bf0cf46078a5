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

The transformers run in numpy by default (`fd2talk_numpy.NumpyMotionDiT`, `numpy_samplers.py`)
and torch's per-frame `randn` is reproduced in numpy (`frame_noise`), so live mode never imports
torch; the torch modules are still accepted (the reference: the same stream to about 1e-6).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from talkinghead.motion.fd2talk_numpy import NumpyMotionDiT

if TYPE_CHECKING:
    import torch

_MASK24, _MASK53 = (1 << 24) - 1, (1 << 53) - 1
_LOCAL = threading.local()              # a Mersenne twister per thread (making one costs 0.15 ms)


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


def frame_noise(seed: int | Sequence[int], start: int, stop: int, channels: int) -> np.ndarray:
    """(stop - start, channels) float32 standard normal noise, a fixed draw per absolute frame
    index f: torch's `torch.randn(channels, generator=torch.Generator().manual_seed(seed *
    1_000_003 + f))` (`diffusion/torch_rng.py`), without torch. A sequence of seeds gives
    (B, stop - start, channels).

    `TorchGenerator(s).randn(c)` per frame costs 0.15-0.2 ms (a new generator each); here one
    Mersenne twister per thread is re-seeded per frame (numpy's legacy seeding, as
    RandomState's: 3 us) and the Box-Muller transform runs on every frame's words at once
    (a hop's window of 26 frames, both models: 0.3 ms; torch's own draws 0.5 ms)."""
    seeds = [seed] if isinstance(seed, int) else list(seed)
    n = max(stop - start, 0)
    small = channels < 16               # torch's double Box-Muller; else its float blocks of 16
    words = 4 * (-(-channels // 2)) if small else channels + (16 if channels % 16 else 0)
    mt = getattr(_LOCAL, "mt", None)
    if mt is None:
        mt = _LOCAL.mt = np.random.MT19937(0)
    raw = np.empty((len(seeds) * n, words), np.uint64)
    for i, (s, f) in enumerate((s, f) for s in seeds for f in range(start, stop)):
        mt._legacy_seeding((s * 1_000_003 + f) & 0xFFFFFFFF)
        raw[i] = mt.random_raw(words)
    out = _doubles(raw, channels) if small else _floats(raw, channels)
    return out.reshape(n, channels) if isinstance(seed, int) else out.reshape(len(seeds), n, channels)


def _floats(raw: np.ndarray, c: int) -> np.ndarray:
    """torch's float path (c >= 16) on (N, words) mt19937 words -> (N, c)."""
    from talkinghead.diffusion.torch_rng import _box_muller16

    u = (raw & _MASK24).astype(np.float32) * np.float32(2.0 ** -24)                  # (N, words)
    out = np.empty((len(raw), c), np.float32)
    full = c // 16 * 16
    out[:, :full] = _box_muller16(np.ascontiguousarray(u[:, :full]).reshape(-1)).reshape(-1, full)
    if c % 16:                           # the last 16 recomputed from 16 more uniforms
        out[:, c - 16:] = _box_muller16(np.ascontiguousarray(u[:, c:]).reshape(-1)).reshape(-1, 16)
    return out


def _doubles(raw: np.ndarray, c: int) -> np.ndarray:
    """torch's double path (c < 16) on (N, 4 ceil(c / 2)) words -> (N, c): per pair of values
    two 53-bit uniforms (first word high), r cos(theta) then r sin(theta)."""
    w = raw.reshape(len(raw), raw.shape[1] // 4, 4)                                                # (N, pairs, 4)
    u1 = (((w[..., 0] << np.uint64(32)) | w[..., 1]) & np.uint64(_MASK53)).astype(np.float64) * 2.0 ** -53
    u2 = (((w[..., 2] << np.uint64(32)) | w[..., 3]) & np.uint64(_MASK53)).astype(np.float64) * 2.0 ** -53
    r = np.sqrt(-2.0 * np.log1p(-u2))
    theta = 2.0 * np.pi * u1
    pairs = np.stack([r * np.cos(theta), r * np.sin(theta)], -1)                      # (N, pairs, 2)
    return pairs.reshape(len(raw), 2 * w.shape[1])[:, :c].astype(np.float32)


def torch_frame_noise(seed: int, start: int, stop: int, channels: int) -> torch.Tensor:
    """`frame_noise` drawn by torch itself (the torch models' reference path)."""
    import torch

    rows = [torch.randn(channels, generator=torch.Generator().manual_seed(seed * 1_000_003 + f))
            for f in range(start, stop)]
    return torch.stack(rows) if rows else torch.zeros(0, channels)


class _History:
    """The last `size` emitted frames of one model, in normalised units: (B, K, C)."""

    def __init__(self, size: int, channels: int, batch: int = 1) -> None:
        self.size = size
        self.values = np.zeros((batch, 0, channels), np.float32)

    def push(self, x: np.ndarray) -> None:
        self.values = np.concatenate([self.values, x], 1)[:, -self.size:] if self.size else self.values[:, :0]


def sample_window(model, audio, known, noise, steps: int, sampler: str = "ddim", style=None, blink_rate=None):
    """audio (1, T, A), known (K, C) normalised, noise (T, C) -> x0 (T, C), normalised, whose
    first K frames are `known` and the rest is sampled conditioned on them. Batched: audio
    (B or 1, T, A), known (B, K, C), noise (B, T, C) -> (B, T, C).

    A `NumpyMotionDiT` takes and returns numpy arrays; a torch `MotionDiT` (the reference)
    takes tensors (or arrays) and returns a tensor."""
    if isinstance(model, NumpyMotionDiT):
        return _sample_window_numpy(model, audio, known, noise, steps, sampler, style, blink_rate)
    return _sample_window_torch(model, audio, known, noise, steps, sampler, style, blink_rate)


def _sample_window_numpy(model: NumpyMotionDiT, audio, known, noise, steps, sampler, style, blink_rate):
    from talkinghead.diffusion.numpy_samplers import SAMPLERS
    from talkinghead.diffusion.schedule import cosine_alphas_cumprod

    noise, known = np.asarray(noise, np.float32), np.asarray(known, np.float32)
    batched = noise.ndim == 3
    known, noise = (known, noise) if batched else (known[None], noise[None])          # (B, K, C), (B, T, C)
    part = model.audio_part(np.asarray(audio, np.float32))                            # (1|B, T, D)
    part = np.broadcast_to(part, (len(noise), *part.shape[1:]))                       # (B, T, D)
    k = known.shape[1]

    def denoise(x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        x0 = model.denoise(x_t, part, model.condition(t, style, blink_rate))          # (B, T, C)
        x0[:, :k] = known
        return x0

    x0 = SAMPLERS[sampler](denoise, noise, cosine_alphas_cumprod(model.config.train_steps), steps)
    return x0 if batched else x0[0]


def _sample_window_torch(model, audio, known, noise, steps, sampler, style, blink_rate):
    import torch

    from talkinghead.diffusion.samplers import SAMPLERS
    from talkinghead.diffusion.schedule import Schedule

    audio, known, noise = (torch.as_tensor(x) for x in (audio, known, noise))
    style = None if style is None else torch.as_tensor(style)
    blink_rate = None if blink_rate is None else torch.as_tensor(blink_rate)
    batched = noise.dim() == 3
    known, noise = (known, noise) if batched else (known[None], noise[None])          # (B, K, C), (B, T, C)
    audio = audio.expand(len(noise), -1, -1)                                          # (B, T, A)
    k = known.shape[1]

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0 = model(x_t, t, audio, style, blink_rate)                                  # (B, T, C)
        if k:
            x0 = torch.cat([known, x0[:, k:]], 1)
        return x0

    with torch.no_grad():
        x0 = SAMPLERS[sampler](denoise, noise, Schedule.cosine(model.config.train_steps), steps)
    return x0 if batched else x0[0]


class StreamingFD2Talk:
    """Expression + pose DiTs, one hop at a time; carries the shown frames between hops.

    `step(audio, first)` takes the audio features of window frames [first - K, first + n) where
    K = the known frames it holds, and returns (expression (H, 20), pose (H, 3)) for frames
    [first, first + H) in data units, pose relative to the stream's first frame and multiplied
    by `pose_gain` (`AliveCalibration`; the model's own history stays unscaled).

    A sequence of seeds (and of blink rates, one per seed) samples that many streams at once,
    as one batch (`calibrate_alive`): `step` then returns (B, H, 20), (B, H, 3).

    The models are `NumpyMotionDiT`s (live's default: no torch) or torch `MotionDiT`s (the
    reference, noise drawn by torch itself); the same seed gives the same motion to rounding.
    """

    def __init__(self, expression, pose, window: StreamWindow = StreamWindow(),
                 seed: int | Sequence[int] = 0, steps: int = 10, sampler: str = "ddim",
                 pose_style: int | None = None, blink_rate: float | None | Sequence[float | None] = None,
                 pose_gain: float = 1.0) -> None:
        self.expression, self.pose, self.window = expression, pose, window
        self.numpy = isinstance(expression, NumpyMotionDiT) and isinstance(pose, NumpyMotionDiT)
        if not self.numpy and (isinstance(expression, NumpyMotionDiT) or isinstance(pose, NumpyMotionDiT)):
            raise ValueError("expression and pose models must both be numpy or both torch models")
        self.batched = not isinstance(seed, int)
        self.seeds = list(seed) if self.batched else [seed]
        self.steps, self.sampler, self.pose_gain = steps, sampler, pose_gain
        b = len(self.seeds)
        self.style = None if pose_style is None else np.full(b, pose_style, np.int64)
        rates = list(blink_rate) if isinstance(blink_rate, Sequence) else [blink_rate] * b
        if len(rates) != b:
            raise ValueError(f"{len(rates)} blink rates for {b} seeds")
        self.rate = None if all(r is None for r in rates) else \
            np.array([float("nan") if r is None else float(r) for r in rates], np.float32)  # NaN: none given
        self.hist_expr = _History(window.context, expression.config.channels, b)
        self.hist_pose = _History(window.context, pose.config.channels, b)
        self.pose0: np.ndarray | None = None

    @property
    def known(self) -> int:
        return self.hist_expr.values.shape[1]

    def _noise(self, i: int, start: int, stop: int, channels: int) -> np.ndarray:
        """(B, T, C) noise of model i (0 expression, 1 pose) for frames [start, stop)."""
        seeds = [s * 2 + i for s in self.seeds]
        if self.numpy:
            return frame_noise(seeds, start, stop, channels)
        import torch

        return torch.stack([torch_frame_noise(s, start, stop, channels) for s in seeds]).numpy()

    def _x0(self, model, audio: np.ndarray, known: np.ndarray, noise: np.ndarray, extra: dict) -> np.ndarray:
        x0 = sample_window(model, audio, known, noise, self.steps, self.sampler, **extra)
        return x0 if self.numpy else x0.numpy()

    def _denormalise(self, model, x: np.ndarray) -> np.ndarray:
        if self.numpy:
            return model.denormalise(x)
        import torch

        return model.denormalise(torch.from_numpy(x)).numpy()

    def step(self, audio: np.ndarray, first: int, emit: int) -> tuple[np.ndarray, np.ndarray]:
        k = self.known
        a = np.asarray(audio, np.float32)[None]                                       # (1, T, A)
        start, stop = first - k, first - k + a.shape[1]
        if emit > stop - first:
            raise ValueError(f"asked for {emit} frames, the window holds {stop - first} new ones")
        outs = []
        for i, (model, hist, extra) in enumerate(((self.expression, self.hist_expr, {"blink_rate": self.rate}),
                                                  (self.pose, self.hist_pose, {"style": self.style}))):
            noise = self._noise(i, start, stop, model.config.channels)                # (B, T, C)
            x0 = self._x0(model, a, hist.values, noise, extra)
            new = np.array(x0[:, k:k + emit])                                         # (B, H, C)
            hist.push(new)
            outs.append(self._denormalise(model, new))
        expr, pose = outs
        if self.pose0 is None:
            self.pose0 = pose[:, :1].copy()
        pose = (pose - self.pose0) * np.float32(self.pose_gain)
        if not self.batched:
            expr, pose = expr[0], pose[0]
        return expr, pose


def sample_offline(expression, pose, features: np.ndarray, batch: int, steps: int, sampler: str = "ddim",
                   blink_rate: float | None = None, style: int | None = None,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Offline sampling of `batch` motions on the same features (T, A), as `generate` samples a
    whole clip: one generator seeded `seed`, the expression's noise drawn first, then the
    pose's. -> expression (B, T, 20), pose (B, T, 3) in data units, numpy or torch models."""
    a = np.asarray(features, np.float32)[None]                                        # (1, T, A)
    rate = None if blink_rate is None else np.full(batch, blink_rate, np.float32)
    styles = None if style is None else np.full(batch, style, np.int64)
    if isinstance(expression, NumpyMotionDiT):
        from talkinghead.diffusion.torch_rng import TorchGenerator

        g, out = TorchGenerator(seed), []
        for model, extra in ((expression, {"blink_rate": rate}), (pose, {"style": styles})):
            noise = g.randn(batch, a.shape[1], model.config.channels)                 # (B, T, C)
            out.append(model.denormalise(model.sample_from(a, noise, steps, sampler, **extra)))
        return out[0], out[1]
    import torch

    g, a = torch.Generator().manual_seed(seed), torch.from_numpy(a).expand(batch, -1, -1)  # (B, T, A)
    rate = None if rate is None else torch.from_numpy(rate)
    styles = None if styles is None else torch.from_numpy(styles)
    ex = expression.sample(a, steps, g, blink_rate=rate, sampler=sampler)
    return ex.numpy(), pose.sample(a, steps, g, style=styles, sampler=sampler).numpy()


def weights_digest(model, h=None):
    """A sha256 (`hashlib` object, updated in place when given) of a model's weights: a torch
    module's state dict, or every array a `NumpyMotionDiT` holds (its own rearranged layout,
    so the two kinds of the same checkpoint hash differently)."""
    import hashlib

    h = h if h is not None else hashlib.sha256()
    if hasattr(model, "state_dict"):
        for name, tensor in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h
    for name, array in _arrays(model, type(model).__name__):
        h.update(name.encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h


def _arrays(obj, name: str, depth: int = 0):
    """(path, array) for every numpy array under obj's attributes (lists, tuples, objects with
    a __dict__ or __slots__), in a fixed order."""
    if isinstance(obj, np.ndarray):
        yield name, obj
    elif isinstance(obj, (list, tuple)):
        for i, x in enumerate(obj):
            yield from _arrays(x, f"{name}.{i}", depth + 1)
    elif depth < 8 and type(obj).__module__.startswith("talkinghead"):
        fields = getattr(obj, "__dict__", None) or {k: getattr(obj, k) for k in getattr(obj, "__slots__", ())}
        for key in sorted(fields):
            yield from _arrays(fields[key], f"{name}.{key}", depth + 1)


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

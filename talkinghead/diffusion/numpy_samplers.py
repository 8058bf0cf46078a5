"""The samplers of `samplers.py` over numpy arrays: `denoise(x_t, t) -> x0 estimate`, with
x_t float32 (B, ...) and t int64 (B,), for inference without importing torch.

The same float32 arithmetic in the same order as the torch samplers (each step's scalars are
float32 values of the schedule), so a model gives the torch sampler's motion to rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from talkinghead.diffusion.schedule import timesteps
from talkinghead.diffusion.torch_rng import TorchGenerator

Denoiser = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _steps(x: np.ndarray, t: int) -> np.ndarray:
    return np.full(len(x), t, np.int64)                                              # (B,)


def _eps(x: np.ndarray, x0: np.ndarray, ab: np.float32) -> np.ndarray:
    return (x - np.sqrt(ab) * x0) / max(np.sqrt(np.float32(1) - ab), np.float32(1e-8))


def ddim(denoise: Denoiser, noise: np.ndarray, alphas_cumprod: np.ndarray, steps: int = 10,
         eta: float = 0.0, generator: TorchGenerator | None = None) -> np.ndarray:
    """DDIM (Song et al. 2021): deterministic for eta = 0, starting from `noise` at t = T."""
    x, acp = noise, alphas_cumprod
    ts = timesteps(len(acp), steps)
    for i, t in enumerate(ts):
        ab = acp[t]
        x0 = denoise(x, _steps(x, t))
        if i == len(ts) - 1:
            return x0
        ab_prev = acp[ts[i + 1]]
        eps = _eps(x, x0, ab)
        one = np.float32(1)
        sigma = np.float32(eta) * np.sqrt(max((one - ab_prev) / (one - ab) * (one - ab / ab_prev), np.float32(0)))
        x = np.sqrt(ab_prev) * x0 + np.sqrt(max(one - ab_prev - sigma ** 2, np.float32(0))) * eps
        if eta > 0:
            x = x + sigma * (generator or TorchGenerator(np.random.randint(2 ** 31))).randn(*x.shape)
    return x


def dpmpp_2m(denoise: Denoiser, noise: np.ndarray, alphas_cumprod: np.ndarray, steps: int = 10,
             generator: TorchGenerator | None = None) -> np.ndarray:
    """DPM-Solver++(2M) (Lu et al. 2022), multistep second order in log-SNR."""
    ts = timesteps(len(alphas_cumprod), steps)
    acp, one = alphas_cumprod, np.float32(1)
    lam = lambda ab: np.float32(0.5) * np.log(ab / (one - ab))  # noqa: E731  half log-SNR
    x, prev_x0, prev_h = noise, None, None
    for i, t in enumerate(ts):
        ab = acp[t]
        x0 = denoise(x, _steps(x, t))
        if i == len(ts) - 1:
            return x0
        ab_next = acp[ts[i + 1]]
        h = lam(ab_next) - lam(ab)
        d = x0
        if prev_x0 is not None:
            r = prev_h / h
            d = (one + one / (np.float32(2) * r)) * x0 - one / (np.float32(2) * r) * prev_x0
        x = np.sqrt((one - ab_next) / (one - ab)) * x - np.sqrt(ab_next) * np.expm1(-h) * d
        prev_x0, prev_h = x0, h
    return x


SAMPLERS = {"ddim": ddim, "dpmpp_2m": dpmpp_2m}

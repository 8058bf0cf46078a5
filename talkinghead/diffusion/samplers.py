"""Samplers as functions over one denoiser interface: `denoise(x_t, t) -> x0 estimate`.

Models that predict x0 (FD2Talk, DAWN) plug in directly; the samplers convert to noise
estimates where their update needs one. Swapping a sampler never touches the model.
`numpy_samplers.py` holds the same samplers over numpy arrays (inference without torch).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from talkinghead.diffusion import schedule as _schedule
from talkinghead.diffusion.schedule import Schedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def timesteps(schedule: Schedule, steps: int) -> list[int]:
    """`steps` evenly spaced training steps from the noisiest down (DDIM's "trailing" spacing)."""
    return _schedule.timesteps(schedule.num_steps, steps)


def _eps(x: torch.Tensor, x0: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    return (x - ab.sqrt() * x0) / (1 - ab).sqrt().clamp(min=1e-8)


@torch.no_grad()
def ddim(denoise: Denoiser, noise: torch.Tensor, schedule: Schedule, steps: int = 10,
         eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021): deterministic for eta = 0, starting from `noise` at t = T."""
    x = noise
    ts = timesteps(schedule, steps)
    acp = schedule.alphas_cumprod.to(noise.device)
    for i, t in enumerate(ts):
        ab = acp[t]
        x0 = denoise(x, torch.full((len(x),), t, device=x.device, dtype=torch.long))
        if i == len(ts) - 1:
            return x0
        ab_prev = acp[ts[i + 1]]
        eps = _eps(x, x0, ab)
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp(min=0).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        if eta > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x


@torch.no_grad()
def dpmpp_2m(denoise: Denoiser, noise: torch.Tensor, schedule: Schedule, steps: int = 10,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), multistep second order in log-SNR."""
    ts = timesteps(schedule, steps)
    acp = schedule.alphas_cumprod.to(noise.device)
    lam = lambda ab: 0.5 * torch.log(ab / (1 - ab))  # noqa: E731  half log-SNR
    x, prev_x0, prev_h = noise, None, None
    for i, t in enumerate(ts):
        ab = acp[t]
        x0 = denoise(x, torch.full((len(x),), t, device=x.device, dtype=torch.long))
        if i == len(ts) - 1:
            return x0
        ab_next = acp[ts[i + 1]]
        h = lam(ab_next) - lam(ab)
        d = x0
        if prev_x0 is not None:
            r = prev_h / h
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * prev_x0
        x = ((1 - ab_next) / (1 - ab)).sqrt() * x - ab_next.sqrt() * torch.expm1(-h) * d
        prev_x0, prev_h = x0, h
    return x


SAMPLERS = {"ddim": ddim, "dpmpp_2m": dpmpp_2m}

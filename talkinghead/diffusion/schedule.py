"""Noise schedules for discrete-time diffusion (DDPM, Ho et al. 2020).

The schedules are computed in numpy (float64, stored as float32), so the numpy sampling path
(`numpy_samplers.py`) uses them without importing torch; `Schedule` wraps them as tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def cosine_alphas_cumprod(num_steps: int = 1000, s: float = 0.008) -> np.ndarray:
    """(num_steps,) float32 alphas_cumprod of Nichol & Dhariwal's 2021 cosine schedule."""
    t = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    f = np.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = np.minimum(1 - f[1:] / f[:-1], 0.999)
    return np.cumprod(1 - betas).astype(np.float32)


def timesteps(num_steps: int, steps: int) -> list[int]:
    """`steps` evenly spaced training steps from the noisiest down (DDIM's "trailing" spacing)."""
    steps = max(1, min(steps, num_steps))
    return [int(round(num_steps - 1 - i * num_steps / steps)) for i in range(steps)]


@dataclass
class Schedule:
    """alphas_cumprod for `num_steps` training steps (FD2Talk: 1000)."""

    alphas_cumprod: torch.Tensor

    @property
    def num_steps(self) -> int:
        return len(self.alphas_cumprod)

    @classmethod
    def cosine(cls, num_steps: int = 1000, s: float = 0.008) -> Schedule:
        """Nichol & Dhariwal 2021 cosine schedule."""
        import torch

        return cls(torch.from_numpy(cosine_alphas_cumprod(num_steps, s)))

    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
        import torch

        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        return cls(torch.cumprod(1 - betas, 0).float())

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0) sample for integer steps t (B,)."""
        ab = self.alphas_cumprod.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

"""Noise schedules for discrete-time diffusion (DDPM, Ho et al. 2020)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


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
        t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        return cls(torch.cumprod(1 - betas, 0).float())

    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        return cls(torch.cumprod(1 - betas, 0).float())

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0) sample for integer steps t (B,)."""
        ab = self.alphas_cumprod.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

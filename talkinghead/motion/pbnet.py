"""DAWN's Pose and Blink generation Network, PBNet (Cheng et al. 2024, `../shared/papers/dawn.txt`
Sec. 3.4).

A transformer VAE (ACTOR-style, Petrovich et al. 2021). The encoder takes the initial state
rho_src, the residual pose/blink sequence Delta rho_{1:N} and the audio a_{1:N} and gives a
Gaussian latent h with one vector per frame (the same length as Delta rho, so any length
works); the decoder rebuilds Delta rho from h, a_{1:N} and rho_src. At inference h ~ N(0, I).
Both use RoPE and local attention (a wider window than the renderer's, because pose and blink
depend on seconds of context; DAWN trains on 200 frames and infers with windows of 400), so
one non-autoregressive pass covers any length.

State here: yaw/pitch/roll (degrees, relative to the portrait) + eyeBlinkLeft/Right (DAWN uses
a 6D pose and the eye aspect ratio).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from talkinghead.motion.layers import LocalTransformerBlock


@dataclass
class PBNetConfig:
    audio_dim: int = 512
    channels: int = 5          # yaw, pitch, roll, blink left, blink right
    dim: int = 128
    depth: int = 3
    heads: int = 4
    latent: int = 8            # per-frame latent width C_h
    window: int = 100          # local attention half-window in frames
    pose_scale: float = 5.0

    @classmethod
    def debug(cls, **kw) -> PBNetConfig:
        return cls(**{"dim": 16, "depth": 2, "heads": 2, "latent": 4, "window": 16, **kw})


class PBNet(nn.Module):
    def __init__(self, config: PBNetConfig = PBNetConfig()) -> None:
        super().__init__()
        self.config = c = config
        self.audio = nn.Linear(c.audio_dim, c.dim)
        self.src = nn.Linear(c.channels, c.dim)
        self.enc_in = nn.Linear(c.channels, c.dim)
        self.encoder = nn.ModuleList(LocalTransformerBlock(c.dim, c.heads, c.window) for _ in range(c.depth))
        self.to_stats = nn.Linear(c.dim, 2 * c.latent)
        self.dec_in = nn.Linear(c.latent, c.dim)
        self.decoder = nn.ModuleList(LocalTransformerBlock(c.dim, c.heads, c.window) for _ in range(c.depth))
        self.out = nn.Sequential(nn.LayerNorm(c.dim), nn.Linear(c.dim, c.channels))
        scale = torch.ones(c.channels)
        scale[:3] = c.pose_scale
        self.register_buffer("scale", scale)

    def encode(self, residual: torch.Tensor, audio: torch.Tensor, src: torch.Tensor):
        h = self.enc_in(residual / self.scale) + self.audio(audio) + self.src(src / self.scale)[:, None]
        for block in self.encoder:
            h = block(h)
        mu, logvar = self.to_stats(h).chunk(2, -1)                                     # (B, T, Ch)
        return mu, logvar.clamp(-8, 8)

    def decode(self, h: torch.Tensor, audio: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        x = self.dec_in(h) + self.audio(audio) + self.src(src / self.scale)[:, None]   # (B, T, D)
        for block in self.decoder:
            x = block(x)
        return self.out(x) * self.scale                                                # (B, T, 5)

    def forward(self, residual, audio, src, generator=None):
        mu, logvar = self.encode(residual, audio, src)
        h = mu + torch.randn(mu.shape, generator=generator, device=mu.device) * (0.5 * logvar).exp()
        return self.decode(h, audio, src), mu, logvar

    @torch.no_grad()
    def generate(self, audio: torch.Tensor, src: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """audio (B, T, A) -> (B, T, 5) residual pose/blink, one pass for any T."""
        b, t, _ = audio.shape
        if src is None:
            src = torch.zeros(b, self.config.channels, device=audio.device)
        h = temperature * torch.randn(b, t, self.config.latent, generator=generator, device=audio.device)
        return self.decode(h, audio, src)

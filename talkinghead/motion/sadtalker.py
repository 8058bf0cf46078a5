"""SadTalker's audio-to-coefficient models (Zhang et al. 2023, `../shared/papers/sadtalker.txt`).

* ExpNet (Sec. 3.2): an audio encoder over a short window per frame, and a mapping network
  conditioned on the first frame's expression beta_0 and a blink control signal z_blink, giving
  the expression sequence. SadTalker distils lip-only coefficients from Wav2Lip and adds a
  lip-reading loss; here the targets are the corpus's phone-derived mouth blendshapes and the
  lip term is our sync expert (`sync_expert.py`).
* PoseVAE (Sec. 3.3): a conditional VAE over the residual head pose Delta rho = rho - rho_0 of a
  32-frame clip, conditioned on audio, the first pose rho_0 and a style identity (one-hot style
  ids: 46 speakers in the paper, the corpus's 8 pose styles here), trained with MSE + KL + a GAN
  term from a temporal discriminator. Long audio is generated clip by clip, each clip starting
  from the last pose of the one before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ExpNetConfig:
    audio_dim: int = 512
    channels: int = 20
    dim: int = 128
    window: int = 5            # audio frames seen per output frame (0.2 s)

    @classmethod
    def debug(cls, **kw) -> ExpNetConfig:
        return cls(**{"dim": 16, **kw})


class ExpNet(nn.Module):
    """audio (B, T, A), beta_0 (B, C), z_blink (B, T) -> expression (B, T, C)."""

    def __init__(self, config: ExpNetConfig = ExpNetConfig()) -> None:
        super().__init__()
        self.config = c = config
        self.audio_encoder = nn.Sequential(
            nn.Conv1d(c.audio_dim, c.dim, c.window, padding=c.window // 2), nn.GELU(),
            nn.Conv1d(c.dim, c.dim, 3, padding=1), nn.GELU(),
            nn.Conv1d(c.dim, c.dim, 3, padding=1), nn.GELU())
        self.mapping = nn.Sequential(
            nn.Linear(c.dim + c.channels + 1, c.dim), nn.GELU(),
            nn.Linear(c.dim, c.dim), nn.GELU(), nn.Linear(c.dim, c.channels))

    def forward(self, audio: torch.Tensor, beta0: torch.Tensor, blink: torch.Tensor) -> torch.Tensor:
        b, t, _ = audio.shape
        a = self.audio_encoder(audio.transpose(1, 2)).transpose(1, 2)                  # (B, T, D)
        x = torch.cat([a, beta0[:, None].expand(b, t, -1), blink[..., None]], -1)     # (B, T, D+C+1)
        return beta0[:, None] + self.mapping(x)                                        # (B, T, C)


class PoseDiscriminator(nn.Module):
    """Temporal PatchGAN over residual pose sequences (the GAN term of PoseVAE's loss)."""

    def __init__(self, pose: int = 3, dim: int = 64, pose_scale: float = 5.0) -> None:
        super().__init__()
        self.pose_scale = pose_scale
        self.net = nn.Sequential(
            nn.Conv1d(pose, dim, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv1d(dim, dim, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv1d(dim, 1, 3, padding=1))

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        return self.net(pose.transpose(1, 2) / self.pose_scale)                        # (B, 1, T/4)


@dataclass
class PoseVAEConfig:
    audio_dim: int = 512
    pose: int = 3
    dim: int = 128
    latent: int = 32
    frames: int = 32           # SadTalker's clip length
    num_styles: int = 8
    pose_scale: float = 5.0    # degrees per unit, so the networks see O(1) numbers

    @classmethod
    def debug(cls, **kw) -> PoseVAEConfig:
        return cls(**{"dim": 16, "latent": 8, **kw})


class PoseVAE(nn.Module):
    def __init__(self, config: PoseVAEConfig = PoseVAEConfig()) -> None:
        super().__init__()
        self.config = c = config
        self.audio = nn.Sequential(nn.Conv1d(c.audio_dim, c.dim, 3, padding=1), nn.GELU())
        self.style = nn.Embedding(c.num_styles, c.dim)
        self.start = nn.Linear(c.pose, c.dim)
        self.encoder = nn.Sequential(
            nn.Conv1d(c.pose + c.dim, c.dim, 3, padding=1), nn.GELU(),
            nn.Conv1d(c.dim, c.dim, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv1d(c.dim, c.dim, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool1d(1))
        self.to_stats = nn.Linear(2 * c.dim, 2 * c.latent)
        self.from_z = nn.Linear(c.latent + c.dim, c.dim)
        self.decoder = nn.Sequential(
            nn.Conv1d(2 * c.dim, c.dim, 5, padding=2), nn.GELU(),
            nn.Conv1d(c.dim, c.dim, 5, padding=2), nn.GELU(),
            nn.Conv1d(c.dim, c.pose, 5, padding=2))
        self.discriminator = PoseDiscriminator(c.pose, c.dim // 2, c.pose_scale)

    def _cond(self, audio: torch.Tensor, style: torch.Tensor, start: torch.Tensor):
        a = self.audio(audio.transpose(1, 2))                                          # (B, D, T)
        g = self.style(style) + self.start(start / self.config.pose_scale)             # (B, D)
        return a, g

    def encode(self, residual: torch.Tensor, audio: torch.Tensor, style: torch.Tensor,
               start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, g = self._cond(audio, style, start)
        h = self.encoder(torch.cat([residual.transpose(1, 2) / self.config.pose_scale, a], 1))[..., 0]
        mu, logvar = self.to_stats(torch.cat([h, g], -1)).chunk(2, -1)                 # (B, Z) each
        return mu, logvar.clamp(-8, 8)

    def decode(self, z: torch.Tensor, audio: torch.Tensor, style: torch.Tensor,
               start: torch.Tensor) -> torch.Tensor:
        a, g = self._cond(audio, style, start)
        zg = self.from_z(torch.cat([z, g], -1))[..., None].expand(-1, -1, a.shape[-1])  # (B, D, T)
        out = self.decoder(torch.cat([a, zg], 1)).transpose(1, 2)                      # (B, T, 3)
        out = out - out[:, :1]                        # a residual: zero at the clip's first frame
        return out * self.config.pose_scale

    def forward(self, residual, audio, style, start, generator=None):
        mu, logvar = self.encode(residual, audio, style, start)
        z = mu + torch.randn(mu.shape, generator=generator, device=mu.device) * (0.5 * logvar).exp()
        return self.decode(z, audio, style, start), mu, logvar

    @torch.no_grad()
    def generate(self, audio: torch.Tensor, style: torch.Tensor, generator=None) -> torch.Tensor:
        """(1, T, A) audio -> (1, T, 3) pose relative to frame 0, clip by clip."""
        t, n = audio.shape[1], self.config.frames
        start = torch.zeros(audio.shape[0], self.config.pose, device=audio.device)
        parts = []
        for s in range(0, t, n - 1):                 # clips overlap by the shared start frame
            chunk = audio[:, s:s + n]
            if chunk.shape[1] < n:
                chunk = F.pad(chunk.transpose(1, 2), (0, n - chunk.shape[1]), mode="replicate").transpose(1, 2)
            z = torch.randn(audio.shape[0], self.config.latent, generator=generator, device=audio.device)
            pose = start[:, None] + self.decode(z, chunk, style, start)
            parts.append(pose if not parts else pose[:, 1:])
            start = pose[:, -1]
            if s + n >= t:
                break
        return torch.cat(parts, 1)[:, :t]

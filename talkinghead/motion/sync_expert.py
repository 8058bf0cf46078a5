"""Audio / mouth-motion sync expert: a SyncNet-style pair of encoders (Chung & Zisserman 2016;
Wav2Lip's lip expert, Prajwal et al. 2020) on mouth blendshapes instead of pixels.

FD2Talk guides its expression transformer with a pre-trained lip expert: the cosine similarity
between the mouth-motion embedding and the audio embedding of a short window should be high
(L_sync = -log cos). Ours is trained on the speech-motion corpus with in-sync windows as
positives and windows shifted by >= `min_shift` frames (or from another clip) as negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SyncExpertConfig:
    audio_dim: int = 512
    mouth_channels: int = 17
    window: int = 5            # frames per window (0.2 s at 25 fps, as Wav2Lip's expert)
    dim: int = 128
    embed: int = 64

    @classmethod
    def debug(cls, **kw) -> SyncExpertConfig:
        return cls(**{"dim": 16, "embed": 16, **kw})


def _encoder(in_dim: int, dim: int, embed: int, window: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(in_dim, dim, 3, padding=1), nn.GELU(),
        nn.Conv1d(dim, dim, 3, padding=1), nn.GELU(),
        nn.Conv1d(dim, embed, window), nn.ReLU(),   # one embedding per window (valid conv)
    )


class SyncExpert(nn.Module):
    def __init__(self, config: SyncExpertConfig = SyncExpertConfig()) -> None:
        super().__init__()
        self.config = config
        self.audio = _encoder(config.audio_dim, config.dim, config.embed, config.window)
        self.mouth = _encoder(config.mouth_channels, config.dim, config.embed, config.window)

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T, A) -> (B, T - W + 1, E) unit embeddings, one per sliding window."""
        return F.normalize(self.audio(audio.transpose(1, 2)).transpose(1, 2), dim=-1, eps=1e-6)

    def embed_mouth(self, mouth: torch.Tensor) -> torch.Tensor:
        """(B, T, M) -> (B, T - W + 1, E)."""
        return F.normalize(self.mouth(mouth.transpose(1, 2)).transpose(1, 2), dim=-1, eps=1e-6)

    def forward(self, audio: torch.Tensor, mouth: torch.Tensor) -> torch.Tensor:
        """Cosine similarity in [0, 1] per sliding window: (B, T - W + 1)."""
        return (self.embed_audio(audio) * self.embed_mouth(mouth)).sum(-1).clamp(0, 1)


def sync_loss(expert: SyncExpert, audio: torch.Tensor, mouth: torch.Tensor,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """FD2Talk's L_sync = -log(cos(v, a)), averaged over windows (mask: (B, T) valid frames)."""
    cos = expert(audio, mouth)
    loss = -torch.log(cos.clamp(min=1e-4))
    if mask is None:
        return loss.mean()
    w = expert.config.window
    valid = mask.float().unfold(1, w, 1).min(-1).values                    # window fully valid
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def expert_loss(expert: SyncExpert, audio: torch.Tensor, mouth: torch.Tensor,
                mask: torch.Tensor, min_shift: int = 5,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Wav2Lip's expert objective: BCE of the cosine similarity, positives in sync, negatives
    shifted by min_shift..2*min_shift frames or taken from another clip. Returns (loss, accuracy)."""
    b, t, _ = mouth.shape
    shift = int(torch.randint(min_shift, 2 * min_shift + 1, (1,), generator=generator))
    sign = 1 if torch.rand(1, generator=generator).item() < 0.5 else -1
    negative = torch.roll(mouth, sign * shift, dims=1)
    other = torch.roll(mouth, 1, dims=0) if b > 1 else negative
    negative = torch.where(torch.rand(b, 1, 1, generator=generator) < 0.5, negative, other)
    pos, neg = expert(audio, mouth), expert(audio, negative)
    w = expert.config.window
    valid = mask.float().unfold(1, w, 1).min(-1).values
    # only windows where the mouth moves at all say anything about sync
    moving = (mouth.unfold(1, w, 1).std(-1).mean(-1) > 1e-3).float() * valid     # (B, T-W+1)
    bce = lambda p, y: F.binary_cross_entropy(p.clamp(1e-4, 1 - 1e-4), torch.full_like(p, y),  # noqa: E731
                                             reduction="none")
    loss = ((bce(pos, 1.0) + bce(neg, 0.0)) * moving).sum() / (2 * moving.sum().clamp(min=1))
    acc = (((pos > 0.5).float() + (neg < 0.5).float()) * moving).sum() / (2 * moving.sum().clamp(min=1))
    return loss, acc

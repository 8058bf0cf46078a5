"""FD2Talk motion stage (Yao et al. 2024, `../shared/papers/fd2talk.txt`, Sec. 3.2).

Two diffusion transformers with the same architecture, one for expression and one for head
pose (decoupled to ease the one-to-many mapping, Sec. 4.5.1). Each denoises a whole motion
sequence x_t (F frames) and predicts x_0 directly. The condition c = [diffusion-step embedding,
audio features] is projected to tau(c) and enters every block by cross-attention through the
alignment mask: frame i attends to audio frames j with |i - j| <= k, k = 3. Training uses 1000
diffusion steps; sampling is few-step DDIM. The expression transformer is further guided by a
pre-trained lip expert (L_sync, `sync_expert.py`).

Departures, each for a stated reason: expression = 17 mouth blendshapes + 2 blinks + brow (the
face model's coefficients, not 3DMM); self-attention is local with RoPE so one pass covers any
length (the paper trains on 25-frame windows and does not say how it runs long audio); a
blink-rate scalar conditions the expression model and a style id the pose model (the CLI's
`--blink-rate` and `--pose-style`).

This torch module trains the models and is the reference; inference runs the same network in
numpy (`fd2talk_numpy.py`, no torch import on `generate`'s path).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.diffusion.samplers import SAMPLERS
from talkinghead.diffusion.schedule import Schedule
from talkinghead.motion.fd2talk_numpy import DiTConfig  # noqa: F401  (the config lives torch-free)
from talkinghead.motion.layers import DiTBlock, timestep_embedding


class MotionDiT(nn.Module):
    """x_t (B, T, C) + step + audio (B, T, A) -> x_0 estimate (B, T, C), in normalised units."""

    def __init__(self, config: DiTConfig = DiTConfig()) -> None:
        super().__init__()
        self.config = c = config
        self.inp = nn.Linear(c.channels, c.dim)
        self.t_embed = nn.Sequential(nn.Linear(c.dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.tau = nn.Sequential(nn.Linear(c.audio_dim + c.dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.style = nn.Embedding(c.num_styles + 1, c.dim) if c.num_styles else None  # last = none
        self.rate = nn.Linear(1, c.dim) if c.blink_rate else None
        self.blocks = nn.ModuleList(DiTBlock(c.dim, c.heads, c.window, c.dim, c.align_k)
                                    for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim)
        self.out = nn.Linear(c.dim, c.channels)
        # normalisation of the motion channels (set from the corpus before training)
        self.register_buffer("mean", torch.zeros(c.channels))
        self.register_buffer("std", torch.ones(c.channels))
        self._audio_cache: tuple | None = None  # (weakrefs, versions, tau's audio part)

    def condition(self, t: torch.Tensor, style: torch.Tensor | None,
                  blink_rate: torch.Tensor | None) -> torch.Tensor:
        """(B, D) global condition: step embedding (+ style, + blink rate)."""
        cond = self.t_embed(timestep_embedding(t, self.config.dim))
        if self.style is not None:
            if style is None:
                style = torch.full_like(t, self.config.num_styles)
            cond = cond + self.style(style)
        if self.rate is not None and blink_rate is not None:  # NaN = no rate given
            given = ~torch.isnan(blink_rate)
            cond = cond + self.rate(torch.nan_to_num(blink_rate)[:, None].float()) * given[:, None]
        return cond

    def forward(self, x: torch.Tensor, t: torch.Tensor, audio: torch.Tensor,
                style: torch.Tensor | None = None, blink_rate: torch.Tensor | None = None) -> torch.Tensor:
        return self.denoise(x, audio, self.condition(t, style, blink_rate))

    def denoise(self, x: torch.Tensor, audio: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The transformer under a global condition `cond` (B, D): noisy motion -> prediction."""
        b, n, _ = x.shape
        if torch.is_grad_enabled():
            tau = self.tau(torch.cat([audio, cond[:, None].expand(b, n, -1)], -1))    # (B, T, D)
        else:
            tau = self.tau[1:](self._audio_part(audio) + self._cond_part(cond)[:, None])  # (B, T, D)
        h = self.inp(x)                                                               # (B, T, D)
        for block in self.blocks:
            h = block(h, tau, cond)
        return self.out(self.norm(h))                                                 # (B, T, C)

    def _audio_part(self, audio: torch.Tensor) -> torch.Tensor:
        """tau's first layer on the audio alone, (B, T, D) with its bias: the same at every
        sampling step, so kept for the last audio tensor seen (the audio half was 7 % of a
        step). The key holds the audio tensor and the layer's weights, each with its version
        (bumped by in-place changes: an optimiser step, a load); inference tensors track no
        version, so they are never kept."""
        first = self.tau[0]
        tensors = (audio, first.weight, first.bias)
        key = None if any(t.is_inference() for t in tensors) else tuple(t._version for t in tensors)
        cached = self._audio_cache
        if key is not None and cached is not None and cached[1] == key and \
                all(r() is t for r, t in zip(cached[0], tensors)):
            return cached[2]
        part = F.linear(audio, first.weight[:, :self.config.audio_dim], first.bias)
        if key is not None:
            self._audio_cache = (tuple(weakref.ref(t) for t in tensors), key, part)
        return part

    def _cond_part(self, cond: torch.Tensor) -> torch.Tensor:
        return F.linear(cond, self.tau[0].weight[:, self.config.audio_dim:])        # (B, D)

    def normalise(self, motion: torch.Tensor) -> torch.Tensor:
        return (motion - self.mean) / self.std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    @torch.no_grad()
    def sample(self, audio: torch.Tensor, steps: int = 10, generator: torch.Generator | None = None,
               style: torch.Tensor | None = None, blink_rate: torch.Tensor | None = None,
               sampler: str = "ddim") -> torch.Tensor:
        """audio (B, T, A) -> motion (B, T, C) in data units, by few-step sampling."""
        schedule = Schedule.cosine(self.config.train_steps)
        noise = torch.randn(audio.shape[0], audio.shape[1], self.config.channels,
                            generator=generator, device=audio.device)

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self(x_t, t, audio, style, blink_rate)

        return self.denormalise(SAMPLERS[sampler](denoise, noise, schedule, steps))


def diffusion_loss(model: MotionDiT, motion: torch.Tensor, audio: torch.Tensor,
                   mask: torch.Tensor, schedule: Schedule, style: torch.Tensor | None = None,
                   blink_rate: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """FD2Talk's L = ||x_0 - theta(x_t, t, A)||^2 (masked). Returns (loss, x0 estimate)."""
    b = motion.shape[0]
    x0 = model.normalise(motion)
    t = torch.randint(0, schedule.num_steps, (b,), generator=generator, device=motion.device)
    noise = torch.randn(x0.shape, generator=generator, device=motion.device)
    x_t = schedule.add_noise(x0, noise, t)
    drop = torch.rand(b, generator=generator, device=motion.device) < model.config.cond_dropout
    if style is not None:
        style = torch.where(drop, torch.full_like(style, model.config.num_styles), style)
    if blink_rate is not None:
        blink_rate = torch.where(drop, torch.full_like(blink_rate, float("nan")), blink_rate)
    pred = model(x_t, t, audio, style, blink_rate)
    m = mask[..., None].float()
    loss = ((pred - x0) ** 2 * m).sum() / (m.sum() * x0.shape[-1]).clamp(min=1)
    return loss, pred

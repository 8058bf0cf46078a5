"""The conditional denoiser of the latent diffusion renderers, from diffusers' blocks.

`build_unet` makes a `UNet2DConditionModel` (the LDM UNet: ResNet blocks, self-attention and one
cross-attention per transformer block) of the widths in `LDMConfig`. `add_second_cross_attention`
gives every cross-attention a second, separate one over another token set (FD2Talk Sec. 3.3:
phi_1 over the motion, then phi_2 over the reference's appearance). `to_x0` turns the network's
prediction (epsilon, as LDM/DiffTalk, or x0, as FD2Talk Eq. 16) into the x0 estimate that the
samplers of talkinghead/diffusion/ take, and `sample` runs one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LDMConfig:
    """What both renderers' denoisers share (the renderer configs extend it)."""

    latent_channels: int = 4                  # set from the VAE
    latent_size: int = 32                     # set from the VAE and the crop size
    channels: tuple[int, ...] = (64, 128)     # UNet block widths (one resolution each)
    layers_per_block: int = 1
    heads: int = 4
    groups: int = 16                          # GroupNorm groups
    cross_dim: int = 128                      # token width of the cross-attentions
    cond_tokens: int = 4                      # a condition vector -> this many tokens
    diffusion_steps: int = 1000
    prediction: str = "eps"                   # "eps" or "x0"
    schedule: str = "linear"                  # "linear" (LDM) or "cosine"
    # the condition vector also added to the timestep embedding (a scale-and-shift of every ResNet
    # block, diffusers' "projection" class embedding); False: cross-attention only, as the papers
    cond_in_time: bool = False


def build_unet(cfg: LDMConfig, in_channels: int, out_channels: int, cond_dim: int | None = None):
    """The UNet; with `cfg.cond_in_time`, `cond_dim` is the width of the condition vector passed
    as `class_labels` (added to the timestep embedding)."""
    from diffusers import UNet2DConditionModel

    n = len(cfg.channels)
    down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
    # diffusers' `attention_head_dim` is the number of heads in this model (its naming)
    return UNet2DConditionModel(sample_size=cfg.latent_size, in_channels=in_channels,
                                out_channels=out_channels, down_block_types=down, up_block_types=up,
                                block_out_channels=tuple(cfg.channels), layers_per_block=cfg.layers_per_block,
                                norm_num_groups=cfg.groups, cross_attention_dim=cfg.cross_dim,
                                attention_head_dim=cfg.heads,
                                class_embed_type="projection" if cfg.cond_in_time else None,
                                projection_class_embeddings_input_dim=cond_dim if cfg.cond_in_time else None)


def schedule_of(cfg: LDMConfig):
    from talkinghead.diffusion.schedule import Schedule

    if cfg.schedule == "linear":    # LDM's: beta 0.00085 .. 0.012 (scaled-linear in sqrt)
        import math

        betas = torch.linspace(math.sqrt(0.00085), math.sqrt(0.012), cfg.diffusion_steps, dtype=torch.float64) ** 2
        return Schedule(torch.cumprod(1 - betas, 0).float())
    if cfg.schedule == "cosine":
        return Schedule.cosine(cfg.diffusion_steps)
    raise ValueError(f"unknown schedule {cfg.schedule!r}: linear or cosine")


class SecondCrossAttention(nn.Module):
    """Processor of a diffusers cross-attention that runs it (phi_1, over
    `encoder_hidden_states`), then a second, separate one (phi_2, its own q/k/v/out) over
    `ip_hidden_states` (the tokens passed as `cross_attention_kwargs={"ip_hidden_states": ...}`,
    a key diffusers forwards to every processor and drops quietly for the others).
    Sequential as in FD2Talk: phi_2's queries come from the hidden states after phi_1.
    """

    def __init__(self, query_dim: int, inner_dim: int, cross_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(cross_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(cross_dim, inner_dim, bias=False)
        self.to_out = nn.Linear(inner_dim, query_dim)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
        b, n, d = q.shape
        split = lambda x: x.view(b, -1, heads, d // heads).transpose(1, 2)  # noqa: E731  (B, heads, N, d/heads)
        return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, n, d)

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 ip_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        if ip_hidden_states is None:
            raise ValueError("this UNet's second cross-attention needs its tokens (ip_hidden_states)")
        h = hidden_states                                                     # (B, HW, C)
        out1 = self._attend(attn.to_q(h), attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states),
                            attn.heads)
        out1 = attn.to_out[1](attn.to_out[0](out1))                         # phi_1 (dropout: eval no-op)
        out2 = self._attend(self.to_q(h + out1), self.to_k(ip_hidden_states), self.to_v(ip_hidden_states),
                            self.heads)
        return out1 + self.to_out(out2)                                      # the block adds h


def add_second_cross_attention(unet) -> None:
    """Install `SecondCrossAttention` on every cross-attention (attn2) of `unet`."""
    from diffusers.models.attention_processor import Attention

    for name, m in unet.named_modules():
        if isinstance(m, Attention) and name.endswith("attn2"):
            inner = m.to_q.out_features
            m.set_processor(SecondCrossAttention(m.to_q.in_features, inner, m.to_k.in_features, m.heads))


def to_x0(pred: torch.Tensor, x: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor,
          prediction: str) -> torch.Tensor:
    if prediction == "x0":
        return pred
    ab = alphas_cumprod.to(x.device)[t].view(-1, *([1] * (x.dim() - 1)))
    return (x - (1 - ab).sqrt() * pred) / ab.sqrt()


def diffusion_loss(pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, prediction: str,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """LDM Eq. 2 (epsilon) or FD2Talk Eq. 16 (x0): the mean squared error of the prediction;
    `weight` (broadcast to the latent, e.g. (B, 1, h, w) heavier on the mouth) is normalised to
    mean 1 per sample, so the loss's scale does not change with it."""
    err = (pred - (noise if prediction == "eps" else x0)) ** 2
    if weight is None:
        return err.mean()
    w = weight.expand_as(err)
    return (err * w / w.mean(dim=tuple(range(1, w.dim())), keepdim=True)).mean()


def frame_noise(shape: tuple[int, ...], frames: range, seed: int) -> torch.Tensor:
    """(len(frames), *shape) starting noise, each frame's drawn from (seed, frame index) alone, so
    the output does not depend on how frames are chunked."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + i))
                        for i in frames])

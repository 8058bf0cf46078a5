"""DAWN's conditional Audio-to-Video Flow Diffusion Model (dawn.txt, Sec. 3.3, 3.5, 3.6).

A 3D U-Net denoiser (Ho et al., "Video diffusion models") over the LFG motion latents
z^m_{1:N} = [f, m] (N, 3, h, w) of a whole clip, predicting the clean latents (x0):

* input: the noisy latents concatenated with the source latent z_src and an embedding of the
  source's face mask (a light convolution), both broadcast over time (Sec. 3.3, "Conditioning");
* every residual block holds, per resolution level: a 2D conv residual unit with the diffusion
  step embedding; spatial self-attention over the h x w positions of each frame (at the lower
  levels); cross-attention of each frame to its own audio embedding (a_{i-k..i+k}: the frame and
  its k neighbours) and, separately, to its pose/blink change from the source
  (delta rho_i = rho_i - rho_src, one token each for pose and blink); temporal self-attention
  at every position over frames, with RoPE and a local window, so one pass handles any length;
* loss (Eq. 7): L_simple + w_lip * L_simple on the lip mask;
* sampling: DDIM over the whole clip at once (`sample`); memory stays bounded because the
  denoiser runs over time tiles with a halo covering its full temporal receptive field
  (levels x temporal layers x window), so tiling changes nothing in the output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.motion.layers import Attention, timestep_embedding

POSE_DIM, BLINK_DIM = 6, 2        # delta yaw/pitch/roll (deg/10), translation (cm); eyeBlink L/R


@dataclass
class A2VConfig:
    latent_size: int = 32
    motion_channels: int = 3
    source_channels: int = 256     # LFG latent channels
    audio_dim: int = 512
    audio_k: int = 2               # each frame attends to audio frames i-k..i+k
    channels: tuple[int, ...] = (64, 128, 256)
    spatial_attention_from: int = 1    # levels >= this have spatial self-attention
    heads: int = 4
    window: int = 40               # temporal local attention: |i - j| <= window (DAWN: 80 wide)
    lip_weight: float = 1.0        # w_lip of Eq. 7
    diffusion_steps: int = 1000
    flow_scale: float = 10.0       # latents: flow * flow_scale, blocking map * 2 - 1

    @classmethod
    def debug(cls, **kw) -> A2VConfig:
        base = dict(latent_size=8, source_channels=64, audio_dim=16, channels=(16, 32), heads=2,
                    window=8)
        return cls(**{**base, **kw})


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class ResUnit(nn.Module):
    """2D conv residual unit on (B*T, C, h, w), with the diffusion-step embedding added."""

    def __init__(self, cin: int, cout: int, temb: int) -> None:
        super().__init__()
        self.n1, self.c1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(temb, cout)
        self.n2, self.c2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, temb):
        h = self.c1(F.silu(self.n1(x))) + self.t(temb)[:, :, None, None]
        return self.skip(x) + self.c2(F.silu(self.n2(h)))


class Block(nn.Module):
    """ResUnit -> spatial attention (optional) -> audio and pose/blink cross-attention ->
    temporal attention (RoPE, local window). x: (B, T, C, h, w)."""

    def __init__(self, cin: int, cout: int, cfg: A2VConfig, temb: int, spatial: bool) -> None:
        super().__init__()
        self.res = ResUnit(cin, cout, temb)
        self.spatial = Attention(cout, cfg.heads, use_rope=False) if spatial else None
        self.audio = Attention(cout, cfg.heads, kv_dim=cfg.audio_dim, use_rope=False)
        self.pose = Attention(cout, cfg.heads, kv_dim=cout, use_rope=False)
        self.temporal = Attention(cout, cfg.heads, window=cfg.window, use_rope=True)
        self.norms = nn.ModuleList(nn.LayerNorm(cout) for _ in range(4))
        for attn in (self.audio, self.pose, self.temporal):
            nn.init.zeros_(attn.out.weight)
            nn.init.zeros_(attn.out.bias)

    def forward(self, x, temb, audio, pose):
        """audio: (B*T, 2k+1, A) tokens; pose: (B*T, 2, C) tokens; temb: (B*T, E)."""
        b, t, _, h, w = x.shape
        y = self.res(x.flatten(0, 1), temb)                                     # (BT, C, h, w)
        c = y.shape[1]
        tokens = y.flatten(2).transpose(1, 2)                                    # (BT, hw, C)
        if self.spatial is not None:
            tokens = tokens + self.spatial(self.norms[0](tokens))
        tokens = tokens + self.audio(self.norms[1](tokens), audio)
        tokens = tokens + self.pose(self.norms[2](tokens), pose)
        seq = tokens.view(b, t, h * w, c).transpose(1, 2).reshape(b * h * w, t, c)  # (B hw, T, C)
        seq = seq + self.temporal(self.norms[3](seq))
        return seq.view(b, h * w, t, c).permute(0, 2, 3, 1).reshape(b, t, c, h, w)


class A2VFDM(nn.Module):
    def __init__(self, config: A2VConfig = A2VConfig()) -> None:
        super().__init__()
        self.config = cfg = config
        ch = cfg.channels
        temb = 4 * ch[0]
        self.temb = nn.Sequential(nn.Linear(ch[0], temb), nn.SiLU(), nn.Linear(temb, temb))
        self.mask_embed = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.SiLU(),
                                        nn.Conv2d(16, 16, 3, padding=1))
        self.inp = nn.Conv2d(cfg.motion_channels + cfg.source_channels + 16, ch[0], 3, padding=1)
        self.pose_tokens = nn.ModuleList([nn.Linear(POSE_DIM, ch[-1]), nn.Linear(BLINK_DIM, ch[-1])])
        self.pose_proj = nn.ModuleList(nn.Linear(ch[-1], c) for c in ch)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, c in enumerate(ch):
            self.down.append(Block(ch[max(i - 1, 0)], c, cfg, temb, i >= cfg.spatial_attention_from))
            self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1) if i < len(ch) - 1 else nn.Identity())
        self.mid = Block(ch[-1], ch[-1], cfg, temb, True)
        self.up = nn.ModuleList()
        for i in reversed(range(len(ch))):
            self.up.append(Block(2 * ch[i], ch[max(i - 1, 0)], cfg, temb, i >= cfg.spatial_attention_from))
        self.out = nn.Sequential(_norm(ch[0]), nn.SiLU(), nn.Conv2d(ch[0], cfg.motion_channels, 3, padding=1))

    @property
    def receptive_frames(self) -> int:
        """Frames either side that can influence an output frame (all temporal attentions)."""
        return self.config.window * (2 * len(self.config.channels) + 1)

    def _audio_tokens(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T, A) -> (B*T, 2k+1, A): each frame's own audio and its k neighbours either side."""
        k = self.config.audio_k
        padded = F.pad(audio.transpose(1, 2), (k, k), mode="replicate").transpose(1, 2)  # (B, T+2k, A)
        windows = padded.unfold(1, 2 * k + 1, 1)                                   # (B, T, A, 2k+1)
        return windows.permute(0, 1, 3, 2).flatten(0, 1)

    def forward(self, x, t, source, mask, audio, pose, blink) -> torch.Tensor:
        """x (B, T, 3, h, w) noisy latents; t (B,) steps; source (B, Cz, h, w); mask (B, 1, h, w);
        audio (B, T, A); pose (B, T, 6); blink (B, T, 2) -> (B, T, 3, h, w) clean-latent estimate."""
        b, n = x.shape[:2]
        cond = torch.cat([source, self.mask_embed(mask)], 1)                      # (B, Cz+16, h, w)
        h = torch.cat([x, cond[:, None].expand(-1, n, -1, -1, -1)], 2)
        h = self.inp(h.flatten(0, 1)).unflatten(0, (b, n))                         # (B, T, C0, h, w)
        temb = self.temb(timestep_embedding(t, self.config.channels[0]))
        temb = temb[:, None].expand(-1, n, -1).flatten(0, 1)                       # (BT, E)
        a = self._audio_tokens(audio)
        p = torch.stack([self.pose_tokens[0](pose), self.pose_tokens[1](blink)], 2).flatten(0, 1)  # (BT, 2, C)
        skips = []
        for i, (block, down) in enumerate(zip(self.down, self.downsample)):
            h = block(h, temb, a, self.pose_proj[i](p))
            skips.append(h)
            h = down(h.flatten(0, 1)).unflatten(0, (b, n))
        h = self.mid(h, temb, a, self.pose_proj[-1](p))
        for j, block in enumerate(self.up):
            i = len(self.up) - 1 - j
            skip = skips[i]
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h.flatten(0, 1), size=skip.shape[-2:], mode="nearest").unflatten(0, (b, n))
            h = block(torch.cat([h, skip], 2), temb, a, self.pose_proj[max(i - 1, 0)](p))
        return self.out(h.flatten(0, 1)).unflatten(0, (b, n))

    def config_dict(self) -> dict:
        return asdict(self.config)


def to_latent(zm: torch.Tensor, flow_scale: float) -> torch.Tensor:
    """LFG motion [f, m] (..., 3, h, w) -> the diffusion model's roughly unit-scale latents."""
    return torch.cat([zm[..., :2, :, :] * flow_scale, zm[..., 2:, :, :] * 2 - 1], -3)


def from_latent(x: torch.Tensor, flow_scale: float) -> torch.Tensor:
    return torch.cat([x[..., :2, :, :] / flow_scale, ((x[..., 2:, :, :] + 1) / 2).clamp(0, 1)], -3)


def lip_weighted_loss(pred, target, lip_mask, lip_weight: float) -> torch.Tensor:
    """Eq. 7 on (B, T, 3, h, w) latents; lip_mask (B, T, 1, h, w) in [0, 1]."""
    err = (pred - target) ** 2
    return err.mean() + lip_weight * (err * lip_mask).mean()


@torch.no_grad()
def sample(model: A2VFDM, source, mask, audio, pose, blink, steps: int = 10, seed: int = 0,
           tile: int = 200) -> torch.Tensor:
    """DDIM sample of the whole clip's motion latents (1, T, 3, h, w), in one non-autoregressive
    pass. Long clips run the denoiser over time tiles with an exact halo."""
    from talkinghead.diffusion.samplers import ddim
    from talkinghead.diffusion.schedule import Schedule

    cfg = model.config
    n = audio.shape[1]
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, n, cfg.motion_channels, cfg.latent_size, cfg.latent_size), generator=g)
    halo = model.receptive_frames

    def denoise(x, t):
        out = torch.empty_like(x)
        for a in range(0, n, tile):
            b = min(n, a + tile)
            lo, hi = max(0, a - halo), min(n, b + halo)
            y = model(x[:, lo:hi], t, source, mask, audio[:, lo:hi], pose[:, lo:hi], blink[:, lo:hi])
            out[:, a:b] = y[:, a - lo:b - lo]
        return out

    return ddim(denoise, noise.to(source.device), Schedule.cosine(cfg.diffusion_steps), steps)

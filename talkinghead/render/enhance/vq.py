"""Hallo2's high-resolution enhancement: a VQ codebook predictor with temporal alignment.

Hallo2 (appendix A.2, "Training"): "For the super-resolution model, the parameters of the VAE
encoder are optimized, with a focus on refining the weights responsible for codebook
prediction. Temporal alignment is employed within the Transformer-based architecture to ensure
consistency and high-quality outputs across frames." Its released code builds this on
CodeFormer (Zhou et al., "Towards Robust Blind Face Restoration with Codebook Lookup
Transformer", NeurIPS 2022). The two training stages here follow CodeFormer:

1. `stage="vq"`: a VQ autoencoder learns a discrete codebook of high-quality face patches
   (encoder -> nearest codebook entry, straight-through -> decoder; L1 reconstruction +
   codebook and commitment losses, beta = 0.25).
2. `stage="code"`: the codebook and decoder are frozen; a copy of the encoder (fine-tuned, as in
   Hallo2) reads the degraded frames and a transformer predicts, for every token of every
   frame, the index of the high-quality code (cross-entropy against the codes of the clean
   frames, plus an L2 pull of the encoder features onto them). Each transformer layer has
   spatial self-attention within a frame, then temporal self-attention across the clip's frames
   at each token position (Hallo2's temporal alignment), then an MLP.

At inference the predicted codes are looked up and decoded: frames (B, T, 3, H, W) in [-1, 1]
-> restored frames of the same size (upscale first, e.g. bicubically, to get a larger output).

What it can do: train end to end on the shared loop (`training/enhance_tasks.py`); what it
cannot: no weights for it exist offline (CodeFormer's and Hallo2's are not on any registry), so
untrained it outputs noise. `generate --enhance` uses Real-ESRGAN (`face.py`), which works now.
Not built: CodeFormer's controllable feature transform (the fidelity weight w skip connections)
and its adversarial / perceptual losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VQEnhancerConfig:
    channels: tuple[int, ...] = (64, 128, 128, 256, 256, 256)   # per level; x2 down between
    codebook_size: int = 1024
    code_dim: int = 256
    dim: int = 512                # transformer width
    layers: int = 9
    heads: int = 8
    max_frames: int = 32          # temporal position embeddings
    beta: float = 0.25            # commitment weight
    feat_weight: float = 1.0      # stage "code": L2 of LQ features onto the clean codes

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channels) - 1)


def debug_config() -> VQEnhancerConfig:
    """2 layers, 16 wide: for tests."""
    return VQEnhancerConfig(channels=(16, 16, 16), codebook_size=32, code_dim=16, dim=16,
                            layers=2, heads=2, max_frames=8)


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, c), c)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, 1, 1),
                                   _norm(cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, 1, 1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.block(x)


class Encoder(nn.Module):
    """(N, 3, H, W) -> (N, code_dim, H / d, W / d), d = 2 ** (levels - 1)."""

    def __init__(self, cfg: VQEnhancerConfig) -> None:
        super().__init__()
        ch = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(3, ch[0], 3, 1, 1)]
        for i in range(len(ch)):
            layers.append(ResBlock(ch[max(i - 1, 0)], ch[i]))
            if i < len(ch) - 1:
                layers.append(nn.Conv2d(ch[i], ch[i], 3, 2, 1))
        layers += [_norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], cfg.code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(N, code_dim, h, w) -> (N, 3, h * d, w * d)."""

    def __init__(self, cfg: VQEnhancerConfig) -> None:
        super().__init__()
        ch = cfg.channels[::-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.code_dim, ch[0], 3, 1, 1)]
        for i in range(len(ch)):
            layers.append(ResBlock(ch[max(i - 1, 0)], ch[i]))
            if i < len(ch) - 1:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i], ch[i], 3, 1, 1)]
        layers += [_norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], 3, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Codebook(nn.Module):
    """Nearest-entry vector quantisation with a straight-through gradient (VQ-VAE)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / size, 1.0 / size)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) -> (N, h * w) index of the nearest entry."""
        flat = z.flatten(2).transpose(1, 2)                                   # (N, hw, D)
        e = self.embedding.weight
        d = flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(-1)   # (N, hw, K)
        return d.argmin(-1)

    def lookup(self, idx: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """(N, h * w) indices -> (N, D, h, w) entries."""
        return self.embedding(idx).transpose(1, 2).reshape(idx.shape[0], -1, *hw)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """z -> (straight-through quantised z, indices, codebook loss, commitment term unscaled)."""
        idx = self.indices(z)
        q = self.lookup(idx, z.shape[2:])
        return z + (q - z).detach(), idx, F.mse_loss(q, z.detach()), F.mse_loss(z, q.detach())


class AlignedLayer(nn.Module):
    """Spatial self-attention within each frame, temporal self-attention across frames at each
    token position (Hallo2's temporal alignment), MLP; pre-norm residual."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_s, self.norm_t, self.norm_m = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.spatial = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.temporal = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, pos_t: torch.Tensor) -> torch.Tensor:
        b, t, n, d = x.shape
        s = self.norm_s(x).reshape(b * t, n, d)                               # (B*T, N, D)
        x = x + self.spatial(s, s, s, need_weights=False)[0].reshape(b, t, n, d)
        h = (self.norm_t(x) + pos_t[:t, None]).transpose(1, 2).reshape(b * n, t, d)   # (B*N, T, D)
        x = x + self.temporal(h, h, h, need_weights=False)[0].reshape(b, n, t, d).transpose(1, 2)
        return x + self.mlp(self.norm_m(x))


class VQEnhancer(nn.Module):
    """VQ autoencoder (stage 1) + LQ encoder and temporal code transformer (stage 2)."""

    def __init__(self, config: VQEnhancerConfig = VQEnhancerConfig()) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)            # high-quality encoder (stage 1)
        self.codebook = Codebook(config.codebook_size, config.code_dim)
        self.decoder = Decoder(config)
        self.lq_encoder = Encoder(config)         # Hallo2: the encoder optimised for prediction
        self.proj_in = nn.Linear(config.code_dim, config.dim)
        self.pos_t = nn.Parameter(torch.zeros(config.max_frames, config.dim))
        self.layers = nn.ModuleList(AlignedLayer(config.dim, config.heads) for _ in range(config.layers))
        self.norm_out = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.codebook_size)

    def start_code_stage(self) -> None:
        """Stage 2: freeze the codebook, the decoder and the clean encoder; start the LQ encoder
        from the clean one (as CodeFormer and Hallo2 fine-tune it)."""
        self.lq_encoder.load_state_dict(self.encoder.state_dict())
        for m in (self.encoder, self.codebook, self.decoder):
            m.requires_grad_(False)

    def _check(self, frames: torch.Tensor) -> tuple[int, int]:
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"VQEnhancer takes (B, T, 3, H, W) frames, got {tuple(frames.shape)}")
        d = self.config.downsample
        if frames.shape[3] % d or frames.shape[4] % d:
            raise ValueError(f"frame size {tuple(frames.shape[3:])} must be a multiple of {d}")
        if frames.shape[1] > self.config.max_frames:
            raise ValueError(f"{frames.shape[1]} frames, more than max_frames={self.config.max_frames}")
        return frames.shape[0], frames.shape[1]

    def predict(self, lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 3, H, W) degraded -> (logits (B, T, h*w, K), LQ features (B*T, D, h, w))."""
        b, t = self._check(lq)
        feat = self.lq_encoder(lq.flatten(0, 1))                              # (B*T, D, h, w)
        x = self.proj_in(feat.flatten(2).transpose(1, 2))                     # (B*T, N, dim)
        x = x.reshape(b, t, -1, self.config.dim)                              # (B, T, N, dim)
        for layer in self.layers:
            x = layer(x, self.pos_t)
        return self.head(self.norm_out(x)), feat

    def reconstruct(self, hq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage 1 pass: (N, 3, H, W) -> (reconstruction, codebook loss, commitment term)."""
        q, _, cb, commit = self.codebook(self.encoder(hq))
        return self.decoder(q), cb, commit

    @torch.no_grad()
    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) in [-1, 1] -> restored (B, T, 3, H, W): predicted codes, decoded."""
        b, t = self._check(lq)
        logits, feat = self.predict(lq)
        q = self.codebook.lookup(logits.argmax(-1).flatten(0, 1), feat.shape[2:])
        return self.decoder(q).reshape(b, t, *lq.shape[2:]).clamp(-1, 1)

"""Training task of Hallo2's VQ codebook predictor with temporal alignment
(`render/enhance/vq.py`) through the shared loop, in CodeFormer's two stages:

- `stage="vq"`: clean frames -> VQ autoencoder; L1 reconstruction + codebook loss + beta x
  commitment;
- `stage="code"` (after `VQEnhancer.start_code_stage`): clips degraded as one video (the same
  blur and downscale factor for all frames of a clip, fresh noise per frame) -> code logits;
  cross-entropy against the clean frames' code indices + feat_weight x L2 of the LQ encoder's
  features onto the clean codes.

Clips come from `prepare`d shards (`data`, any size: resized to `size`) or from an in-memory
array (N, T, 3, S, S) in [0, 1] (tests). Frames are fed to the model in [-1, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.render.enhance.vq import VQEnhancer, VQEnhancerConfig


@dataclass
class VQTaskConfig:
    stage: str = "vq"             # "vq" | "code"
    data: str = ""                # a prepared dataset (talkinghead prepare), or "" with `clips`
    size: int = 64                # frame side the model trains at
    frames: int = 4               # clip length (temporal alignment window)
    max_down: float = 4.0         # degradation: downscale factor drawn from [1, max_down]
    max_blur: float = 2.0         # Gaussian blur sigma (px) drawn from [0.1, max_blur]
    max_noise: float = 0.04       # noise sigma drawn from [0, max_noise] (images in [0, 1])
    val_clips: int = 4


def degrade(clips: torch.Tensor, rng: np.random.Generator, cfg: VQTaskConfig) -> torch.Tensor:
    """(B, T, 3, S, S) in [0, 1] -> the same degraded (blur, downscale, noise, upscale back)."""
    b, t, c, s, _ = clips.shape
    out = []
    for clip in clips:
        sigma = float(rng.uniform(0.1, cfg.max_blur))
        k = int(2 * np.ceil(2 * sigma) + 1)
        ax = torch.arange(k, dtype=torch.float32) - k // 2
        g = torch.exp(-ax ** 2 / (2 * sigma ** 2))
        g = (g / g.sum())
        x = F.conv2d(F.pad(clip, (k // 2,) * 4, mode="replicate"),
                     (g[:, None] * g[None, :]).expand(c, 1, k, k), groups=c)   # (T, 3, S, S)
        low = max(4, int(round(s / rng.uniform(1.0, cfg.max_down))))
        x = F.interpolate(x, size=(low, low), mode="area")
        x = x + float(rng.uniform(0, cfg.max_noise)) * torch.from_numpy(
            rng.standard_normal(x.shape).astype(np.float32))
        out.append(F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False).clamp(0, 1))
    return torch.stack(out)


class VQEnhanceTask:
    def __init__(self, cfg: VQTaskConfig, model_cfg: VQEnhancerConfig, batch_size: int,
                 clips: np.ndarray | None = None, model: VQEnhancer | None = None) -> None:
        if cfg.stage not in ("vq", "code"):
            raise ValueError(f"unknown stage {cfg.stage!r}: 'vq' or 'code'")
        self.cfg, self.model_cfg, self.batch_size = cfg, model_cfg, batch_size
        self.model = model if model is not None else VQEnhancer(model_cfg)
        if cfg.stage == "code":
            self.model.start_code_stage()
        self._clips = None if clips is None else torch.as_tensor(clips, dtype=torch.float32)
        self._shards = None
        if cfg.data:
            from talkinghead.training.video_data import VideoShards

            self._shards = VideoShards(cfg.data, "train", cfg.size)
        elif self._clips is None:
            raise ValueError("VQEnhanceTask needs `data` (a prepared dataset) or in-memory clips")
        rng = np.random.default_rng(1)
        self._val = [self._batch(rng) for _ in range(max(1, cfg.val_clips // batch_size))]

    def _batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self._shards is not None:
            hq = self._shards.clips(self.batch_size, self.cfg.frames, rng, True).frames
        else:
            idx = rng.integers(len(self._clips), size=self.batch_size)
            hq = self._clips[idx, :self.cfg.frames]
            if hq.shape[-1] != self.cfg.size:
                hq = F.interpolate(hq.flatten(0, 1), size=(self.cfg.size,) * 2,
                                   mode="area").reshape(*hq.shape[:3], self.cfg.size, self.cfg.size)
        return hq, degrade(hq, rng, self.cfg)                   # (B, T, 3, S, S) each

    def train_batch(self, step: int, g: torch.Generator):
        return self._batch(np.random.default_rng(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=g))))

    def loss(self, model: VQEnhancer, batch, g: torch.Generator):
        dev = next(model.parameters()).device
        hq, lq = (x.to(dev) * 2 - 1 for x in batch)
        beta = self.model_cfg.beta
        if self.cfg.stage == "vq":
            rec, cb, commit = model.reconstruct(hq.flatten(0, 1))
            l1 = F.l1_loss(rec, hq.flatten(0, 1))
            return l1 + cb + beta * commit, {"l1": l1.item(), "codebook": cb.item()}
        with torch.no_grad():
            z = model.encoder(hq.flatten(0, 1))                               # (B*T, D, h, w)
            target = model.codebook.indices(z)                                # (B*T, h*w)
            q = model.codebook.lookup(target, z.shape[2:])
        logits, feat = model.predict(lq)                                      # (B, T, N, K)
        ce = F.cross_entropy(logits.flatten(0, 2), target.flatten())
        feat_l2 = F.mse_loss(feat, q)
        acc = (logits.argmax(-1).flatten() == target.flatten()).float().mean()
        return ce + self.model_cfg.feat_weight * feat_l2, {"ce": ce.item(), "feat_l2": feat_l2.item(),
                                                           "code_acc": acc.item()}

    def val_batches(self):
        return self._val

    def checkpoint_config(self) -> dict:
        return {"model": "vq_enhancer", "config": asdict(self.model_cfg), "task": asdict(self.cfg)}

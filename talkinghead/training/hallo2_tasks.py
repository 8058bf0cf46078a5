"""Training Hallo2's motion-frame UNet (`render/ldm/hallo2.py`) through the shared loop.

Hallo2's second stage (`../shared/papers/hallo2_appendix.txt`, A.2): the denoiser learns to
generate a frame from the reference image, its Motion and the corrupted motion frames (patch
drop + Gaussian noise). A sample is a `prepare`d video's target frame i, its clip's first frame
as the reference (FD2Talk's sampling, as `ldm_tasks.UNetTask`), the Motion of i relative to the
reference, and the M frames that end d frames before i, d uniform in 1..clip_frames (what the
target sees at generation: the previous clip's last frames). The corruption is applied here, in
training only; the loss is FD2Talk's J_0 loss (Eq. 16), optionally mouth-weighted. `motion_drop`
drops the motion frames from that share of batches (the same UNet then renders without them);
`ref_drop` zeroes the reference latent of that share of the other batches' samples.

`talkinghead train hallo2 --config configs/hallo2/unet[.debug].json --data D --vae V -o DIR`
(the VAE from `train fd2talk-render --stage vae`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from talkinghead.render.ldm.autoencoder import encode
from talkinghead.render.ldm.hallo2 import Hallo2Config, Hallo2UNet, corrupt
from talkinghead.render.ldm.unet import diffusion_loss
from talkinghead.training.ldm_tasks import FrameSamples, UNetTask, UNetTaskConfig
from talkinghead.training.loop import TrainConfig, TrainResult, train


def motion_frame_indices(i: int, m: int, clip_frames: int, rng: np.random.Generator) -> np.ndarray:
    """(M,) frames i-d-M+1 .. i-d, d uniform in 1..clip_frames (clamped at the video's start):
    where target i's motion frames are at generation, the previous clip's last M frames."""
    end = i - int(rng.integers(1, clip_frames + 1))
    return np.clip(np.arange(end - m + 1, end + 1), 0, None)


class MotionFrameSamples(FrameSamples):
    """FrameSamples plus each target's motion frames."""

    def draw_frames(self, n: int, rng: np.random.Generator, cfg: UNetTaskConfig,
                    model_cfg: Hallo2Config) -> dict[str, torch.Tensor]:
        from talkinghead.data.prepare import LIP_BIT

        out: dict[str, list] = {k: [] for k in ("target", "ref", "motion", "lips", "frames")}
        m = model_cfg.motion_frames
        for _ in range(n):
            k = int(rng.integers(len(self.shards.videos)))
            v, mv = self.shards.videos[k], self.motion[k]
            r = int(rng.integers(max(1, len(v) - cfg.clip_length + 1)))
            i = min(len(v) - 1, r + int(rng.integers(cfg.clip_length)))
            idx = motion_frame_indices(i, m, model_cfg.clip_frames, rng)
            imgs = self.shards._images(np.stack([v.frames[j] for j in (i, r, *idx)])) * 2 - 1  # (2+M, 3, S, S)
            out["target"].append(imgs[0])
            out["ref"].append(imgs[1])
            out["frames"].append(imgs[2:])
            out["motion"].append(torch.from_numpy(mv[i] - mv[r]))
            out["lips"].append(torch.from_numpy(((np.asarray(v.masks[i]) & LIP_BIT) > 0)[None].astype(np.float32)))
        return {k: torch.stack(x) for k, x in out.items()}


class Hallo2Task(UNetTask):
    """UNetTask (FD2Talk's renderer) with motion frames, corrupted in training only."""

    def __init__(self, cfg: UNetTaskConfig, model_cfg: Hallo2Config, batch_size: int) -> None:
        super().__init__("fd2talk-render", cfg, model_cfg, batch_size)
        self.model = Hallo2UNet(self.model_cfg)
        self.train_samples = MotionFrameSamples(self.train_set, cfg.data)
        self.val_samples = MotionFrameSamples(self.val_set, cfg.data)
        rng = np.random.default_rng(0)
        self._val = [self.val_samples.draw_frames(4, rng, cfg, self.model_cfg)
                     for _ in range(max(1, cfg.val_samples // 4))]

    def train_batch(self, step: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        from talkinghead.training.video_data import numpy_rng as _rng

        return self.train_samples.draw_frames(self.batch_size, _rng(g), self.cfg, self.model_cfg)

    def loss(self, model, batch: dict[str, torch.Tensor], g: torch.Generator):
        dev = next(model.parameters()).device
        b = {k: v.to(dev) for k, v in batch.items()}
        self.vae.to(dev)
        c = self.model_cfg
        with torch.no_grad():
            z0 = encode(self.vae, b["target"], self.scale)
            zr = encode(self.vae, b["ref"], self.scale)
            zf = encode(self.vae, b["frames"].flatten(0, 1), self.scale).unflatten(0, b["frames"].shape[:2])
        if model.training:                                  # Hallo2: corrupted in training only
            zf = corrupt(zf, c.patch, c.patch_drop, c.noise_std, g)
            if c.motion_drop > 0 and float(torch.rand((), generator=g)) < c.motion_drop:
                zf = None                                   # this batch: reference tokens only
            elif c.ref_drop > 0:                            # these samples: motion frames only
                keep = (torch.rand(len(zr), generator=g) >= c.ref_drop).to(zr)
                zr = zr * keep[:, None, None, None]
        t = torch.randint(0, c.diffusion_steps, (len(z0),), generator=g).to(dev)
        noise = torch.randn(z0.shape, generator=g).to(dev)
        pred = model(self.schedule.add_noise(z0, noise, t), t, zr, b["motion"], zf)
        loss = diffusion_loss(pred, z0, noise, c.prediction, self._mouth_weight(b, z0))
        return loss, {"mse": float(loss.detach())}

    def checkpoint_config(self) -> dict:
        return {**super().checkpoint_config(), "model": "hallo2"}


def train_hallo2(config: str | Path, data: str | None, vae: str | None, output: str | Path,
                 steps: int | None = None, max_minutes: float | None = None, resume: bool = True,
                 progress: bool = True, max_cpu_minutes: float | None = None, **model_overrides) -> TrainResult:
    """`talkinghead train hallo2`: {"model": Hallo2Config, "task": UNetTaskConfig, "train": ...};
    `max_cpu_minutes` bounds the training by process CPU time (TrainConfig.max_cpu_minutes)."""
    from talkinghead.errors import InputError
    from talkinghead.training.ldm_tasks import _read, _tuples
    from talkinghead.training.run import dataclass_from, override

    raw = _read(config)
    model_cfg = dataclass_from(Hallo2Config, {**_tuples(raw.get("model", {})), **model_overrides}, f"{config} model")
    task_cfg = dataclass_from(UNetTaskConfig, raw.get("task", {}), f"{config} task")
    train_cfg = dataclass_from(TrainConfig, raw.get("train", {}), f"{config} train")
    task_cfg.data = data or task_cfg.data
    task_cfg.vae = vae or task_cfg.vae
    if not task_cfg.vae:
        raise InputError("train hallo2 needs --vae (a `--stage vae` checkpoint or a diffusers VAE folder)")
    if not task_cfg.data:
        raise InputError("no dataset: pass --data DIR (made by `talkinghead prepare`)")
    override(train_cfg, steps, max_minutes)
    if max_cpu_minutes is not None:
        train_cfg.max_cpu_minutes = max_cpu_minutes
    task = Hallo2Task(task_cfg, model_cfg, train_cfg.batch_size)
    return train(task, train_cfg, output, resume=resume, progress=progress)


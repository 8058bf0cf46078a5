"""Training tasks for the motion models (plugged into `training.loop.train`).

Each task draws windows from the speech-motion corpus (`MotionCorpus`), computes its paper's
loss, validates on fixed windows of the held-out voice and names the config stored with the
weights. `build_task(name, ...)` is what `talkinghead train motion --model NAME` calls.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from talkinghead.diffusion.schedule import Schedule
from talkinghead.errors import InputError
from talkinghead.motion.fd2talk import DiTConfig, MotionDiT, diffusion_loss
from talkinghead.motion.pbnet import PBNet, PBNetConfig
from talkinghead.motion.sadtalker import ExpNet, ExpNetConfig, PoseVAE, PoseVAEConfig
from talkinghead.motion.sync_expert import SyncExpert, SyncExpertConfig, expert_loss, sync_loss
from talkinghead.training.motion_data import MotionBatch, MotionCorpus

MOUTH = slice(0, 17)           # mouth channels of the expression vector
BLINK = slice(17, 19)


@dataclass
class MotionTaskConfig:
    corpus: str = ""
    feature: str = "whisper"
    window: int = 100          # frames per training window (4 s)
    val_batches: int = 8
    model: dict = field(default_factory=dict)     # overrides of the model's config
    debug: bool = False        # the 2-layer, 16-wide build
    sync_weight: float = 0.05  # FD2Talk expression / ExpNet: lip expert term
    expert: str = ""           # checkpoint dir of the sync expert ("" = none)
    kl_weight: float = 1e-3
    gan_weight: float = 0.01


class _CorpusTask:
    name = "base"

    def __init__(self, cfg: MotionTaskConfig, batch_size: int) -> None:
        self.cfg = cfg
        self.batch_size = batch_size
        self.train_set = MotionCorpus(cfg.corpus, "train", cfg.feature)
        self.val_set = MotionCorpus(cfg.corpus, "val", cfg.feature)
        self._val = self.val_set.fixed_batches(cfg.val_batches, batch_size, cfg.window)
        self.audio_dim = self.train_set.feature_dim

    def train_batch(self, step: int, generator: torch.Generator) -> MotionBatch:
        rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=generator)))
        return self.train_set.sample(self.batch_size, self.cfg.window, rng)

    def val_batches(self) -> list[MotionBatch]:
        return self._val

    def _model_config(self, cls, **defaults):
        base = cls.debug(**defaults) if self.cfg.debug else cls(**defaults)
        return cls(**{**asdict(base), **self.cfg.model})

    def checkpoint_config(self) -> dict:
        return {"model": self.name, "feature": self.cfg.feature, **asdict(self.model.config)}

    def _expert(self) -> SyncExpert | None:
        if not self.cfg.expert:
            return None
        from talkinghead.motion.registry import load_checkpoint

        expert = load_checkpoint(self.cfg.expert)
        if not isinstance(expert, SyncExpert):
            raise InputError(f"{self.cfg.expert} is not a sync expert")
        return expert.eval().requires_grad_(False)


def _masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask[..., None].float()
    return ((pred - target) ** 2 * m).sum() / (m.sum() * pred.shape[-1]).clamp(min=1)


class SyncExpertTask(_CorpusTask):
    name = "sync_expert"

    def __init__(self, cfg: MotionTaskConfig, batch_size: int) -> None:
        super().__init__(cfg, batch_size)
        self.model = SyncExpert(self._model_config(SyncExpertConfig, audio_dim=self.audio_dim))

    def loss(self, model, batch: MotionBatch, generator):
        loss, acc = expert_loss(model, batch.audio, batch.expression[..., MOUTH], batch.mask,
                                generator=generator)
        return loss, {"acc": acc.item()}


class FD2TalkTask(_CorpusTask):
    """part = "expression" (with the lip expert) or "pose" (with style ids)."""

    def __init__(self, cfg: MotionTaskConfig, batch_size: int, part: str) -> None:
        super().__init__(cfg, batch_size)
        self.part = part
        self.name = f"fd2talk_{part}"
        stats = self.train_set.stats()[part]
        kw = dict(audio_dim=self.audio_dim)
        kw.update(channels=20, blink_rate=True) if part == "expression" else kw.update(channels=3, num_styles=8)
        self.model = MotionDiT(self._model_config(DiTConfig, **kw))
        self.model.mean.copy_(torch.from_numpy(stats[0]))
        self.model.std.copy_(torch.from_numpy(stats[1]))
        self.schedule = Schedule.cosine(self.model.config.train_steps)
        self.expert = self._expert() if part == "expression" else None

    def loss(self, model, batch: MotionBatch, generator):
        if self.part == "expression":
            loss, pred = diffusion_loss(model, batch.expression, batch.audio, batch.mask,
                                        self.schedule, blink_rate=batch.blink_rate, generator=generator)
        else:
            loss, pred = diffusion_loss(model, batch.pose, batch.audio, batch.mask, self.schedule,
                                        style=batch.style, generator=generator)
        logs = {"diffusion": loss.item()}
        if self.expert is not None:
            unwrapped = getattr(model, "module", model)
            mouth = unwrapped.denormalise(pred)[..., MOUTH]
            ls = sync_loss(self.expert, batch.audio, mouth, batch.mask)
            logs["sync"] = ls.item()
            loss = loss + self.cfg.sync_weight * ls
        return loss, logs


class ExpNetTask(_CorpusTask):
    name = "sadtalker_expnet"

    def __init__(self, cfg: MotionTaskConfig, batch_size: int) -> None:
        super().__init__(cfg, batch_size)
        self.model = ExpNet(self._model_config(ExpNetConfig, audio_dim=self.audio_dim))
        self.expert = self._expert()

    def loss(self, model, batch: MotionBatch, generator):
        beta0 = batch.expression[:, 0].clone()
        beta0[:, BLINK] = 0.0
        blink = batch.expression[..., BLINK].mean(-1)      # z_blink: the eyelid signal to follow
        pred = model(batch.audio, beta0, blink)
        loss = _masked_mse(pred, batch.expression, batch.mask)
        logs = {"mse": loss.item()}
        if self.expert is not None:
            ls = sync_loss(self.expert, batch.audio, pred[..., MOUTH], batch.mask)
            logs["sync"] = ls.item()
            loss = loss + self.cfg.sync_weight * ls
        return loss, logs


class PoseVAETask(_CorpusTask):
    name = "sadtalker_posevae"

    def __init__(self, cfg: MotionTaskConfig, batch_size: int) -> None:
        cfg.window = (cfg.model or {}).get("frames", 32)
        super().__init__(cfg, batch_size)
        self.model = PoseVAE(self._model_config(PoseVAEConfig, audio_dim=self.audio_dim))

    def loss(self, model, batch: MotionBatch, generator):
        vae = getattr(model, "module", model)
        recon, mu, logvar = vae(batch.pose, batch.audio, batch.style, batch.pose_start, generator)
        mse = _masked_mse(recon / vae.config.pose_scale, batch.pose / vae.config.pose_scale, batch.mask)
        kl = -0.5 * torch.mean(1 + logvar - mu ** 2 - logvar.exp())
        # LSGAN: the discriminator learns real vs generated (on detached fakes), the generator
        # learns to be called real; both terms share one optimiser step
        disc = vae.discriminator
        d_real, d_fake = disc(batch.pose), disc(recon.detach())
        d_loss = ((d_real - 1) ** 2).mean() + (d_fake ** 2).mean()
        disc.requires_grad_(False)
        g_loss = ((disc(recon) - 1) ** 2).mean()
        disc.requires_grad_(True)
        loss = mse + self.cfg.kl_weight * kl + self.cfg.gan_weight * (g_loss + d_loss)
        return loss, {"mse": mse.item(), "kl": kl.item(), "gan_g": g_loss.item(), "gan_d": d_loss.item()}


class PBNetTask(_CorpusTask):
    name = "dawn_pbnet"

    def __init__(self, cfg: MotionTaskConfig, batch_size: int) -> None:
        super().__init__(cfg, batch_size)
        self.model = PBNet(self._model_config(PBNetConfig, audio_dim=self.audio_dim))

    def loss(self, model, batch: MotionBatch, generator):
        target = torch.cat([batch.pose, batch.expression[..., BLINK]], -1)        # (B, T, 5)
        src = torch.cat([batch.pose_start, torch.zeros_like(batch.pose_start[:, :2])], -1)
        recon, mu, logvar = model(target, batch.audio, src, generator)
        scale = getattr(model, "module", model).scale
        mse = _masked_mse(recon / scale, target / scale, batch.mask)
        kl = -0.5 * torch.mean(1 + logvar - mu ** 2 - logvar.exp())
        return mse + self.cfg.kl_weight * kl, {"mse": mse.item(), "kl": kl.item()}


TASKS = {
    "sync_expert": lambda c, b: SyncExpertTask(c, b),
    "fd2talk_expression": lambda c, b: FD2TalkTask(c, b, "expression"),
    "fd2talk_pose": lambda c, b: FD2TalkTask(c, b, "pose"),
    "sadtalker_expnet": lambda c, b: ExpNetTask(c, b),
    "sadtalker_posevae": lambda c, b: PoseVAETask(c, b),
    "dawn_pbnet": lambda c, b: PBNetTask(c, b),
}


def build_task(name: str, cfg: MotionTaskConfig, batch_size: int):
    if name not in TASKS:
        raise InputError(f"unknown motion model {name!r}; choose one of {', '.join(TASKS)}")
    if not cfg.corpus or not Path(cfg.corpus).is_dir():
        raise InputError(f"corpus directory {cfg.corpus!r} not found (talkinghead corpus build)")
    return TASKS[name](cfg, batch_size)

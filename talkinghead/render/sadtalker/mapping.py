"""SadTalker's MappingNet (sadtalker.txt, Sec. 3.3): a window of 3DMM coefficients (expression
64, angles 3, translation 3; the still-mode checkpoint adds 3 crop parameters) -> face-vid2vid's
head pose and keypoint expression offsets, replacing its image-based estimator.

Two released checkpoints: `mapping_00229-model.pth.tar` (70 coefficients, the default `crop`
preprocessing) and `mapping_00109-model.pth.tar` (73, `full`/still mode). Keys are the official
(`mapping.*` inside the tar's state dict).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from talkinghead.render.sadtalker.keypoints import HeadPose


@dataclass(frozen=True)
class MappingConfig:
    coeff_nc: int = 70
    descriptor_nc: int = 1024
    layer: int = 3
    num_kp: int = 15
    num_bins: int = 66

    @property
    def window(self) -> int:
        """Frames of coefficients one output sees (27 for 3 layers: 7 + 3 * 6)."""
        return 7 + 6 * self.layer


class MappingNet(nn.Module):
    """coefficients (B, coeff_nc, window) -> HeadPose."""

    def __init__(self, config: MappingConfig = MappingConfig()) -> None:
        super().__init__()
        c = config
        self.layer = c.layer
        self.first = nn.Sequential(nn.Conv1d(c.coeff_nc, c.descriptor_nc, kernel_size=7))
        for i in range(c.layer):
            setattr(self, f"encoder{i}", nn.Sequential(
                nn.LeakyReLU(0.1), nn.Conv1d(c.descriptor_nc, c.descriptor_nc, kernel_size=3, dilation=3)))
        self.pooling = nn.AdaptiveAvgPool1d(1)
        self.fc_roll = nn.Linear(c.descriptor_nc, c.num_bins)
        self.fc_pitch = nn.Linear(c.descriptor_nc, c.num_bins)
        self.fc_yaw = nn.Linear(c.descriptor_nc, c.num_bins)
        self.fc_t = nn.Linear(c.descriptor_nc, 3)
        self.fc_exp = nn.Linear(c.descriptor_nc, 3 * c.num_kp)

    def forward(self, coeffs: torch.Tensor) -> HeadPose:
        out = self.first(coeffs)                                          # (B, D, W - 6)
        for i in range(self.layer):
            out = getattr(self, f"encoder{i}")(out) + out[:, :, 3:-3]     # each layer trims 6
        out = self.pooling(out).flatten(1)                                # (B, D)
        return HeadPose(yaw=self.fc_yaw(out), pitch=self.fc_pitch(out), roll=self.fc_roll(out),
                        t=self.fc_t(out), exp=self.fc_exp(out))

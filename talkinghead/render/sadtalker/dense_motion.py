"""face-vid2vid's dense motion network (Wang et al. 2021; sadtalker.txt, Sec. 3.3): from source
and driving 3D keypoints and the source's 3D feature volume, a dense 3D warp (a softmax mask
over K+1 keypoint-local translations, the first the identity) and an occlusion map.
Keys follow the official `generator.dense_motion_network.*`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.render.sadtalker.blocks import Hourglass, coordinate_grid, keypoint_gaussians


@dataclass(frozen=True)
class DenseMotionConfig:
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_depth: int = 16
    compress: int = 4


@dataclass
class DenseMotion:
    mask: torch.Tensor            # (B, K+1, d, h, w) softmax over the K+1 motions
    deformation: torch.Tensor     # (B, d, h, w, 3) sampling grid into the source volume
    occlusion_map: torch.Tensor | None  # (B, 1, h, w)


class DenseMotionNetwork(nn.Module):
    def __init__(self, config: DenseMotionConfig, num_kp: int, feature_channel: int,
                 estimate_occlusion_map: bool = True) -> None:
        super().__init__()
        c = config
        self.hourglass = Hourglass(c.block_expansion, (num_kp + 1) * (c.compress + 1), c.num_blocks, c.max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, c.compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(c.compress)
        self.occlusion = (nn.Conv2d(self.hourglass.out_filters * c.reshape_depth, 1, kernel_size=7, padding=3)
                          if estimate_occlusion_map else None)
        self.num_kp = num_kp

    def sparse_motions(self, spatial: tuple[int, int, int], kp_driving: torch.Tensor,
                       kp_source: torch.Tensor) -> torch.Tensor:
        """(B, K+1, d, h, w, 3): identity, then per keypoint the translation driving -> source."""
        b = kp_driving.shape[0]
        identity = coordinate_grid(spatial, kp_source)[None, None]        # (1, 1, d, h, w, 3)
        shift = (kp_source - kp_driving)[:, :, None, None, None, :]       # (B, K, 1, 1, 1, 3)
        return torch.cat([identity.expand(b, 1, *identity.shape[2:]), identity + shift], dim=1)

    def forward(self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> DenseMotion:
        b, _, d, h, w = feature.shape
        k1 = self.num_kp + 1
        feature = F.relu(self.norm(self.compress(feature)))               # (B, c, d, h, w)
        motions = self.sparse_motions((d, h, w), kp_driving, kp_source)
        repeated = feature.unsqueeze(1).expand(b, k1, *feature.shape[1:]).reshape(b * k1, -1, d, h, w)
        deformed = F.grid_sample(repeated, motions.reshape(b * k1, d, h, w, 3), align_corners=False)
        deformed = deformed.view(b, k1, -1, d, h, w)                      # (B, K+1, c, d, h, w)
        heat = (keypoint_gaussians(kp_driving, (d, h, w), 0.01)
                - keypoint_gaussians(kp_source, (d, h, w), 0.01))         # (B, K, d, h, w)
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1).unsqueeze(2)
        pred = self.hourglass(torch.cat([heat, deformed], dim=2).view(b, -1, d, h, w))
        mask = F.softmax(self.mask(pred), dim=1)                          # (B, K+1, d, h, w)
        kept = torch.where(mask < 1e-3, torch.zeros_like(mask), mask).unsqueeze(2)
        deformation = (motions.permute(0, 1, 5, 2, 3, 4) * kept).sum(dim=1).permute(0, 2, 3, 4, 1)
        occlusion = None
        if self.occlusion is not None:
            occlusion = torch.sigmoid(self.occlusion(pred.reshape(b, -1, h, w)))
        return DenseMotion(mask, deformation, occlusion)

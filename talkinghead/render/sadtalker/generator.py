"""SadTalker's occlusion-aware SPADE generator (sadtalker.txt, Sec. 3.3; face-vid2vid's generator
with a SPADE decoder): encode the source into a 3D feature volume, warp it with the dense motion
between source and driving keypoints, mask it by the occlusion map, decode with SPADE blocks.
The released 256 and 512 checkpoints share this architecture (the network is convolutional; the
input size sets the output size). Keys follow the official `generator.*`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.render.sadtalker.blocks import DownBlock, ResBlock, SameBlock2d, SPADEResnetBlock
from talkinghead.render.sadtalker.dense_motion import DenseMotionConfig, DenseMotionNetwork


@dataclass(frozen=True)
class GeneratorConfig:
    """facerender.yaml's generator_params + common_params (the released checkpoint's sizes)."""

    image_channel: int = 3
    feature_channel: int = 32
    num_kp: int = 15
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6
    estimate_occlusion_map: bool = True
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)
    decoder_channels: int = 256   # SPADE decoder input width (fixed at 256 in the official code)
    decoder_out: int = 64
    decoder_hidden: int = 128     # SPADE's hidden width (128 in the official code)
    decoder_middle: int = 6       # SPADE blocks at the feature's resolution (6 in the official code)

    @classmethod
    def debug(cls) -> "GeneratorConfig":
        """Small everywhere the official classes allow (their decoder is fixed at 256 wide)."""
        return cls(feature_channel=4, num_kp=4, max_features=64, reshape_channel=4, num_resblocks=1,
                   dense_motion=DenseMotionConfig(block_expansion=8, max_features=32, num_blocks=2,
                                                  reshape_depth=16, compress=2))


class SPADEDecoder(nn.Module):
    """(B, C, h, w) warped feature -> (B, 3, 4h, 4w) image in [0, 1]; the feature is also the
    SPADE blocks' segmentation input."""

    def __init__(self, ic: int = 256, oc: int = 64, hidden: int = 128, middle: int = 6) -> None:
        super().__init__()
        self.fc = nn.Conv2d(ic, 2 * ic, 3, padding=1)
        self.middle = middle
        for i in range(middle):
            setattr(self, f"G_middle_{i}", SPADEResnetBlock(2 * ic, 2 * ic, ic, hidden))
        self.up_0 = SPADEResnetBlock(2 * ic, ic, ic, hidden)
        self.up_1 = SPADEResnetBlock(ic, oc, ic, hidden)
        self.conv_img = nn.Conv2d(oc, 3, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.fc(feature)
        for i in range(self.middle):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        x = self.up_0(self.up(x), feature)
        x = self.up_1(self.up(x), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))


@dataclass
class GeneratorOutput:
    prediction: torch.Tensor              # (B, 3, H, W) in [0, 1]
    mask: torch.Tensor
    occlusion_map: torch.Tensor | None
    deformation: torch.Tensor | None = None   # (B, d, h, w, 3) sampling grid into the source volume


class OcclusionAwareSPADEGenerator(nn.Module):
    def __init__(self, config: GeneratorConfig = GeneratorConfig()) -> None:
        super().__init__()
        c = config
        self.dense_motion_network = DenseMotionNetwork(c.dense_motion, c.num_kp, c.feature_channel,
                                                       c.estimate_occlusion_map)
        self.first = SameBlock2d(c.image_channel, c.block_expansion)
        widths = [min(c.max_features, c.block_expansion * 2 ** i) for i in range(c.num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(DownBlock(widths[i], widths[i + 1]) for i in range(c.num_down_blocks))
        self.second = nn.Conv2d(widths[-1], c.max_features, kernel_size=1)
        self.reshape_channel, self.reshape_depth = c.reshape_channel, c.reshape_depth
        self.resblocks_3d = nn.Sequential()
        for i in range(c.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock(c.reshape_channel, dims=3))
        out = c.block_expansion * 2 ** c.num_down_blocks
        self.third = SameBlock2d(c.max_features, out, lrelu=True)
        self.fourth = nn.Conv2d(out, out, kernel_size=1)
        self.decoder = SPADEDecoder(c.decoder_channels, c.decoder_out, c.decoder_hidden, c.decoder_middle)

    def source_volume(self, source: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, D, H/4, W/4): computed once per portrait."""
        out = self.first(source)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        b, _, h, w = out.shape
        volume = out.view(b, self.reshape_channel, self.reshape_depth, h, w)  # (B, C, D, h, w)
        return self.resblocks_3d(volume)

    def render(self, volume: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> GeneratorOutput:
        motion = self.dense_motion_network(volume, kp_driving, kp_source)
        deformation = motion.deformation
        if deformation.shape[1:4] != volume.shape[2:]:
            deformation = F.interpolate(deformation.permute(0, 4, 1, 2, 3), size=volume.shape[2:],
                                        mode="trilinear").permute(0, 2, 3, 4, 1)
        out = F.grid_sample(volume, deformation, align_corners=False)      # (B, C, D, h, w)
        b, c, d, h, w = out.shape
        out = self.fourth(self.third(out.view(b, c * d, h, w)))
        occlusion = motion.occlusion_map
        if occlusion is not None:
            if occlusion.shape[2:] != out.shape[2:]:
                occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear")
            out = out * occlusion
        return GeneratorOutput(self.decoder(out), motion.mask, occlusion, deformation)

    def forward(self, source: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> GeneratorOutput:
        return self.render(self.source_volume(source), kp_driving, kp_source)

"""SadTalker's face render as a trainable whole (sadtalker.txt, Sec. 3.3): MappingNet turns a
window of coefficients into face-vid2vid's head pose and keypoint expression offsets for the
source and for the driving frame; the canonical keypoints of the source (keypoint detector) are
posed by both; the occlusion-aware SPADE generator warps the source's feature volume from the
source keypoints to the driving ones and decodes the frame.

The paper trains it on VoxCeleb frames with their Deep3DFaceRecon coefficients. Deep3DFaceRecon's
weights are not available offline here, so a project-trained render reads the face model's
coefficients instead: 52 blendshapes, the head angles (radians) and the translation (dm) of
every frame (`motion_coefficients`), which `prepare`d datasets already hold. The modules are
the official classes (keypoints.py, generator.py, mapping.py) at sizes set by
`FaceRenderConfig`; the released checkpoints use model.py's official sizes instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from talkinghead.render.sadtalker.dense_motion import DenseMotionConfig
from talkinghead.render.sadtalker.generator import (GeneratorConfig, GeneratorOutput,
                                                    OcclusionAwareSPADEGenerator)
from talkinghead.render.sadtalker.keypoints import HeadPose, KPConfig, KPDetector, transform_keypoints
from talkinghead.render.sadtalker.mapping import MappingConfig, MappingNet

COEFFS = 58                    # 52 blendshapes + 3 angles + 3 translation
RADIUS = 13                    # MappingNet window: 2 * 13 + 1 = 27 frames


def motion_coefficients(blendshapes: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(T, 52), (T, 3) degrees, (T, 3) cm -> (T, 58) MappingNet inputs of a trained render."""
    return np.concatenate([blendshapes, np.radians(rotation), translation / 10.0], 1).astype(np.float32)


def coefficient_window(coeffs: np.ndarray, t: int) -> np.ndarray:
    """(T, C) -> (C, 27): the frames t-13..t+13, clamped at the clip's ends (as SadTalker pads)."""
    idx = np.clip(np.arange(t - RADIUS, t + RADIUS + 1), 0, len(coeffs) - 1)
    return coeffs[idx].T


@dataclass
class FaceRenderConfig:
    size: int = 64                 # image side (the generator keeps the input size)
    num_kp: int = 10
    kp_expansion: int = 16         # keypoint detector hourglass
    kp_max: int = 128
    kp_blocks: int = 3
    kp_depth: int = 8
    kp_scale: float = 1.0          # the detector's input scale (0.25 in the release, at 256 px)
    expansion: int = 16            # generator: encoder width (decoder input = 4x)
    feature_channel: int = 8       # 3D feature volume channels
    depth: int = 8                 # 3D feature volume depth
    resblocks: int = 2
    motion_expansion: int = 16     # dense motion hourglass
    motion_max: int = 128
    motion_blocks: int = 2
    compress: int = 4
    decoder_out: int = 32
    decoder_hidden: int = 32       # SPADE hidden width (128 in the release)
    decoder_middle: int = 2        # SPADE blocks before upsampling (6 in the release)
    descriptor: int = 128          # MappingNet width
    coeffs: int = COEFFS

    @classmethod
    def debug(cls) -> "FaceRenderConfig":
        return cls(size=32, num_kp=4, kp_expansion=8, kp_max=32, kp_blocks=2, kp_depth=4, expansion=8,
                   feature_channel=4, depth=4, resblocks=1, motion_expansion=8, motion_max=32,
                   motion_blocks=2, compress=2, decoder_out=8, decoder_hidden=8, decoder_middle=1, descriptor=16)

    def kp(self) -> KPConfig:
        width = min(self.kp_max, self.kp_expansion * 2 ** self.kp_blocks)
        return KPConfig(block_expansion=self.kp_expansion, num_kp=self.num_kp, max_features=self.kp_max,
                        reshape_channel=width * self.kp_depth, reshape_depth=self.kp_depth,
                        num_blocks=self.kp_blocks, scale_factor=self.kp_scale)

    def generator(self) -> GeneratorConfig:
        return GeneratorConfig(
            feature_channel=self.feature_channel, num_kp=self.num_kp, block_expansion=self.expansion,
            max_features=self.feature_channel * self.depth, reshape_channel=self.feature_channel,
            reshape_depth=self.depth, num_resblocks=self.resblocks,
            dense_motion=DenseMotionConfig(self.motion_expansion, self.motion_max, self.motion_blocks,
                                           self.depth, self.compress),
            decoder_channels=4 * self.expansion, decoder_out=self.decoder_out,
            decoder_hidden=self.decoder_hidden, decoder_middle=self.decoder_middle)

    def mapping(self) -> MappingConfig:
        return MappingConfig(coeff_nc=self.coeffs, descriptor_nc=self.descriptor, num_kp=self.num_kp)


@dataclass
class FaceRenderOutput:
    prediction: torch.Tensor       # (B, 3, S, S) in [0, 1]
    canonical: torch.Tensor        # (B, K, 3) canonical keypoints of the source
    driving: HeadPose              # MappingNet's output for the driving window


class FaceRender(nn.Module):
    """source (B, 3, S, S), coefficient windows (B, C, 27) of source and driving -> the driving
    frame. Module names are the official ones (kp_extractor, generator, mapping)."""

    def __init__(self, config: FaceRenderConfig = FaceRenderConfig()) -> None:
        super().__init__()
        self.config = config
        self.kp_extractor = KPDetector(config.kp())
        self.generator = OcclusionAwareSPADEGenerator(config.generator())
        self.mapping = MappingNet(config.mapping())

    def encode_source(self, source: torch.Tensor, window: torch.Tensor):
        """Canonical keypoints, posed source keypoints and the feature volume (once per portrait)."""
        canonical = self.kp_extractor(source)
        return canonical, transform_keypoints(canonical, self.mapping(window)), self.generator.source_volume(source)

    def render(self, canonical: torch.Tensor, kp_source: torch.Tensor, volume: torch.Tensor,
               window: torch.Tensor) -> tuple[torch.Tensor, HeadPose]:
        """Driving windows (B, C, 27) -> frames (B, 3, S, S); the source tensors broadcast by
        repetition when B > their batch."""
        out, pose = self.render_output(canonical, kp_source, volume, window)
        return out.prediction, pose

    def render_output(self, canonical: torch.Tensor, kp_source: torch.Tensor, volume: torch.Tensor,
                      window: torch.Tensor) -> tuple[GeneratorOutput, HeadPose]:
        """As `render`, with the generator's whole output (occlusion map, deformation)."""
        pose = self.mapping(window)
        b = window.shape[0]
        if canonical.shape[0] != b:
            canonical, kp_source = canonical.expand(b, -1, -1), kp_source.expand(b, -1, -1)
            volume = volume.expand(b, *volume.shape[1:])
        kp_driving = transform_keypoints(canonical, pose)
        return self.generator.render(volume, kp_driving, kp_source), pose

    def forward(self, source: torch.Tensor, source_window: torch.Tensor,
                driving_window: torch.Tensor) -> FaceRenderOutput:
        canonical, kp_source, volume = self.encode_source(source, source_window)
        prediction, pose = self.render(canonical, kp_source, volume, driving_window)
        return FaceRenderOutput(prediction, canonical, pose)

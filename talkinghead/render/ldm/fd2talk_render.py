"""FD2Talk's frame generation (Yao et al., "FD2Talk: Towards Generalized Talking Head Generation
with Facial Decoupled Diffusion Model"; ../shared/papers/fd2talk.txt, Sec. 3.3 and 3.4.2).

A diffusion UNet in the latent space of the autoencoder denoises J_T ~ N(0, I) one frame at a
time under two conditions kept apart (Sec. 3.3, Eq. 13-14, Tab. 2 "concatenate UNet conditions"
is the ablation): every transformer block has two cross-attentions, phi_1 over the frame's motion
(expression + head pose, concatenated and linearly projected) and then phi_2 over the reference's
appearance, the reference latent x = E(I) as tokens. The UNet predicts J_0 (Eq. 16).

Our Motion stands in for the 3DMM coefficients: expression = the 52 blendshapes, pose =
yaw/pitch/roll / 10 deg and translation (cm), all relative to the reference frame, the Motion
that FD2Talk's motion model (talkinghead/motion/fd2talk.py) produces. The decoder reads the
reference latent with the frame's, D([x; J_0]) (Sec. 3.3, 3.4.2), when the VAE was fine-tuned
with `train fd2talk-render --stage decoder` (autoencoder.add_reference_input); a plain VAE decodes
J_0 alone. Deviations: training uses the measured Motion of the video, not the motion model's
predictions; `cond_in_time` (CPU configs) also adds the motion vector to the timestep embedding.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from talkinghead.render.ldm.renderer import LDMRenderer, LDMSource
from talkinghead.render.ldm.unet import LDMConfig, add_second_cross_attention, build_unet
from talkinghead.types import Motion

MOTION_DIM = 52 + 6


@dataclass
class FD2TalkRenderConfig(LDMConfig):
    prediction: str = "x0"                # Eq. 16
    patch: int = 2                        # appearance tokens: patches of the reference latent


def motion_vectors(motion: Motion) -> np.ndarray:
    """(T, 58) float32: [beta; rho] = blendshapes, rotation / 10 deg, translation (cm)."""
    return np.concatenate([motion.blendshapes, motion.rotation / 10.0, motion.translation], 1).astype(np.float32)


class FD2TalkUNet(nn.Module):
    def __init__(self, cfg: FD2TalkRenderConfig) -> None:
        super().__init__()
        self.config = cfg
        c, p = cfg.latent_channels, cfg.patch
        self.motion = nn.Linear(MOTION_DIM, cfg.cond_tokens * cfg.cross_dim)
        self.appearance = nn.Conv2d(c, cfg.cross_dim, p, stride=p)
        self.appearance_pos = nn.Parameter(torch.randn((cfg.latent_size // p) ** 2, cfg.cross_dim) * 0.02)
        self.unet = build_unet(cfg, c, c, MOTION_DIM)
        add_second_cross_attention(self.unet)

    def motion_tokens(self, motion: torch.Tensor) -> torch.Tensor:   # (B, 58) -> (B, tokens, cross)
        return self.motion(motion).unflatten(-1, (self.config.cond_tokens, self.config.cross_dim))

    def appearance_tokens(self, z_ref: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, hw/p^2, cross)
        return self.appearance(z_ref).flatten(2).transpose(1, 2) + self.appearance_pos

    def forward(self, zt: torch.Tensor, t: torch.Tensor, z_ref: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """zt, z_ref (B, C, h, w); motion (B, 58) -> the J_0 estimate."""
        return self.unet(zt, t, encoder_hidden_states=self.motion_tokens(motion),
                         class_labels=motion if self.config.cond_in_time else None,
                         cross_attention_kwargs={"ip_hidden_states": self.appearance_tokens(z_ref)}).sample


def build_fd2talk_render(fields: dict) -> FD2TalkUNet:
    from talkinghead.io.checkpoint import config_from

    return FD2TalkUNet(config_from(FD2TalkRenderConfig, fields))


class FD2TalkRenderer(LDMRenderer):
    """`generate --renderer fd2talk`: the portrait is the reference; frames in chunks."""

    name = "fd2talk"
    model_name = "fd2talk_render"
    needs_audio = False                   # driven by the Motion alone

    def build(self, fields: dict) -> FD2TalkUNet:
        return build_fd2talk_render(fields)

    @torch.no_grad()
    def latents(self, src: LDMSource, motion: Motion, audio: np.ndarray | None, seed: int) -> Iterator[torch.Tensor]:
        from talkinghead.render.ldm.unet import frame_noise

        if not motion.relative:
            raise ValueError("the FD2Talk renderer is driven by motion relative to the portrait")
        vectors = torch.from_numpy(motion_vectors(motion)).to(self.device)
        for a in range(0, len(motion), self.chunk):
            frames = range(a, min(len(motion), a + self.chunk))
            zr = src.z.expand(len(frames), -1, -1, -1)
            m = vectors[frames.start:frames.stop]
            yield self.sample(lambda x, t: self.model(x, t, zr, m), frame_noise(src.z.shape[1:], frames, seed))

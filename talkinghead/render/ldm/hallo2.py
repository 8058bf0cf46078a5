"""Hallo2's motion frames: long generation, chunk after chunk, without drift.

Hallo2 (Cui et al. 2024, "Hallo2: Long-Duration and High-Resolution Audio-Driven Portrait Image
Animation"; `../shared/papers/hallo2_appendix.txt`, A.2) generates a long video clip by clip,
each clip conditioned on the last frames of the one before ("motion frames"). In its second
training stage the motion frames are corrupted by patch drop and Gaussian noise, so the network
cannot copy appearance from them (their errors would then accumulate clip after clip: drift);
it takes appearance from the reference image and only motion continuity from the motion frames.

Built on FD2Talk's frame UNet (`fd2talk_render.py`, issue #18): phi_1 attends over the frame's
Motion, phi_2 over appearance tokens. Here phi_2's token set is the reference latent's patches
followed by the M motion frames' patches (their own patch embedding, position and frame-index
embeddings): Hallo2 feeds the motion frames to the denoiser beside the reference (through its
ReferenceNet); our UNet has no ReferenceNet, so they join the reference's tokens.

* Training (`training/hallo2_tasks.py`): the motion frames are the M frames before the target,
  ending 1..`clip_frames` frames before it (a target anywhere in a clip sees the previous clip's
  last frames), encoded by the VAE, then `corrupt`ed: each latent patch dropped (zeroed) with
  probability `patch_drop`, then Gaussian noise of std `noise_std` added. With `motion_drop` > 0
  that share of batches trains without motion frames (reference tokens only), so the same
  weights also render without them (`use_motion_frames=False`): the drift benchmark's baseline.
  With `ref_drop` > 0 that share of samples (in batches with motion frames) has its reference
  latent zeroed (classifier-free dropout of the reference): appearance must then come from the
  motion frames, so the UNet learns to read them (with the reference always there, a small
  UNet learns to copy it and all but ignores the motion frames).
* Generation (`Hallo2Renderer`): clips of `clip_frames` frames; the first clip's motion frames
  are the portrait's latent repeated (Hallo2 starts from the reference image); each later clip's
  are the last M latents of the clip before. Only those M latents are kept, so memory does not
  grow with the length. The appendix says inference also corrupts the motion frames;
  `corrupt_at_inference` (default off) does that with the training settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from talkinghead.render.ldm.fd2talk_render import FD2TalkRenderConfig, FD2TalkRenderer, FD2TalkUNet, motion_vectors
from talkinghead.render.ldm.renderer import LDMSource
from talkinghead.types import Motion


@dataclass
class Hallo2Config(FD2TalkRenderConfig):
    motion_frames: int = 2          # M: last frames of the previous clip (Hallo2: 2 or 4)
    clip_frames: int = 8            # frames generated per clip (Hallo2: 16)
    patch_drop: float = 0.25        # share of motion-frame latent patches zeroed in training
    noise_std: float = 0.5          # Gaussian noise on the motion-frame latents in training
    motion_drop: float = 0.0        # share of training batches without motion frames: > 0 makes one
    #                                 UNet serve both with them and without (the drift baseline)
    ref_drop: float = 0.0           # share of training samples (with motion frames) whose reference
    #                                 latent is zeroed (classifier-free dropout of the reference), so
    #                                 the motion frames must carry appearance
    use_motion_frames: bool = True  # False: the plain FD2Talk UNet's conditions (the baseline)
    reference_scale: float = 1.0    # generation with motion frames: x0 = x0(no ref) + s (x0(ref) -
    #                                 x0(no ref)) (a UNet trained with ref_drop); 0: the motion
    #                                 frames alone carry appearance after the first clip
    corrupt_at_inference: bool = False


def corrupt(z: torch.Tensor, patch: int, drop: float, noise_std: float,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Hallo2's motion-frame augmentation: z (B, M, C, h, w) with each patch x patch cell of
    each frame zeroed with probability `drop`, then + N(0, noise_std^2)."""
    b, m, c, h, w = z.shape
    keep = (torch.rand(b, m, 1, h // patch, w // patch, generator=generator) >= drop).to(z)
    keep = keep.repeat_interleave(patch, -2).repeat_interleave(patch, -1)            # (B, M, 1, h, w)
    noise = torch.randn(z.shape, generator=generator).to(z) * noise_std
    return z * keep + noise


class Hallo2UNet(FD2TalkUNet):
    """FD2Talk's UNet whose phi_2 also attends over the motion frames' latent patches."""

    def __init__(self, cfg: Hallo2Config) -> None:
        super().__init__(cfg)
        c, p, d = cfg.latent_channels, cfg.patch, cfg.cross_dim
        n = (cfg.latent_size // p) ** 2
        self.frames_embed = nn.Conv2d(c, d, p, stride=p)
        self.frames_pos = nn.Parameter(torch.randn(n, d) * 0.02)
        self.frames_index = nn.Parameter(torch.randn(cfg.motion_frames, d) * 0.02)

    def frame_tokens(self, z_frames: torch.Tensor) -> torch.Tensor:
        """(B, M, C, h, w) -> (B, M * hw / p^2, cross)."""
        b, m = z_frames.shape[:2]
        tok = self.frames_embed(z_frames.flatten(0, 1)).flatten(2).transpose(1, 2)    # (B*M, n, cross)
        tok = tok.unflatten(0, (b, m)) + self.frames_pos + self.frames_index[:m, None]  # (B, M, n, cross)
        return tok.flatten(1, 2)

    def forward(self, zt: torch.Tensor, t: torch.Tensor, z_ref: torch.Tensor, motion: torch.Tensor,
                z_frames: torch.Tensor | None = None) -> torch.Tensor:
        """zt, z_ref (B, C, h, w); motion (B, 58); z_frames (B, M, C, h, w) or None (the
        baseline: reference tokens only) -> the J_0 estimate."""
        tokens = self.appearance_tokens(z_ref)                                        # (B, n, cross)
        if z_frames is not None and self.config.use_motion_frames:
            tokens = torch.cat([tokens, self.frame_tokens(z_frames)], 1)              # (B, n(1+M), cross)
        return self.unet(zt, t, encoder_hidden_states=self.motion_tokens(motion),
                         class_labels=motion if self.config.cond_in_time else None,
                         cross_attention_kwargs={"ip_hidden_states": tokens}).sample


def build_hallo2(fields: dict) -> Hallo2UNet:
    from talkinghead.io.checkpoint import config_from

    return Hallo2UNet(config_from(Hallo2Config, fields))


class Hallo2Renderer(FD2TalkRenderer):
    """`generate --renderer hallo2`: FD2Talk's frame UNet, clip after clip on motion frames.

    `ablation` (measurement only, None in use) replaces each clip's motion frames: "zero" by
    zeros, "shuffle" by the generated last frames of a random clip 3-11 clips earlier (true
    outputs of this run, at the wrong time; a ring of 12 clips, so memory stays flat)."""

    name = "hallo2"
    model_name = "hallo2"
    ablation: str | None = None
    ABLATIONS = (None, "zero", "shuffle")

    def build(self, fields: dict) -> Hallo2UNet:
        return build_hallo2(fields)

    def _condition(self, frames_z: torch.Tensor, ring: list[torch.Tensor], g: torch.Generator) -> torch.Tensor:
        """The motion frames (1, M, C, h, w) this clip is conditioned on."""
        cfg: Hallo2Config = self.model.config
        if self.ablation == "zero":
            frames_z = torch.zeros_like(frames_z)
        elif self.ablation == "shuffle" and len(ring) > 3:
            frames_z = ring[int(torch.randint(0, len(ring) - 3, (), generator=g))]
        if cfg.corrupt_at_inference:
            frames_z = corrupt(frames_z, cfg.patch, cfg.patch_drop, cfg.noise_std, g)
        return frames_z

    def _denoiser(self, zr: torch.Tensor, m: torch.Tensor, zf: torch.Tensor):
        """x_t, t -> the J_0 estimate, the reference mixed in by `reference_scale` (with motion
        frames only: without them the reference is the only appearance)."""
        s, model = self.model.config.reference_scale, self.model
        if s == 1 or not self.model.config.use_motion_frames:
            return lambda x, t: model(x, t, zr, m, zf)
        none = torch.zeros_like(zr)
        if s == 0:
            return lambda x, t: model(x, t, none, m, zf)
        return lambda x, t: (lambda free: free + s * (model(x, t, zr, m, zf) - free))(model(x, t, none, m, zf))

    @torch.no_grad()
    def latents(self, src: LDMSource, motion: Motion, audio: np.ndarray | None, seed: int) -> Iterator[torch.Tensor]:
        from talkinghead.render.ldm.unet import frame_noise

        if not motion.relative:
            raise ValueError("the Hallo2 renderer is driven by motion relative to the portrait")
        if self.ablation not in self.ABLATIONS:
            raise ValueError(f"unknown motion-frame ablation {self.ablation!r}: one of {self.ABLATIONS}")
        cfg: Hallo2Config = self.model.config
        vectors = torch.from_numpy(motion_vectors(motion)).to(getattr(self, "device", src.z.device))
        frames_z = src.z[:, None].expand(1, cfg.motion_frames, -1, -1, -1)           # (1, M, C, h, w)
        g = torch.Generator().manual_seed(seed)
        ring: list[torch.Tensor] = []
        for a in range(0, len(motion), cfg.clip_frames):
            frames = range(a, min(len(motion), a + cfg.clip_frames))
            n = len(frames)
            cond = self._condition(frames_z, ring, g)
            zr, zf = src.z.expand(n, -1, -1, -1), cond.expand(n, -1, -1, -1, -1)
            m = vectors[frames.start:frames.stop]
            z = self.sample(self._denoiser(zr, m, zf), frame_noise(src.z.shape[1:], frames, seed))
            yield z
            last = torch.cat([frames_z[0], z], 0)[-cfg.motion_frames:]                  # (M, C, h, w)
            frames_z = last[None]
            ring = (ring + [frames_z])[-12:]

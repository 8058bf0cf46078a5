"""DiffTalk (Shen et al., "DiffTalk: Crafting Diffusion Models for Generalized Audio-Driven
Portraits Animation", CVPR 2023; ../shared/papers/difftalk.txt, Sec. 3).

- Smooth audio (Sec. 3.2, Fig. 3): per-frame audio features in a window of 2w+1 frames (w = 8)
  centred on the frame, a learnable temporal filter computed by self-attention over the window
  -> a in R^{D_A}. (The paper's per-frame features come from DeepSpeech; here from the prepared
  data's kind, Whisper-base by default.)
- Identity (Sec. 3.2): a reference frame x_r of the same person (training: at least 60 frames from
  the target) and the masked ground-truth frame x_m (the mouth region blanked by a fixed box that
  shows no lip shape) are encoded by the frozen E_I and concatenated channel-wise with the noisy
  latent: C_v = [z_t; z_m; z_r] feeds the UNet's first layer.
- Landmarks: the face outline, mouth excluded, through an MLP E_L -> l in R^{D_L}. The outline is
  read from the face-oval landmarks drawn into `prepare`'s face mask (its centroid and its extent
  along `landmark_rays` directions), so training shards and portraits give the same feature; the
  mouth box is cut out of the region first ("landmarks in the mouth area are masked to avoid
  shortcuts"): otherwise the chin's drop tells the opening of the mouth, which the model then
  reads from the landmarks instead of the audio, and at inference the portrait's still outline
  says "closed".
- C_l = [a; l] is the key/value of the UNet's cross-attentions (projected to `cond_tokens` tokens);
  with `cond_in_time` (the CPU configs; not in the paper) C_l is also added to the timestep
  embedding, so it scales and shifts every ResNet block, a stronger path for small, briefly
  trained models.
- Progressive reference at inference (Sec. 3.3, Fig. 4): frame i+1's reference is frame i's
  output (its latent), the first frame's is the portrait. "Masked z_T" (Sec. 3.3): only the
  latent cells of the mouth box are generated; every DDIM step's x0 estimate keeps the
  portrait's latent elsewhere.

The UNet predicts epsilon (LDM), or the clean latent with `prediction: "x0"` (the CPU config, as
FD2Talk's Eq. 16): under the epsilon loss what the audio tells (the mouth at high noise levels) is
weighed by alpha_bar / (1 - alpha_bar), near zero, and a small model trained for minutes was
measured to ignore the audio (held-out loss 0.018202 with it vs 0.018203 with another frame's).
Training's masked frame is the target's (the paper) or, `masked_source: "other"` (the CPU config,
training/ldm_tasks.py `reference_frame`), another frame far from it: in `generate` it is the still
portrait, so the target's own masked copy, from which its mouth opening can be read (measured:
r 0.90), is a shortcut that is gone at inference. In `generate`, the masked frame and the landmarks are the
portrait's: DiffTalk re-synthesises the mouth from the audio; head pose and blinks of the Motion
are not used (the paper takes them from the masked frames of a driving video).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from talkinghead.render.ldm.renderer import LDMRenderer, LDMSource
from talkinghead.render.ldm.unet import LDMConfig, build_unet
from talkinghead.types import Motion


@dataclass
class DiffTalkConfig(LDMConfig):
    audio_dim: int = 512                  # per-frame feature width (set from the data)
    audio_window: int = 8                 # w: 2w+1 frames
    audio_hidden: int = 64                # D_A
    landmark_rays: int = 32
    landmark_hidden: int = 32             # D_L
    # the blanked mouth box (x0, y0, x1, y1) as fractions of the crop (prepare's face crop)
    mouth_box: tuple[float, float, float, float] = (0.22, 0.5, 0.78, 0.95)


def mask_mouth(x: torch.Tensor, box: tuple[float, float, float, float]) -> torch.Tensor:
    """x_m: (B, 3, S, S) images in [-1, 1] with the mouth box set to 0 (grey)."""
    s = x.shape[-1]
    x0, y0, x1, y1 = (int(round(v * s)) for v in box)
    out = x.clone()
    out[..., y0:y1, x0:x1] = 0
    return out


def box_alpha(size: int, box: tuple[float, float, float, float], feather: float = 0.06) -> np.ndarray:
    """(S, S, 1) float32: 1 inside the box (fractions of the crop), ramping to 0 at its edge over
    `feather` of the crop side; what `DiffTalkRenderer.compose` takes from the generated crop."""
    x0, y0, x1, y1 = (v * size for v in box)
    c = np.arange(size) + 0.5
    f = max(1.0, feather * size)
    ramp = lambda a, b: np.clip(np.minimum(c - a, b - c) / f, 0, 1)  # noqa: E731
    return (ramp(y0, y1)[:, None] * ramp(x0, x1)[None, :])[..., None].astype(np.float32)


def latent_box(h: int, box: tuple[float, float, float, float]) -> torch.Tensor:
    """(1, 1, h, h): 1 on the latent cells that the mouth box touches, else 0."""
    import math

    x0, y0 = (math.floor(v * h) for v in box[:2])
    x1, y1 = (math.ceil(v * h) for v in box[2:])
    out = torch.zeros(1, 1, h, h)
    out[..., y0:y1, x0:x1] = 1
    return out


def outline_features(face_mask: np.ndarray, rays: int,
                     exclude: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """(rays + 2,) float32: the face region's centroid (x, y) and its extent along `rays`
    directions from it, as fractions of the crop side (zeros when the mask is empty). `exclude`
    (the mouth box, fractions of the crop) is cut out of the region first: "landmarks in the mouth
    area are masked to avoid shortcuts" (Sec. 3.2), the jaw's drop included."""
    s = face_mask.shape[-1]
    if exclude is not None:
        x0, y0, x1, y1 = (int(round(v * s)) for v in exclude)
        face_mask = face_mask.copy()
        face_mask[..., y0:y1, x0:x1] = False
    ys, xs = np.nonzero(face_mask)
    if len(xs) == 0:
        return np.zeros(rays + 2, np.float32)
    cx, cy = xs.mean(), ys.mean()
    ang = np.arctan2(ys - cy, xs - cx)
    bins = ((ang + np.pi) / (2 * np.pi) * rays).astype(int) % rays
    dist = np.hypot(xs - cx, ys - cy)
    ext = np.zeros(rays)
    np.maximum.at(ext, bins, dist)
    return (np.concatenate([[cx, cy], ext]) / s).astype(np.float32)


def audio_windows(features: np.ndarray, frames: np.ndarray, w: int) -> torch.Tensor:
    """(len(frames), 2w+1, D): each frame's window of features, edges repeated."""
    idx = np.clip(frames[:, None] + np.arange(-w, w + 1)[None], 0, len(features) - 1)
    return torch.from_numpy(np.asarray(features[idx], np.float32))


class SmoothAudioEncoder(nn.Module):
    """E_A's temporal filtering (Sec. 3.2): self-attention over the window, then learned softmax
    weights over it (the filter) -> one smoothed feature per frame."""

    def __init__(self, dim_in: int, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(dim_in, dim), nn.GELU(), nn.Linear(dim, dim))
        self.pos = nn.Parameter(torch.zeros(2 * window + 1, dim))
        self.attn = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True,
                                               norm_first=True)
        self.score = nn.Linear(dim, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:          # (B, 2w+1, D_in) -> (B, D_A)
        h = self.attn(self.proj(f) + self.pos)
        weights = self.score(h).softmax(1)                      # (B, 2w+1, 1)
        return (weights * h).sum(1)


class DiffTalkUNet(nn.Module):
    def __init__(self, cfg: DiffTalkConfig) -> None:
        super().__init__()
        self.config = cfg
        self.audio = SmoothAudioEncoder(cfg.audio_dim, cfg.audio_hidden, cfg.audio_window,
                                        max(1, min(cfg.heads, cfg.audio_hidden // 8)))
        self.landmarks = nn.Sequential(nn.Linear(cfg.landmark_rays + 2, cfg.landmark_hidden), nn.SiLU(),
                                       nn.Linear(cfg.landmark_hidden, cfg.landmark_hidden))
        self.cond = nn.Linear(cfg.audio_hidden + cfg.landmark_hidden, cfg.cond_tokens * cfg.cross_dim)
        c = cfg.latent_channels
        self.unet = build_unet(cfg, 3 * c, c, cfg.audio_hidden + cfg.landmark_hidden)

    def condition(self, audio: torch.Tensor, outline: torch.Tensor) -> torch.Tensor:
        """C_l = [a; l]: (B, D_A + D_L)."""
        return torch.cat([self.audio(audio), self.landmarks(outline)], -1)

    def tokens(self, audio: torch.Tensor, outline: torch.Tensor) -> torch.Tensor:
        """C_l -> (B, cond_tokens, cross_dim), the cross-attentions' keys and values."""
        return self.cond(self.condition(audio, outline)).unflatten(-1, (self.config.cond_tokens, self.config.cross_dim))

    def forward(self, zt: torch.Tensor, t: torch.Tensor, z_masked: torch.Tensor, z_ref: torch.Tensor,
                audio: torch.Tensor, outline: torch.Tensor) -> torch.Tensor:
        """zt, z_masked, z_ref (B, C, h, w); audio (B, 2w+1, D); outline (B, rays+2) -> epsilon."""
        cv = torch.cat([zt, z_masked, z_ref], 1)                # C_v = [z_t; z_m; z_r]
        cl = self.condition(audio, outline)
        tokens = self.cond(cl).unflatten(-1, (self.config.cond_tokens, self.config.cross_dim))
        return self.unet(cv, t, encoder_hidden_states=tokens,
                         class_labels=cl if self.config.cond_in_time else None).sample


def build_difftalk(fields: dict) -> DiffTalkUNet:
    from talkinghead.io.checkpoint import config_from

    return DiffTalkUNet(config_from(DiffTalkConfig, fields))


class DiffTalkRenderer(LDMRenderer):
    """`generate --renderer difftalk`."""

    name = "difftalk"
    model_name = "difftalk"
    progressive = True                    # Sec. 3.3; False: the portrait is every frame's reference
    inpaint = True                        # Sec. 3.3 "masked z_T": only the mouth box is generated
    # with inpaint, the frame shown is the portrait's crop with the mouth box (feathered) of the
    # decoded one: what was not generated keeps the portrait's pixels, not the VAE's round trip
    # (which alone costs a small VAE's identity: dlib 0.52-0.55 on the check's frames)
    paste_mouth = True

    def build(self, fields: dict) -> DiffTalkUNet:
        return build_difftalk(fields)

    @torch.no_grad()
    def conditions(self, src: LDMSource) -> dict[str, torch.Tensor]:
        from talkinghead.data.prepare import FACE_BIT
        from talkinghead.render.ldm.autoencoder import encode

        cfg = self.model.config
        outline = outline_features((src.masks & FACE_BIT) > 0, cfg.landmark_rays, cfg.mouth_box)
        z_masked = encode(self.vae, mask_mouth(src.crop, cfg.mouth_box), self.scale)
        box = latent_box(z_masked.shape[-1], cfg.mouth_box)
        alpha = torch.from_numpy(box_alpha(src.crop.shape[-1], cfg.mouth_box))
        return {"z_masked": z_masked, "outline": torch.from_numpy(outline)[None], "mouth": box, "alpha": alpha}

    def compose(self, src: LDMSource, crop: np.ndarray) -> np.ndarray:
        if not (self.inpaint and self.paste_mouth):
            return crop
        alpha = src.extra["alpha"].cpu().numpy()                              # (S, S, 1)
        portrait = ((src.crop[0].permute(1, 2, 0).cpu().numpy() + 1) * 127.5)  # (S, S, 3)
        return (alpha * crop + (1 - alpha) * portrait + 0.5).clip(0, 255).astype(np.uint8)

    @torch.no_grad()
    def latents(self, src: LDMSource, motion: Motion, audio: np.ndarray, seed: int) -> Iterator[torch.Tensor]:
        from talkinghead.render.ldm.unet import frame_noise

        cfg, n = self.model.config, len(motion)
        chunk = 1 if self.progressive else self.chunk
        ref = src.z
        for a in range(0, n, chunk):
            frames = range(a, min(n, a + chunk))
            win = audio_windows(audio, np.arange(frames.start, frames.stop), cfg.audio_window).to(self.device)
            b = len(frames)
            zm, out = src.extra["z_masked"].expand(b, -1, -1, -1), src.extra["outline"].expand(b, -1)
            zr = ref.expand(b, -1, -1, -1)
            known = (src.extra["mouth"], src.z) if self.inpaint else None
            z = self.sample(lambda x, t: self.model(x, t, zm, zr, win, out), frame_noise(src.z.shape[1:], frames, seed),
                            known)
            if self.progressive:
                ref = z
            yield z

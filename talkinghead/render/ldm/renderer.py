"""What the latent diffusion renderers share behind the renderer interface (render/base.py):
the portrait cropped as `prepare` cropped the training videos and encoded once, the audio
features of the kind the model was trained on, frames sampled chunk by chunk (each frame's
noise depends only on the seed and its index, so memory is flat in the audio's length and the
output does not depend on the chunking), decoding, and the feathered paste-back.

A checkpoint is a directory holding `vae/` (our `--stage vae` checkpoint or a diffusers
AutoencoderKL folder, e.g. a Stable Diffusion VAE) and `unet/` (model.safetensors + config.json).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from talkinghead.errors import InputError
from talkinghead.render.base import RenderInputs
from talkinghead.types import AudioClip, FaceAnalysis, Motion


@dataclass
class LDMSource:
    image: np.ndarray                     # (H, W, 3) the full portrait
    box: tuple[int, int, int, int]        # crop box in the portrait (may extend past it)
    crop: torch.Tensor                    # (1, 3, S, S) in [-1, 1]
    z: torch.Tensor                       # (1, C, h, w) the portrait's latent (x scale)
    masks: np.ndarray                     # (S, S) uint8 region masks (prepare's FACE_BIT, LIP_BIT)
    extra: dict[str, torch.Tensor]        # renderer-specific conditions computed once


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return frames * 2 - 1


def load_unet(directory: str | Path, model_name: str, build) -> tuple[torch.nn.Module, dict]:
    """(model, checkpoint fields) of a `--stage unet` checkpoint of renderer `model_name`;
    `build(fields)` makes the untrained model."""
    from talkinghead.io.checkpoint import load_weights, read_config

    fields = read_config(directory).get("config", {})
    if fields.get("model") != model_name:
        raise InputError(f"{directory}: not a {model_name} UNet checkpoint (it says {fields.get('model')!r})")
    model = load_weights(directory, build(fields))
    return model.float().eval().requires_grad_(False), fields


def audio_features(clip: AudioClip, fps: float, num: int, kind: str, computed: Any = None,
                   cache: dict | None = None) -> np.ndarray:
    """(num, D) float32 features of `kind` (the pipeline's when it computed that kind), the last
    row repeated when the audio ends early."""
    from talkinghead.audio.features import get_extractor

    if getattr(computed, "kind", None) != kind:
        cache = {} if cache is None else cache
        if kind not in cache:
            cache[kind] = get_extractor(kind)
        computed = cache[kind](clip, fps)
    f = np.asarray(computed.values[:num], np.float32)
    if len(f) < num:
        f = np.concatenate([f, np.repeat(f[-1:], num - len(f), 0)])
    return f


class LDMRenderer:
    """The renderer interface over a VAE + a conditional UNet; subclasses say how the UNet is
    built (`build`) and how a clip's latents are sampled (`latents`)."""

    name = "ldm"
    model_name = "ldm"
    crops_itself = True
    needs_audio = True

    def __init__(self, checkpoint: str | Path | None, steps: int = 10, mode: str = "full",
                 crop_size: int = 512, chunk: int = 8) -> None:
        from talkinghead.render.ldm.autoencoder import load_vae

        if not checkpoint:
            raise InputError(f"--renderer {self.name} needs --renderer-checkpoint DIR (with vae/ and "
                             f"unet/; train them with `talkinghead train {self.model_name}`)")
        root = Path(checkpoint)
        if not (root / "vae").is_dir() or not (root / "unet").is_dir():
            raise InputError(f"{root}: a {self.name} checkpoint holds vae/ and unet/")
        self.vae = load_vae(root / "vae")
        self.model, fields = load_unet(root / "unet", self.model_name, self.build)
        self.feature = fields.get("feature", "whisper")
        self.crop_expand = float(fields.get("crop_expand", 1.6))
        self.size = int(fields["size"])
        self.scale = float(fields["latent_scale"])
        self.steps, self.mode, self.crop_size, self.chunk = steps, mode, crop_size, chunk
        self.device = torch.device("cpu")
        self._extractors: dict = {}

    def to(self, device: str | torch.device) -> "LDMRenderer":
        """Run the VAE and the UNet on `device` (e.g. "cuda"); frames come back to the CPU."""
        self.device = torch.device(device)
        self.vae.to(self.device)
        self.model.to(self.device)
        return self

    @classmethod
    def from_options(cls, options) -> "LDMRenderer":
        return cls(options.checkpoint(cls.name), options.steps, options.mode, options.crop_size)

    def build(self, fields: dict) -> torch.nn.Module:
        raise NotImplementedError

    def conditions(self, src: LDMSource) -> dict[str, torch.Tensor]:
        """Renderer-specific conditions of the portrait, computed once in `prepare`."""
        return {}

    def latents(self, src: LDMSource, motion: Motion, audio: np.ndarray | None, seed: int) -> Iterator[torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def prepare(self, image: np.ndarray, face: FaceAnalysis, landmarker=None) -> LDMSource:
        from talkinghead.data.prepare import region_masks
        from talkinghead.face.crop import crop_box, crop_image
        from talkinghead.render.ldm.autoencoder import encode

        box = crop_box(face, self.crop_expand)
        crop = crop_image(image, box, self.size)
        x = to_unit(torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0).to(self.device)
        masks = region_masks((face.landmarks[:, :2] - box[:2]) * (self.size / (box[2] - box[0])), self.size)
        src = LDMSource(image, box, x, encode(self.vae, x, self.scale), masks, {})
        src.extra = {k: v.to(self.device) for k, v in self.conditions(src).items()}
        return src

    def compose(self, src: LDMSource, crop: np.ndarray) -> np.ndarray:
        """The decoded (S, S, 3) uint8 crop -> the crop to show (a renderer that generates a part
        of the face keeps the portrait's pixels elsewhere)."""
        return crop

    def paste(self, src: LDMSource, crop: np.ndarray) -> np.ndarray:
        """The generated crop back into the full portrait, feathered over the box's edge (the
        paste-back the DAWN and SadTalker renderers use)."""
        from talkinghead.render.base import paste_feathered

        return paste_feathered(src.image, src.box, crop)

    def frames(self, src: LDMSource, motion: Motion, inputs: RenderInputs) -> Iterator[np.ndarray]:
        audio = None
        if self.needs_audio:
            if inputs.clip is None:
                raise InputError(f"the {self.name} renderer is driven by audio; give it the speech")
            audio = audio_features(inputs.clip, inputs.fps, len(motion), self.feature, inputs.features,
                                   self._extractors)
        for z in self.latents(src, motion, audio, inputs.seed):
            yield from self.decode(src, z)

    @torch.no_grad()
    def decode(self, src: LDMSource, z: torch.Tensor) -> Iterator[np.ndarray]:
        import cv2

        from talkinghead.render.ldm.autoencoder import decode

        out = (decode(self.vae, z, self.scale, src.z).cpu() + 1) / 2               # (c, 3, S, S)
        for img in (out.permute(0, 2, 3, 1).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8):
            img = self.compose(src, img)
            yield (self.paste(src, img) if self.mode == "full"
                   else cv2.resize(img, (self.crop_size, self.crop_size), interpolation=cv2.INTER_CUBIC))

    def sample(self, denoise, noise: torch.Tensor, known: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """DDIM (talkinghead.diffusion) over `denoise(x_t, t) -> network prediction`. known =
        (mask, z): where mask is 0, every step's x0 estimate is replaced by z (inpainting: only
        the masked region is generated)."""
        from talkinghead.diffusion.samplers import ddim
        from talkinghead.render.ldm.unet import schedule_of, to_x0

        schedule = schedule_of(self.model.config)
        acp, pred = schedule.alphas_cumprod, self.model.config.prediction

        def x0(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            est = to_x0(denoise(x, t), x, t, acp, pred)
            return est if known is None else known[0] * est + (1 - known[0]) * known[1]

        return ddim(x0, noise.to(self.device), schedule, self.steps)

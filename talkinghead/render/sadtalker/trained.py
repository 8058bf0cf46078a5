"""`generate --renderer sadtalker` on a face render trained by `talkinghead train sadtalker`
(face_render.py): a checkpoint directory with model.safetensors + config.json.

The portrait is cropped as the training data was (`prepare`'s box: expand x the face box),
encoded once (canonical keypoints, source keypoints from its own coefficients, the feature
volume); each frame's coefficients are the portrait's (the face model's blendshapes, angles and
translation) plus the Motion's changes, so expression, blinks and pose all come from the motion
model; frames are rendered in chunks and pasted back with a feathered edge.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from talkinghead.errors import InputError
from talkinghead.render.base import RenderInputs, paste_feathered
from talkinghead.render.sadtalker.face_render import (FaceRender, FaceRenderConfig, coefficient_window,
                                                      motion_coefficients)
from talkinghead.types import FaceAnalysis, Motion


@dataclass
class TrainedSource:
    image: np.ndarray                     # (H, W, 3) the full portrait
    box: tuple[int, int, int, int]
    motion: Motion                        # the portrait's absolute one-frame Motion
    canonical: torch.Tensor               # (1, K, 3)
    kp_source: torch.Tensor               # (1, K, 3)
    volume: torch.Tensor                  # (1, C, D, h, w)


def load_face_render(directory: str | Path) -> tuple[FaceRender, float]:
    """A trained face render and the crop expansion its data was prepared with."""
    from talkinghead.io.checkpoint import config_from, load_weights, read_config

    cfg = read_config(directory)["config"]
    if cfg.get("model") != "sadtalker_render":
        raise InputError(f"{directory}: not a SadTalker face-render checkpoint (model "
                         f"{cfg.get('model')!r}); for the released files pass their folder")
    model = FaceRender(config_from(FaceRenderConfig, cfg))
    return load_weights(directory, model).float().eval(), float(cfg.get("crop_expand", 1.6))


class TrainedSadTalkerRenderer:
    name = "sadtalker"
    crops_itself = True

    def __init__(self, checkpoint: str | Path, mode: str = "full", crop_size: int = 512, chunk: int = 16) -> None:
        self.model, self.crop_expand = load_face_render(checkpoint)
        self.mode, self.crop_size, self.chunk = mode, crop_size, chunk

    @torch.no_grad()
    def prepare(self, image: np.ndarray, face: FaceAnalysis, landmarker=None) -> TrainedSource:
        from talkinghead.face.crop import crop_box, crop_image
        from talkinghead.face.extract import motion_from_face

        size = self.model.config.size
        box = crop_box(face, self.crop_expand)
        x = torch.from_numpy(crop_image(image, box, size)).permute(2, 0, 1)[None].float() / 255.0
        m = motion_from_face(face)
        coeffs = motion_coefficients(m.blendshapes, m.rotation, m.translation)
        window = torch.from_numpy(coefficient_window(coeffs, 0))[None]          # (1, C, 27)
        return TrainedSource(image, box, m, *self.model.encode_source(x, window))

    def coefficients(self, src: TrainedSource, motion: Motion) -> np.ndarray:
        """(T, C): the portrait's coefficients plus the Motion's changes."""
        if not motion.relative:
            raise ValueError("SadTalker is driven by motion relative to the portrait")
        s = src.motion
        return motion_coefficients(s.blendshapes + motion.blendshapes, s.rotation + motion.rotation,
                                   s.translation + motion.translation)

    @torch.no_grad()
    def frames(self, src: TrainedSource, motion: Motion, inputs: RenderInputs) -> Iterator[np.ndarray]:
        import cv2

        coeffs = self.coefficients(src, motion)
        for a in range(0, len(coeffs), self.chunk):
            idx = range(a, min(len(coeffs), a + self.chunk))
            windows = torch.from_numpy(np.stack([coefficient_window(coeffs, t) for t in idx]))  # (c, C, 27)
            out, _ = self.model.render(src.canonical, src.kp_source, src.volume, windows)
            for img in (out.permute(0, 2, 3, 1).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8):
                yield (self.paste(src, img) if self.mode == "full"
                       else cv2.resize(img, (self.crop_size, self.crop_size), interpolation=cv2.INTER_CUBIC))

    def paste(self, src: TrainedSource, crop: np.ndarray) -> np.ndarray:
        return paste_feathered(src.image, src.box, crop)

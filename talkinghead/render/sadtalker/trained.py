"""`generate --renderer sadtalker` on a face render trained by `talkinghead train sadtalker`
(face_render.py): a checkpoint directory with model.safetensors + config.json.

The portrait is cropped as the training data was (`prepare`'s box: expand x the face box),
encoded once (canonical keypoints, source keypoints from its own coefficients, the feature
volume); each frame's coefficients are the portrait's (the face model's blendshapes, angles and
translation) plus the Motion's changes, so expression, blinks and pose all come from the motion
model; frames are rendered in chunks and pasted back with a feathered edge.

Detail transfer (ours, not the paper's; on by default, `detail=False` turns it off): a render
trained on CPU works at 64 px, and the portrait's box is 2-8x that, so the pasted face is the
render upsampled (blurred). The generator already knows where every output pixel comes from in
the source (its dense motion's sampling grid, averaged over depth into a 2D flow) and where the
source is not visible (its occlusion map). The portrait's crop at the box's own resolution is
warped by that flow, and its high frequencies (the warped crop minus its 64 px version) are added
to the upsampled render, weighted by the occlusion map: where the render equals the 64 px source
warped, the output equals the sharp source warped; where it draws what the source does not show
(the open mouth), the weight drops. Face-vid2vid / FOMM warp the source image the same way; this
only does it above the render's resolution.
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


DETAIL_MAX = 512                          # side of the detail layer at most (larger boxes: resized)


def add_detail(render: torch.Tensor, source: torch.Tensor, deformation: torch.Tensor,
               weight: torch.Tensor | None) -> torch.Tensor:
    """Render (B, 3, s, s) in [0, 1] -> (B, 3, S, S): upsampled, plus the high frequencies of
    `source` (1, 3, S, S) warped by the generator's `deformation` (B, d, h, w, 3) grid (depth
    averaged), times `weight` (B, 1, h, w), the occlusion map (None: 1)."""
    import torch.nn.functional as F

    b, side, s = render.shape[0], source.shape[-1], render.shape[-1]
    flow = deformation[..., :2].mean(1).permute(0, 3, 1, 2)                     # (B, 2, h, w)
    flow = F.interpolate(flow, size=(side, side), mode="bilinear", align_corners=False)
    warped = F.grid_sample(source.expand(b, -1, -1, -1), flow.permute(0, 2, 3, 1), mode="bilinear",
                           padding_mode="border", align_corners=False)            # (B, 3, S, S)
    low = F.interpolate(F.interpolate(warped, size=(s, s), mode="area"), size=(side, side), mode="bicubic",
                        align_corners=False)
    up = F.interpolate(render, size=(side, side), mode="bicubic", align_corners=False)
    if weight is not None:
        weight = F.interpolate(weight, size=(side, side), mode="bilinear", align_corners=False)
    return (up + (warped - low) * (1.0 if weight is None else weight)).clamp(0, 1)


@dataclass
class TrainedSource:
    image: np.ndarray                     # (H, W, 3) the full portrait
    box: tuple[int, int, int, int]
    sharp: torch.Tensor                   # (1, 3, S, S) the box at its own resolution (<= DETAIL_MAX)
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
    detail = True                         # the detail transfer (module docstring); full mode only

    def __init__(self, checkpoint: str | Path, mode: str = "full", crop_size: int = 512, chunk: int = 16,
                 detail: bool | None = None) -> None:
        self.model, self.crop_expand = load_face_render(checkpoint)
        self.mode, self.crop_size, self.chunk = mode, crop_size, chunk
        self.detail = type(self).detail if detail is None else detail

    @torch.no_grad()
    def prepare(self, image: np.ndarray, face: FaceAnalysis, landmarker=None) -> TrainedSource:
        from talkinghead.face.crop import crop_box, crop_image
        from talkinghead.face.extract import motion_from_face

        size = self.model.config.size
        box = crop_box(face, self.crop_expand)
        x = torch.from_numpy(crop_image(image, box, size)).permute(2, 0, 1)[None].float() / 255.0
        side = min(DETAIL_MAX, box[2] - box[0])
        sharp = torch.from_numpy(crop_image(image, box, side)).permute(2, 0, 1)[None].float() / 255.0
        m = motion_from_face(face)
        coeffs = motion_coefficients(m.blendshapes, m.rotation, m.translation)
        window = torch.from_numpy(coefficient_window(coeffs, 0))[None]          # (1, C, 27)
        return TrainedSource(image, box, sharp, m, *self.model.encode_source(x, window))

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
            gen, _ = self.model.render_output(src.canonical, src.kp_source, src.volume, windows)
            out = gen.prediction
            if self.detail and self.mode == "full":
                out = add_detail(out, src.sharp, gen.deformation, gen.occlusion_map)
            for img in (out.permute(0, 2, 3, 1).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8):
                yield (self.paste(src, img) if self.mode == "full"
                       else cv2.resize(img, (self.crop_size, self.crop_size), interpolation=cv2.INTER_CUBIC))

    def paste(self, src: TrainedSource, crop: np.ndarray) -> np.ndarray:
        return paste_feathered(src.image, src.box, crop)

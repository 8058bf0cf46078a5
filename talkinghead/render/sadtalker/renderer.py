"""`generate --renderer sadtalker`: SadTalker's face render over its released checkpoints
(sadtalker.txt, Sec. 3.1-3.3), behind the renderer interface (render/base.py).

1. prepare: SadTalker's face crop (the FFHQ-style quad from eyes and mouth, as its `crop`
   preprocessing) resized to 256 (or 512); Deep3DFaceRecon's coefficients of the source
   (face_recon.py); canonical keypoints, the source's MappingNet pose and the generator's 3D
   feature volume, all computed ONCE (the official code re-encodes the source every frame).
2. frames: expression from the released ExpNet (audio mel windows, the source's expression,
   blinks from the Motion); head pose = source angles + the Motion's rotation deltas (our motion
   model stands in for PoseVAE), or, with a pose style (0..45, `--sadtalker-pose-style`), the
   released PoseVAE's angles and translation from the audio; per frame, a 27-frame coefficient window -> MappingNet ->
   driving keypoints -> occlusion-aware SPADE generator; pasted back with a feathered edge.
Memory is bounded in the audio's length: coefficients are (T, 70) floats, frames stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from talkinghead.errors import InputError
from talkinghead.render.base import RenderInputs, RenderOptions, paste_feathered
from talkinghead.render.sadtalker.face_render import coefficient_window
from talkinghead.types import BS, FaceAnalysis, Motion

EXP_CHUNK = 64                 # frames per ExpNet call


@dataclass
class SadTalkerSource:
    image: np.ndarray          # (H, W, 3) the portrait
    box: tuple[int, int, int, int]
    coeffs: np.ndarray         # (257,) Deep3DFaceRecon coefficients of the crop
    semantics: np.ndarray      # (C,) the MappingNet's source coefficients (70 or 73)
    kp_source: torch.Tensor    # (1, K, 3) posed source keypoints
    canonical: torch.Tensor    # (1, K, 3)
    volume: torch.Tensor       # (1, C, D, h, w) generator's source feature volume


def _eye_mouth(landmarks: np.ndarray) -> tuple[np.ndarray, ...]:
    """Image-left eye centre, image-right eye centre, nose tip, left and right mouth corners
    (x, y) from the 478-point face mesh (the 68-point convention's points 36-41, 42-47, 30, 48,
    54)."""
    from talkinghead.face import regions as R

    lm = landmarks[:, :2]
    eyes = sorted((lm[list(R.RIGHT_EYE_UPPER + R.RIGHT_EYE_LOWER)].mean(0),
                   lm[list(R.LEFT_EYE_UPPER + R.LEFT_EYE_LOWER)].mean(0)), key=lambda p: p[0])
    mouth = sorted((lm[61], lm[291]), key=lambda p: p[0])
    return eyes[0], eyes[1], lm[1], mouth[0], mouth[1]


def face_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """SadTalker's crop: the oriented quad of its `align_face` (from eyes and mouth), as the
    square box around it."""
    eye_l, eye_r, _, mouth_l, mouth_r = _eye_mouth(landmarks)
    eye_avg, eye_to_eye = (eye_l + eye_r) / 2, eye_r - eye_l
    eye_to_mouth = (mouth_l + mouth_r) / 2 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    half = float(np.hypot(*x))                         # the quad's half side
    c = eye_avg + eye_to_mouth * 0.1
    x0, y0 = int(round(c[0] - half)), int(round(c[1] - half))
    side = int(round(2 * half))
    return x0, y0, x0 + side, y0 + side


class SadTalkerRenderer:
    name = "sadtalker"
    crops_itself = True

    def __init__(self, checkpoints: str | Path, mode: str = "full", crop_size: int = 512,
                 pose_style: int | None = None) -> None:
        from talkinghead.render.sadtalker.model import SadTalkerModels
        from talkinghead.render.sadtalker.posevae import PoseVAEConfig

        styles = PoseVAEConfig().num_classes
        if pose_style is not None and not 0 <= pose_style < styles:
            raise InputError(f"--sadtalker-pose-style must be 0..{styles - 1}, got {pose_style}")
        self.models = SadTalkerModels.load(checkpoints, pose=pose_style is not None)
        self.mode, self.crop_size, self.pose_style = mode, crop_size, pose_style

    @classmethod
    def from_options(cls, options: RenderOptions):
        """The released checkpoints' folder, or (a config.json there) a project-trained render."""
        root = options.checkpoint(cls.name)
        if not root:
            raise InputError("--renderer sadtalker needs --sadtalker-checkpoints DIR "
                             "(SadTalker's released checkpoints folder, or `train sadtalker`'s output)")
        if (Path(root) / "config.json").is_file():
            from talkinghead.render.sadtalker.trained import TrainedSadTalkerRenderer

            if options.pose_style is not None:
                raise InputError("--sadtalker-pose-style needs SadTalker's released checkpoints (PoseVAE); "
                                 "a render trained here takes head pose from the motion model")
            return TrainedSadTalkerRenderer(root, options.mode, options.crop_size)
        return cls(root, options.mode, options.crop_size, options.pose_style)

    @torch.no_grad()
    def prepare(self, image: np.ndarray, face: FaceAnalysis, landmarker=None) -> SadTalkerSource:
        from talkinghead.face.crop import crop_image

        m = self.models
        box = face_box(face.landmarks)
        crop = crop_image(image, box, m.size)                          # (S, S, 3) uint8
        scale = m.size / (box[2] - box[0])
        five = np.stack(_eye_mouth(face.landmarks)) - np.asarray(box[:2], np.float32)
        coeffs, params = m.reconstruct(crop, five * scale)
        semantics = np.concatenate([coeffs[80:144], coeffs[224:227], coeffs[254:257]])
        if m.coeff_nc == 73:                                           # still-mode mapping
            semantics = np.concatenate([semantics, params[2:]])
        source = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0
        canonical, kp_source, volume = m.encode_source(source, semantics)
        return SadTalkerSource(image, box, coeffs, semantics.astype(np.float32), kp_source, canonical, volume)

    def target_coefficients(self, src: SadTalkerSource, motion: Motion, inputs: RenderInputs) -> np.ndarray:
        """(T, C) MappingNet inputs: ExpNet expression, source angles + Motion rotation deltas
        (degrees -> radians, 3DMM order pitch, yaw, roll) and source translation, or, with a
        pose style, the PoseVAE's angles and translation."""
        if inputs.clip is None:
            raise InputError("the SadTalker renderer is driven by audio; give it the speech")
        if not motion.relative:
            raise ValueError("SadTalker is driven by motion relative to the portrait")
        n = len(motion)
        blink = np.clip(motion.blendshapes[:, [BS["eyeBlinkLeft"], BS["eyeBlinkRight"]]].mean(1), 0, 1)
        exp = self.models.expression(inputs.clip, inputs.fps, n, src.semantics[:64], blink, EXP_CHUNK)
        if self.pose_style is not None:
            pose = self.models.head_pose(inputs.clip, inputs.fps, n, src.semantics[64:70], self.pose_style,
                                         inputs.seed)                  # (n, 6) angles, translation
        else:
            angles = src.semantics[64:67] + np.radians(motion.rotation[:, [1, 0, 2]])
            pose = np.concatenate([angles, np.repeat(src.semantics[None, 67:70], n, 0)], 1)
        rest = np.repeat(src.semantics[None, 70:], n, 0)               # still mode's crop params
        return np.concatenate([exp, pose, rest], 1).astype(np.float32)

    @torch.no_grad()
    def frames(self, src: SadTalkerSource, motion: Motion, inputs: RenderInputs) -> Iterator[np.ndarray]:
        import cv2

        target = self.target_coefficients(src, motion, inputs)
        for t in range(len(target)):
            window = torch.from_numpy(coefficient_window(target, t))[None]     # (1, C, 27)
            img = self.models.render(src.canonical, src.kp_source, src.volume, window)
            img = (img[0].permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
            yield (self.paste(src, img) if self.mode == "full"
                   else cv2.resize(img, (self.crop_size, self.crop_size), interpolation=cv2.INTER_CUBIC))

    def paste(self, src: SadTalkerSource, crop: np.ndarray) -> np.ndarray:
        return paste_feathered(src.image, src.box, crop)

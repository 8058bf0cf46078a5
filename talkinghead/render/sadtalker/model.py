"""SadTalker's inference modules together (sadtalker.txt, Sec. 3): the coefficient regressor,
ExpNet, MappingNet, keypoint detector and generator (and, when asked, the PoseVAE), built at
the released sizes and filled from a checkpoint folder (checkpoint.py). Pure tensor steps; the
renderer does the image work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from talkinghead.render.sadtalker.checkpoint import MAPPING_FILES, find_checkpoints, load_modules, safetensors_name
from talkinghead.render.sadtalker.expnet import ExpNet, mel_windows
from talkinghead.render.sadtalker.face_recon import FaceReconNet, align_for_recon
from talkinghead.render.sadtalker.generator import GeneratorConfig, OcclusionAwareSPADEGenerator
from talkinghead.render.sadtalker.keypoints import KPConfig, KPDetector, transform_keypoints
from talkinghead.render.sadtalker.mapping import MappingConfig, MappingNet
from talkinghead.render.sadtalker.posevae import PoseVAE, load_posevae


def fold_for_inference(module: torch.nn.Module) -> torch.nn.Module:
    """Replace every spectral norm (the SPADE blocks' convolutions) by its normalised weight.
    In eval mode the hook recomputes W / sigma(W) on every call without a power iteration;
    folding stores that very weight once, so outputs are unchanged."""
    from torch.nn.utils import remove_spectral_norm

    for m in module.modules():
        if any(k.endswith("_orig") for k, _ in m.named_parameters(recurse=False)):
            remove_spectral_norm(m)
    return module


@dataclass
class SadTalkerModels:
    kp_extractor: KPDetector
    generator: OcclusionAwareSPADEGenerator
    mapping: MappingNet
    face_3drecon: FaceReconNet
    audio2exp: ExpNet
    size: int                                   # 256 or 512
    audio2pose: PoseVAE | None = None           # loaded by `load(..., pose=True)`

    @property
    def coeff_nc(self) -> int:
        return self.mapping.first[0].in_channels

    @classmethod
    def load(cls, directory: str | Path, pose: bool = False) -> "SadTalkerModels":
        """The 256 checkpoint if present, else the 512; the crop-mode MappingNet if present,
        else the still-mode one (73 coefficients); pose: the PoseVAE too."""
        root = Path(directory)
        size = 512 if (root / safetensors_name(512)).is_file() and not (root / safetensors_name(256)).is_file() else 256
        still = (root / MAPPING_FILES[True]).is_file() and not (root / MAPPING_FILES[False]).is_file()
        files = find_checkpoints(root, size, still)
        models = cls(KPDetector(KPConfig()), OcclusionAwareSPADEGenerator(GeneratorConfig()),
                     MappingNet(MappingConfig(coeff_nc=73 if still else 70)), FaceReconNet(), ExpNet(), size)
        load_modules(files, {"kp_extractor": models.kp_extractor, "generator": models.generator,
                             "face_3drecon": models.face_3drecon, "audio2exp": models.audio2exp},
                     models.mapping)
        fold_for_inference(models.generator.eval())
        if pose:
            models.audio2pose = load_posevae(root, size)
        return models

    @torch.no_grad()
    def reconstruct(self, crop: np.ndarray, five: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(S, S, 3) uint8 face crop and its 5 points -> (257,) coefficients, (5,) crop params."""
        aligned = align_for_recon(crop, five)
        x = torch.from_numpy(aligned.image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        return self.face_3drecon(x)[0].numpy(), aligned.params

    @torch.no_grad()
    def encode_source(self, source: torch.Tensor, semantics: np.ndarray):
        """Canonical keypoints (1, K, 3), posed source keypoints and the feature volume."""
        canonical = self.kp_extractor(source)
        window = torch.from_numpy(np.repeat(semantics[:, None], 27, 1).astype(np.float32))[None]
        kp_source = transform_keypoints(canonical, self.mapping(window))
        return canonical, kp_source, self.generator.source_volume(source)

    @torch.no_grad()
    def expression(self, clip, fps: float, n: int, ref: np.ndarray, blink: np.ndarray,
                   chunk: int = 64) -> np.ndarray:
        """(n, 64) ExpNet expression for the clip, `chunk` frames per call."""
        from talkinghead.audio.features import wav2lip_mel, windowed

        mel = windowed(wav2lip_mel, clip.mono(), 80.0, 30.0, 0.1)      # (F, 80), 30 s at a time
        out = np.empty((n, 64), np.float32)
        for a in range(0, n, chunk):
            windows = mel_windows(mel, np.arange(a, min(n, a + chunk)), fps)
            m = torch.from_numpy(windows)[None, :, None]                # (1, c, 1, 80, 16)
            c = m.shape[1]
            r = torch.from_numpy(np.repeat(ref[None, None].astype(np.float32), c, 1))
            b = torch.from_numpy(blink[a:a + chunk].astype(np.float32))[None]
            out[a:a + c] = self.audio2exp(m, r, b)[0].numpy()
        return out

    @torch.no_grad()
    def head_pose(self, clip, fps: float, n: int, ref: np.ndarray, style: int, seed: int) -> np.ndarray:
        """(n, 6) PoseVAE head pose (3DMM angles, translation) from rho_0 = `ref` (6,), for style
        0..45; the mel windows are built 32 frames at a time, z drawn from `seed`."""
        from talkinghead.audio.features import wav2lip_mel, windowed

        mel = windowed(wav2lip_mel, clip.mono(), 80.0, 30.0, 0.1)      # (F, 80), 30 s at a time

        def windows(a: int, b: int) -> torch.Tensor:
            return torch.from_numpy(mel_windows(mel, np.arange(a, b), fps))[None, :, None]  # (1, b-a, 1, 80, 16)

        r = torch.from_numpy(ref.astype(np.float32))[None]
        g = torch.Generator().manual_seed(seed)
        return self.audio2pose.generate_from(windows, n, r, style, g)[0].numpy()

    @torch.no_grad()
    def render(self, canonical: torch.Tensor, kp_source: torch.Tensor, volume: torch.Tensor,
               window: torch.Tensor) -> torch.Tensor:
        """One coefficient window (1, C, 27) -> (1, 3, S, S) frame in [0, 1]."""
        kp_driving = transform_keypoints(canonical, self.mapping(window))
        return self.generator.render(volume, kp_driving, kp_source).prediction

"""`generate --renderer dawn`: DAWN's LFG + A2V-FDM (dawn.txt, Sec. 3.6, inference steps 3-4), one
architecture, the released one (`lfg_mraa.py`, `unet3d.py`), from either

* the authors' released 128 / 256 files (`--dawn-checkpoints DIR`, `official.py`; HuBERT-large
  features; pose/eye conditions from the released PBNet when DIR holds it (`pbnet_seperate/` or
  `pbnet_both/`, `motion/pbnet_released.py`), else converted from the motion model's Motion), or
* a checkpoint trained here (`--dawn-checkpoint DIR` holding `lfg/` and `a2v/`, each
  model.safetensors + config.json; `talkinghead train dawn`, any size, e.g. the CPU-sized config),
  conditioned as it was trained (`conditions.pose_blink`, the audio features it was trained on).

The portrait is cropped around the face (1.6x its box), the source encoded once; the A2V-FDM
samples the motion latents of the whole clip in one non-autoregressive DDIM pass, in time and
memory linear in the clip's length (`linear.py`); each frame is decoded by the LFG (Eq. 4) and
pasted back into the full portrait with a feathered edge.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from talkinghead.errors import InputError
from talkinghead.render.base import RenderInputs, paste_feathered
from talkinghead.types import AudioClip, FaceAnalysis, Motion


def _trained_config(cfg: dict, directory, stage: str, name: str) -> dict:
    """A trained-here checkpoint's config if it is DAWN's `stage` in the released architecture;
    else a one-line error (checkpoints of the earlier architecture are refused by name)."""
    if cfg.get("model") == f"dawn_{stage}":
        raise InputError(f"{directory}: a DAWN {name} of the earlier architecture, which is gone; retrain it "
                         f"(`talkinghead train dawn --stage {stage}`)")
    if cfg.get("model") != f"dawn_{stage}_released":
        raise InputError(f"{directory}: not a DAWN {name} checkpoint")
    return cfg


def load_lfg(directory: str | Path):
    """A released-architecture LFG trained here (`train dawn --stage lfg`), frozen for inference."""
    from talkinghead.io.checkpoint import config_from, load_weights, read_config
    from talkinghead.render.dawn.lfg_mraa import MRAAConfig, MRAALatentFlowGenerator

    fields_ = _trained_config(read_config(directory)["config"], directory, "lfg", "LFG")
    model = MRAALatentFlowGenerator(config_from(MRAAConfig, fields_))
    return load_weights(directory, model).float().eval().requires_grad_(False)


def load_a2v(directory: str | Path, steps: int = 10):
    """(DawnA2V with `steps` DDIM steps, its config dict) of an A2V-FDM trained here."""
    import dataclasses

    from talkinghead.io.checkpoint import config_from, load_weights, read_config
    from talkinghead.render.dawn.unet3d import DawnA2V, Unet3DConfig

    cfg = _trained_config(read_config(directory)["config"], directory, "a2v", "A2V-FDM")
    a2v = DawnA2V(dataclasses.replace(config_from(Unet3DConfig, cfg), sampling_timesteps=steps))
    return load_weights(directory, a2v).float().eval(), cfg


def face_box(face: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) face mask -> the mask of its bounding rectangle (the released face box input)."""
    inside = lambda m: (m.cumsum(-1) > 0) & (m.flip(-1).cumsum(-1).flip(-1) > 0)
    rows, cols = inside(face.amax(dim=3) > 0.5), inside(face.amax(dim=2) > 0.5)          # (B, 1, S)
    return (rows[..., :, None] & cols[..., None, :]).float()


def is_released(path: str | Path) -> bool:
    p = Path(path)
    return (p.is_file() and p.name.startswith("DAWN_")) or (p.is_dir() and any(p.glob("DAWN_*.pth")))


@dataclass
class DawnSource:
    image: np.ndarray                     # (H, W, 3) the full portrait
    box: tuple[int, int, int, int]
    crop: torch.Tensor                    # (1, 3, S, S) in [0, 1]
    skips: list                           # the LFG generator's encoder levels of the crop
    fea: torch.Tensor                     # (1, 256 + 16, S/4, S/4): z_src and the face box embedding
    face_width: float                     # the face box's width in portrait pixels
    face: FaceAnalysis | None = None      # the portrait's face (the released PBNet's first state)


class DawnRenderer:
    """DAWN behind the renderer interface: the authors' 128 / 256 files (`from_files`, HuBERT
    features) or a checkpoint trained here (`from_trained`, the audio features it was trained on)."""

    name = "dawn"
    crops_itself = True

    def __init__(self, lfg, a2v, features, mode: str = "full", crop_size: int = 512, chunk: int = 32,
                 crop_expand: float = 1.6, pbnet=None) -> None:
        self.lfg, self.a2v, self.features = lfg, a2v, features    # features(clip, fps, frames) -> (1, T, D)
        self.pbnet = pbnet        # the released PBNet (motion/pbnet_released.py): pose/eyes from the audio
        self.size = lfg.config.size
        self.mode, self.crop_size, self.chunk = mode, crop_size, chunk
        self.crop_expand = crop_expand    # the square crop around the face box (HDTF-like framing)
        self.trained = isinstance(features, TrainedFeatures)

    @classmethod
    def from_options(cls, options) -> DawnRenderer:
        """A folder of DAWN's released files (or a DAWN_<size>.pth) or a checkpoint trained here."""
        path = options.checkpoint(cls.name)
        if not path:
            raise InputError("--renderer dawn needs --dawn-checkpoint DIR (with lfg/ and a2v/; train them with "
                             "`talkinghead train dawn`) or --dawn-checkpoints DIR (DAWN's released files)")
        if is_released(path):
            return cls.from_files(path, options.steps, options.mode, options.crop_size)
        return cls.from_trained(Path(path), options.steps, options.mode, options.crop_size)

    @classmethod
    def from_files(cls, path: str | Path, steps: int = 20, mode: str = "full", crop_size: int = 512):
        from talkinghead.motion.pbnet_released import find_released_pbnet
        from talkinghead.render.dawn.official import find_checkpoints, load_official_a2v, load_official_lfg

        lfg_file, a2v_file, size = find_checkpoints(path)
        return cls(load_official_lfg(lfg_file, size), load_official_a2v(a2v_file, steps=steps),
                   HubertFeatures(lfg_file.parent / "hubert-large-ls960-ft"), mode, crop_size,
                   pbnet=find_released_pbnet(lfg_file.parent))

    @classmethod
    def from_trained(cls, root: Path, steps: int = 10, mode: str = "full", crop_size: int = 512):
        if not (root / "lfg").is_dir() or not (root / "a2v").is_dir():
            raise InputError(f"{root}: a DAWN checkpoint holds lfg/ and a2v/")
        a2v, cfg = load_a2v(root / "a2v", steps)
        return cls(load_lfg(root / "lfg"), a2v, TrainedFeatures(cfg.get("feature", "whisper")), mode, crop_size,
                   crop_expand=float(cfg.get("crop_expand", 1.6)))

    @torch.no_grad()
    def prepare(self, image: np.ndarray, face: FaceAnalysis, landmarker=None) -> DawnSource:
        from talkinghead.face.crop import crop_box, crop_image
        from talkinghead.render.dawn.official import face_box_mask

        box = crop_box(face, self.crop_expand)
        crop = crop_image(image, box, self.size)
        x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0
        lm = (face.landmarks[:468, :2] - np.asarray(box[:2], np.float32)) * (self.size / (box[2] - box[0]))
        emb = self.a2v.face_loc_emb(face_box_mask(lm, self.size))
        skips = self.lfg.generator.encode(x)
        x0, _, x1, _ = face.bbox
        return DawnSource(image, box, x, skips, torch.cat([skips[-1], emb], 1), float(x1 - x0), face)

    @torch.no_grad()
    def motion_latents(self, src: DawnSource, audio: torch.Tensor, motion: Motion, seed: int = 0) -> torch.Tensor:
        """(1, 3, T, h, w) motion latents of the whole clip: one DDIM pass, linear in T."""
        from talkinghead.render.dawn.linear import sample_linear
        from talkinghead.render.dawn.official import eyes_from_motion, pose_from_motion

        if self.trained:                      # the convention it was trained with
            from talkinghead.render.dawn.conditions import pose_blink

            pose, eyes = (torch.from_numpy(a)[None] for a in pose_blink(motion))
        elif self.pbnet is not None:          # the released PBNet, from the same HuBERT features
            pose, eyes = self.pbnet.deltas(audio, src.face, seed)
        else:
            pose = torch.from_numpy(pose_from_motion(motion, src.face_width))[None]
            eyes = torch.from_numpy(eyes_from_motion(motion))[None]
        cond = torch.cat([audio, pose, eyes], -1)                                   # (1, T, 1024 + 8)
        return sample_linear(self.a2v.diffusion, src.fea, cond, self.chunk, torch.Generator().manual_seed(seed),
                             spill_dir="auto")

    def paste(self, src: DawnSource, crop: np.ndarray) -> np.ndarray:
        return paste_feathered(src.image, src.box, crop)

    def frames(self, src: DawnSource, motion: Motion, inputs: RenderInputs) -> Iterator[np.ndarray]:
        if inputs.clip is None:
            raise InputError("the DAWN renderer is driven by audio; give it the speech")
        lat = self.motion_latents(src, self.features(inputs.clip, inputs.fps, len(motion)), motion, inputs.seed)
        yield from self.decode(src, lat)

    @torch.no_grad()
    def decode(self, src: DawnSource, lat: torch.Tensor) -> Iterator[np.ndarray]:
        """Each frame by the LFG generator (Eq. 4), the source's encoder levels computed once."""
        import cv2

        from talkinghead.render.dawn.lfg_mraa import latent_to_motion

        for i in range(lat.shape[2]):
            flow, occ = latent_to_motion(lat[:, :, i], self.a2v.config.residual_flow)
            out = self.lfg.generator.forward_with_flow(src.crop, flow, occ, src.skips)
            img = (out[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
            yield (self.paste(src, img) if self.mode == "full"
                   else cv2.resize(img, (self.crop_size, self.crop_size), interpolation=cv2.INTER_CUBIC))


class HubertFeatures:
    """(1, T, 1024) HuBERT-large features at the video's frames, as released (official.py)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.model = folder, None

    def __call__(self, clip: AudioClip, fps: float, num: int) -> torch.Tensor:
        from talkinghead.audio.features import load_speech_checkpoint
        from talkinghead.render.dawn.official import hubert_hidden, interpolate_frames

        if self.model is None:
            if not self.folder.is_dir():
                raise InputError(f"{self.folder}: DAWN needs HuBERT-large (facebook/hubert-large-ls960-ft, "
                                 "config.json + model.safetensors) beside its checkpoints")
            self.model = load_speech_checkpoint(self.folder)
        speech = clip.mono()
        if clip.sample_rate != 16000:
            from scipy.signal import resample_poly

            speech = resample_poly(speech, 16000, clip.sample_rate).astype(np.float32)
        return torch.from_numpy(interpolate_frames(hubert_hidden(self.model, speech), num))[None]


class TrainedFeatures:
    """(1, T, D) features of the kind a checkpoint trained here used, padded to T frames."""

    def __init__(self, kind: str) -> None:
        self.kind, self.extractor = kind, None

    def __call__(self, clip: AudioClip, fps: float, num: int) -> torch.Tensor:
        from talkinghead.audio.features import get_extractor

        if self.extractor is None:
            self.extractor = get_extractor(self.kind)
        f = self.extractor(clip, fps).values[:num]
        if len(f) < num:
            f = np.concatenate([f, np.repeat(f[-1:], num - len(f), 0)])
        return torch.from_numpy(np.asarray(f, np.float32))[None]

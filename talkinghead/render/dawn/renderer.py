"""`generate --renderer dawn`: a trained LFG + A2V-FDM (dawn.txt, Sec. 3.6, inference steps 3-4).

The portrait is cropped as the training data was (`prepare`'s box: expand x the face box),
encoded once (z_src); the motion model supplies pose and blink changes (PBNet or FD2Talk); the
A2V-FDM samples the motion latents of the whole clip in one non-autoregressive DDIM pass; each
frame is decoded by the LFG (Eq. 4) and pasted back into the full portrait with a feathered edge.
A checkpoint is a directory holding `lfg/` and `a2v/` (each model.safetensors + config.json).

`ReleasedDawnRenderer` runs the authors' released files instead (`official.py`): the MRAA LFG and
the 3D U-Net A2V-FDM (`lfg_mraa.py`, `unet3d.py`), sampled in time and memory linear in the
clip's length (`linear.py`), with HuBERT-large features and the pose/eye conditions converted from
the motion model's relative Motion (the released PBNet is not ported).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from talkinghead.errors import InputError
from talkinghead.audio.features import AudioFeatures
from talkinghead.render.base import RenderInputs, paste_feathered
from talkinghead.types import AudioClip, FaceAnalysis, Motion


@dataclass
class DawnSource:
    image: np.ndarray                     # (H, W, 3) the full portrait
    box: tuple[int, int, int, int]        # crop box in the portrait (may extend past it)
    crop: torch.Tensor                    # (1, 3, S, S) in [0, 1]
    z_src: torch.Tensor                   # (1, Cz, h, w)
    face: torch.Tensor                    # (1, 1, h, w) face mask at latent size


def load_a2v(directory: str | Path):
    from talkinghead.io.checkpoint import config_from, load_weights, read_config
    from talkinghead.render.dawn.a2v_fdm import A2VConfig, A2VFDM

    cfg = read_config(directory)["config"]
    if cfg.get("model") != "dawn_a2v":
        raise InputError(f"{directory}: not a DAWN A2V-FDM checkpoint")
    model = A2VFDM(config_from(A2VConfig, cfg))
    model.feature = cfg.get("feature", "whisper")
    model.crop_expand = float(cfg.get("crop_expand", 1.6))
    return load_weights(directory, model).float().eval()


class DawnRenderer:
    """The renderer interface (render/base.py) over a trained LFG + A2V-FDM."""

    name = "dawn"
    crops_itself = True

    def __init__(self, checkpoint: str | Path | None, steps: int = 10, mode: str = "full",
                 crop_size: int = 512) -> None:
        from talkinghead.training.dawn_tasks import load_lfg

        if not checkpoint:
            raise InputError("--renderer dawn needs --dawn-checkpoint DIR (with lfg/ and a2v/; "
                             "train them with `talkinghead train dawn`)")
        root = Path(checkpoint)
        if not (root / "lfg").is_dir() or not (root / "a2v").is_dir():
            raise InputError(f"{root}: a DAWN checkpoint holds lfg/ and a2v/")
        self.lfg = load_lfg(root / "lfg")
        self.a2v = load_a2v(root / "a2v")
        self.steps = steps
        self.mode, self.crop_size = mode, crop_size
        self._extractor = None

    @classmethod
    def from_options(cls, options):
        """A folder of DAWN's released files (or a DAWN_<size>.pth) gives `ReleasedDawnRenderer`."""
        path = options.checkpoint(cls.name)
        if path and is_released(path):
            return ReleasedDawnRenderer.from_files(path, options.steps, options.mode, options.crop_size)
        if path and is_trained_released(path):
            return ReleasedDawnRenderer.from_trained(Path(path), options.steps, options.mode, options.crop_size)
        return cls(path, options.steps, options.mode, options.crop_size)

    @property
    def feature(self) -> str:
        return self.a2v.feature

    def features(self, clip: AudioClip, fps: float, num: int,
                 computed: AudioFeatures | None = None) -> torch.Tensor:
        """(1, num, D) audio features of the kind the A2V-FDM was trained on (`computed` when the
        motion model already extracted that kind)."""
        from talkinghead.audio.features import get_extractor

        if computed is None:
            if self._extractor is None:
                self._extractor = get_extractor(self.feature)
            computed = self._extractor(clip, fps)
        f = computed.values[:num]
        if len(f) < num:
            f = np.concatenate([f, np.repeat(f[-1:], num - len(f), 0)])
        return torch.from_numpy(np.asarray(f, np.float32))[None]

    @torch.no_grad()
    def prepare(self, image: np.ndarray, face: FaceAnalysis, landmarker=None) -> DawnSource:
        import torch.nn.functional as F

        from talkinghead.data.prepare import FACE_BIT, region_masks
        from talkinghead.face.crop import crop_box, crop_image

        size = self.lfg.config.size
        box = crop_box(face, self.a2v.crop_expand)
        crop = crop_image(image, box, size)
        x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0
        scale = size / (box[2] - box[0])
        masks = region_masks((face.landmarks[:, :2] - box[:2]) * scale, size)
        face_mask = torch.from_numpy(((masks & FACE_BIT) > 0).astype(np.float32))[None, None]
        h = self.lfg.config.latent_size
        return DawnSource(image, box, x, self.lfg.encoder(x), F.interpolate(face_mask, size=(h, h), mode="area"))

    @torch.no_grad()
    def motion_latents(self, src: DawnSource, audio: torch.Tensor, motion: Motion, seed: int = 0) -> torch.Tensor:
        """(1, T, 3, h, w) LFG motion for the whole clip, one non-autoregressive DDIM pass."""
        from talkinghead.render.dawn.a2v_fdm import from_latent, sample
        from talkinghead.training.video_data import pose_blink

        if not motion.relative:
            raise ValueError("DAWN is driven by motion relative to the portrait")
        pose, blink = pose_blink(motion)                      # deltas: the Motion is relative
        x = sample(self.a2v, src.z_src, src.face, audio, torch.from_numpy(pose)[None],
                   torch.from_numpy(blink)[None], steps=self.steps, seed=seed)
        return from_latent(x, self.a2v.config.flow_scale)

    def paste(self, src: DawnSource, crop: np.ndarray) -> np.ndarray:
        """The generated crop back into the full portrait, feathered over the box's outer 8%."""
        return paste_feathered(src.image, src.box, crop)

    def frames(self, src: DawnSource, motion: Motion, inputs: RenderInputs) -> Iterator[np.ndarray]:
        """The interface's stream: the whole clip's motion latents in one DDIM pass (on the first
        frame asked for), then decoded frame by frame."""
        if inputs.clip is None:
            raise InputError("the DAWN renderer is driven by audio; give it the speech")
        computed = inputs.features if getattr(inputs.features, "kind", None) == self.feature else None
        audio = self.features(inputs.clip, inputs.fps, len(motion), computed)
        zm = self.motion_latents(src, audio, motion, inputs.seed)
        yield from self.decode(src, zm, self.mode, self.crop_size)

    @torch.no_grad()
    def decode(self, src: DawnSource, zm: torch.Tensor, mode: str = "full", crop_size: int = 512,
               chunk: int = 16) -> Iterator[np.ndarray]:
        """Decode the motion latents frame by frame (in chunks) into output frames."""
        import cv2

        n = zm.shape[1]
        for a in range(0, n, chunk):
            z = zm[0, a:a + chunk]
            out = self.lfg.decode(src.z_src.expand(len(z), -1, -1, -1), z)          # (c, 3, S, S)
            for img in (out.permute(0, 2, 3, 1).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8):
                yield (self.paste(src, img) if mode == "full"
                       else cv2.resize(img, (crop_size, crop_size), interpolation=cv2.INTER_CUBIC))


def is_released(path: str | Path) -> bool:
    p = Path(path)
    return (p.is_file() and p.name.startswith("DAWN_")) or (p.is_dir() and any(p.glob("DAWN_*.pth")))


def is_trained_released(path: str | Path) -> bool:
    """A checkpoint trained here on the released architecture (a2v/config.json says so)."""
    import json

    cfg = Path(path) / "a2v" / "config.json"
    try:
        return json.loads(cfg.read_text())["config"].get("model") == "dawn_a2v_released"
    except (OSError, ValueError, KeyError, AttributeError):
        return False


@dataclass
class ReleasedSource:
    image: np.ndarray                     # (H, W, 3) the full portrait
    box: tuple[int, int, int, int]
    crop: torch.Tensor                    # (1, 3, S, S) in [0, 1]
    skips: list                           # the LFG generator's encoder levels of the crop
    fea: torch.Tensor                     # (1, 256 + 16, S/4, S/4): z_src and the face box embedding
    face_width: float                     # the face box's width in portrait pixels


class ReleasedDawnRenderer:
    """DAWN's released architectures behind the renderer interface: the authors' 128 / 256 files
    (`from_files`, HuBERT features) or a checkpoint trained here with "arch": "released"
    (`from_trained`, the audio features it was trained on)."""

    name = "dawn"
    crops_itself = True

    def __init__(self, lfg, a2v, features, mode: str = "full", crop_size: int = 512, chunk: int = 32,
                 crop_expand: float = 1.6) -> None:
        self.lfg, self.a2v, self.features = lfg, a2v, features    # features(clip, fps, frames) -> (1, T, D)
        self.size = lfg.config.size
        self.mode, self.crop_size, self.chunk = mode, crop_size, chunk
        self.crop_expand = crop_expand    # the square crop around the face box (HDTF-like framing)
        self.trained = isinstance(features, TrainedFeatures)

    @classmethod
    def from_files(cls, path: str | Path, steps: int = 20, mode: str = "full", crop_size: int = 512):
        from talkinghead.render.dawn.official import find_checkpoints, load_official_a2v, load_official_lfg

        lfg_file, a2v_file, size = find_checkpoints(path)
        return cls(load_official_lfg(lfg_file, size), load_official_a2v(a2v_file, steps=steps),
                   HubertFeatures(lfg_file.parent / "hubert-large-ls960-ft"), mode, crop_size)

    @classmethod
    def from_trained(cls, root: Path, steps: int = 10, mode: str = "full", crop_size: int = 512):
        import dataclasses

        from talkinghead.io.checkpoint import config_from, load_weights, read_config
        from talkinghead.render.dawn.unet3d import DawnA2V, Unet3DConfig
        from talkinghead.training.dawn_tasks import load_lfg

        cfg = read_config(root / "a2v")["config"]
        a2v = DawnA2V(dataclasses.replace(config_from(Unet3DConfig, cfg), sampling_timesteps=steps))
        a2v = load_weights(root / "a2v", a2v).float().eval()
        return cls(load_lfg(root / "lfg"), a2v, TrainedFeatures(cfg.get("feature", "whisper")), mode, crop_size,
                   crop_expand=float(cfg.get("crop_expand", 1.6)))

    @torch.no_grad()
    def prepare(self, image: np.ndarray, face: FaceAnalysis, landmarker=None) -> ReleasedSource:
        from talkinghead.face.crop import crop_box, crop_image
        from talkinghead.render.dawn.official import face_box_mask

        box = crop_box(face, self.crop_expand)
        crop = crop_image(image, box, self.size)
        x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0
        lm = (face.landmarks[:468, :2] - np.asarray(box[:2], np.float32)) * (self.size / (box[2] - box[0]))
        emb = self.a2v.face_loc_emb(face_box_mask(lm, self.size))
        skips = self.lfg.generator.encode(x)
        x0, _, x1, _ = face.bbox
        return ReleasedSource(image, box, x, skips, torch.cat([skips[-1], emb], 1), float(x1 - x0))

    @torch.no_grad()
    def motion_latents(self, src: ReleasedSource, audio: torch.Tensor, motion: Motion, seed: int = 0) -> torch.Tensor:
        """(1, 3, T, h, w) motion latents of the whole clip: one DDIM pass, linear in T."""
        from talkinghead.render.dawn.linear import sample_linear
        from talkinghead.render.dawn.official import eyes_from_motion, pose_from_motion

        if self.trained:                      # the convention it was trained with (video_data.pose_blink)
            from talkinghead.training.video_data import pose_blink

            pose, eyes = (torch.from_numpy(a)[None] for a in pose_blink(motion))
        else:
            pose = torch.from_numpy(pose_from_motion(motion, src.face_width))[None]
            eyes = torch.from_numpy(eyes_from_motion(motion))[None]
        cond = torch.cat([audio, pose, eyes], -1)                                   # (1, T, 1024 + 8)
        return sample_linear(self.a2v.diffusion, src.fea, cond, self.chunk, torch.Generator().manual_seed(seed),
                             spill_dir="auto")

    def paste(self, src: ReleasedSource, crop: np.ndarray) -> np.ndarray:
        return paste_feathered(src.image, src.box, crop)

    def frames(self, src: ReleasedSource, motion: Motion, inputs: RenderInputs) -> Iterator[np.ndarray]:
        if inputs.clip is None:
            raise InputError("the DAWN renderer is driven by audio; give it the speech")
        lat = self.motion_latents(src, self.features(inputs.clip, inputs.fps, len(motion)), motion, inputs.seed)
        yield from self.decode(src, lat)

    @torch.no_grad()
    def decode(self, src: ReleasedSource, lat: torch.Tensor) -> Iterator[np.ndarray]:
        """Each frame by the LFG generator (Eq. 4), the source's encoder levels computed once."""
        import cv2

        from talkinghead.render.dawn.lfg_mraa import latent_to_motion

        for i in range(lat.shape[2]):
            flow, occ = latent_to_motion(lat[:, :, i])
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

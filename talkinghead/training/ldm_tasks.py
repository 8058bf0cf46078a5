"""Training tasks of the latent diffusion renderers (render/ldm/), through the shared loop on
`prepare`d shards, as DAWN's tasks (dawn_tasks.py):

- `--stage vae`: our small KL autoencoder on single frames (L1 + LPIPS-VGG16 + KL), shared by
  both renderers (or skip it and pass a diffusers AutoencoderKL folder, e.g. an SD VAE, as --vae);
- `--stage unet` of `difftalk`: target frame, a reference frame of the same video at least
  `ref_min_gap` frames away (DiffTalk: 60), the target masked at the mouth, the audio window and
  the face outline; epsilon loss (LDM);
- `--stage decoder` of `fd2talk-render` (optional, FD2Talk Sec. 3.4.2): our VAE with the decoder
  reading [x; J_0], encoder and decoder fine-tuned on two frames of one video (Eq. 13-15);
- `--stage unet` of `fd2talk-render`: clips whose first frame is the reference (FD2Talk Sec.
  3.4.2), a frame of the clip as target, its Motion relative to the reference; J_0 loss (Eq. 16).

`mouth_weight` (task config; 1 = the papers' plain loss) weighs the latent cells of the mouth
(DiffTalk: its mouth box, the only cells generated at inference; FD2Talk: the target's lips,
dilated) that much more than the rest: the mouth is a small part of the latent, and what the
audio or motion must drive. The CPU configs use it (see docs).

The VAE is frozen while the UNet trains; latents are scaled to unit variance (LDM's
scale-by-std, measured on training frames) unless the VAE's config carries a scaling factor
(Stable Diffusion's 0.18215). Config file: {"model": {...}, "task": {...}, "train": {...}}.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from talkinghead.errors import InputError
from talkinghead.render.ldm.autoencoder import (VAEConfig, add_reference_input, build_vae, encode,
                                                reference_decoder_loss, vae_checkpoint_config, vae_loss)
from talkinghead.render.ldm.difftalk import (DiffTalkConfig, DiffTalkUNet, audio_windows, latent_box, mask_mouth,
                                             outline_features)
from talkinghead.render.ldm.fd2talk_render import FD2TalkRenderConfig, FD2TalkUNet, motion_vectors
from talkinghead.render.ldm.unet import diffusion_loss, schedule_of
from talkinghead.training.video_data import numpy_rng as _rng
from talkinghead.training.video_data import train_val_shards as _splits
from talkinghead.training.loop import TrainConfig, TrainResult, train
from talkinghead.training.run import dataclass_from, override
from talkinghead.training.video_data import VideoShards

RENDERERS = {"difftalk": (DiffTalkConfig, DiffTalkUNet), "fd2talk-render": (FD2TalkRenderConfig, FD2TalkUNet)}
MODEL_NAMES = {"difftalk": "difftalk", "fd2talk-render": "fd2talk_render"}


@dataclass
class VAETaskConfig:
    data: str = ""
    val_frames: int = 16


class VAETask:
    def __init__(self, cfg: VAETaskConfig, model_cfg: VAEConfig, batch_size: int) -> None:
        self.cfg, self.model_cfg, self.batch_size = cfg, model_cfg, batch_size
        self.train_set, self.val_set = _splits(cfg.data, model_cfg.size)
        self.model = build_vae(model_cfg)
        self.lpips = None
        if model_cfg.perceptual_weight > 0:
            from talkinghead.nets.lpips import LPIPS

            self.lpips = LPIPS.offline("vgg").eval().requires_grad_(False)
        rng = np.random.default_rng(0)
        self._val = [self.val_set.pairs(4, rng)[0] for _ in range(max(1, cfg.val_frames // 4))]

    def train_batch(self, step: int, g: torch.Generator) -> torch.Tensor:
        return self.train_set.pairs(self.batch_size, _rng(g))[0]

    def loss(self, model, batch: torch.Tensor, g: torch.Generator):
        dev = next(model.parameters()).device
        if self.lpips is not None:
            self.lpips.to(dev)
        return vae_loss(model, batch.to(dev) * 2 - 1, self.model_cfg, g, self.lpips)

    def val_batches(self):
        return self._val

    def checkpoint_config(self) -> dict:
        return vae_checkpoint_config(self.model_cfg)


@dataclass
class DecoderTaskConfig(VAETaskConfig):
    vae: str = ""                  # the `--stage vae` checkpoint to start from


class DecoderTask(VAETask):
    """FD2Talk Sec. 3.4.2: our VAE, its decoder's first convolution over [x; J_0], encoder and
    decoder fine-tuned on (F_1, F_2) pairs of one video (Eq. 13-15)."""

    def __init__(self, cfg: DecoderTaskConfig, model_cfg: VAEConfig, batch_size: int) -> None:
        from talkinghead.io.checkpoint import config_from, read_config
        from talkinghead.render.ldm.autoencoder import is_diffusers_vae, load_vae

        if is_diffusers_vae(cfg.vae):
            raise InputError(f"{cfg.vae}: --stage decoder fine-tunes our `--stage vae` checkpoint; a diffusers "
                             "VAE folder is not supported there")
        base = load_vae(cfg.vae)
        fields = read_config(cfg.vae)["config"]
        vae_cfg = config_from(VAEConfig, {**fields, "kl_weight": model_cfg.kl_weight,
                                          "perceptual_weight": model_cfg.perceptual_weight})
        super().__init__(cfg, vae_cfg, batch_size)
        if not vae_cfg.reference_decoder:
            add_reference_input(base)
            self.model_cfg.reference_decoder = True
        self.model = base.train().requires_grad_(True)
        rng = np.random.default_rng(0)
        self._val = [self.val_set.pairs(4, rng) for _ in range(max(1, cfg.val_frames // 4))]

    def train_batch(self, step: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.train_set.pairs(self.batch_size, _rng(g))

    def loss(self, model, batch: tuple[torch.Tensor, torch.Tensor], g: torch.Generator):
        dev = next(model.parameters()).device
        if self.lpips is not None:
            self.lpips.to(dev)
        ref, x = (b.to(dev) * 2 - 1 for b in batch)
        return reference_decoder_loss(model, ref, x, self.model_cfg, g, self.lpips)


@dataclass
class UNetTaskConfig:
    data: str = ""
    vae: str = ""                  # `--stage vae` checkpoint or a diffusers AutoencoderKL folder
    size: int = 0                  # crop side; 0: the VAE's training size (ours) or the shards'
    ref_min_gap: int = 60          # DiffTalk: the reference is this far from the target (or farthest)
    # DiffTalk's masked frame (and face outline): "target" (the paper: the target itself, masked) or
    # "other": another frame of the video, ref_min_gap away (see `reference_frame`)
    masked_source: str = "target"
    clip_length: int = 25          # FD2Talk: the reference is the first frame of such a clip
    mouth_weight: float = 1.0      # loss weight of the mouth's latent cells (1: the papers' loss)
    val_samples: int = 16
    # FD2Talk's Motion: "measured" (the face model's, motion.npz; the paper's extracted
    # coefficients) or "driving" (driving.npz beside it: the Motion that made a synthetic video's
    # frames, in the motion model's own space; see `FrameSamples`)
    motion: str = "measured"


def reference_frame(length: int, i: int, gap: int, rng: np.random.Generator) -> int:
    """DiffTalk's reference for target frame i: a frame at least `gap` away (or the farthest).
    With masked_source "other", the masked frame and the outline are another such draw.

    Why not the target's own masked copy (the paper's choice) on CPU: in `generate` the masked
    frame is the still portrait, which says nothing of the audio; a frame's own masked copy
    does. On the check's videos (the geometric teacher's), a ridge probe on held-out videos reads
    the jaw opening (within each video) from the target's masked latent at r 0.90 (the face
    around the mouth moves with it), from a far frame of the nearest head pose still at 0.65
    (the measured pose moves with the jaw), from a random far frame at 0.08: the UNet learns to
    read the mouth from there and ignores the audio (measured: its held-out loss was the same
    with another frame's audio). A random far frame leaves the audio the only source of the mouth,
    as at inference."""
    d = np.abs(np.arange(length) - i)
    far = np.nonzero(d >= gap)[0]
    return int(rng.choice(far)) if len(far) else int(d.argmax())


class FrameSamples:
    """Per-frame samples (target, reference, conditions) from prepared shards.

    `motion` "driving": each shard's driving.npz (a relative Motion, cut or padded to the shard's
    frames) instead of the face model's motion.npz. Why: `generate` drives the FD2Talk renderer
    with the motion model's Motion, and the face model's reading of a rendered face need not be
    in that space. On the learning check's geometric teacher videos it is not: the portrait's
    jaw opening, driven with std 0.094, reads back at std 0.022 (the carphone's 0.10 at 0.11), so
    a renderer trained on the reading is over-driven fourfold at generate (docs/ldm.md)."""

    def __init__(self, shards: VideoShards, root: str | Path, motion: str = "measured") -> None:
        self.shards = shards
        self.motion = [motion_vectors(_shard_motion(Path(root) / "shards" / v.name, len(v), motion))
                       for v in shards.videos]

    def draw(self, n: int, rng: np.random.Generator, cfg: UNetTaskConfig, model_cfg) -> dict[str, torch.Tensor]:
        """n samples: target and reference images (n, 3, S, S) in [-1, 1]; DiffTalk: the masked
        frame, the audio window, the outline and `index` (n, 3): the target's, reference's and
        masked frame's indices; FD2Talk: the Motion relative to the reference and the lips;
        `video` (n,): the samples' videos."""
        out: dict[str, list] = {}
        for _ in range(n):
            k = int(rng.integers(len(self.shards.videos)))
            v = self.shards.videos[k]
            add = self._difftalk if isinstance(model_cfg, DiffTalkConfig) else self._fd2talk
            for key, x in {"video": torch.tensor(k), **add(v, self.motion[k], rng, cfg, model_cfg)}.items():
                out.setdefault(key, []).append(x)
        return {k: torch.stack(x) for k, x in out.items()}

    def _images(self, v, frames: list[int]) -> torch.Tensor:
        return self.shards._images(np.stack([v.frames[j] for j in frames])) * 2 - 1   # (len, 3, S, S)

    def _difftalk(self, v, mv: np.ndarray, rng: np.random.Generator, cfg: UNetTaskConfig,
                  model_cfg: DiffTalkConfig) -> dict[str, torch.Tensor]:
        from talkinghead.data.prepare import FACE_BIT

        i = int(rng.integers(len(v)))
        r = reference_frame(len(v), i, cfg.ref_min_gap, rng)
        m = i if cfg.masked_source == "target" else reference_frame(len(v), i, cfg.ref_min_gap, rng)
        img = self._images(v, [i, r, m])
        face = (np.asarray(v.masks[m]) & FACE_BIT) > 0
        return {"target": img[0], "ref": img[1], "masked": mask_mouth(img[2:], model_cfg.mouth_box)[0],
                "index": torch.tensor([i, r, m]),
                "audio": audio_windows(np.asarray(v.features), np.array([i]), model_cfg.audio_window)[0],
                "outline": torch.from_numpy(outline_features(face, model_cfg.landmark_rays, model_cfg.mouth_box))}

    def _fd2talk(self, v, mv: np.ndarray, rng: np.random.Generator, cfg: UNetTaskConfig,
                 model_cfg) -> dict[str, torch.Tensor]:
        from talkinghead.data.prepare import LIP_BIT

        r = int(rng.integers(max(1, len(v) - cfg.clip_length + 1)))
        i = r + int(rng.integers(min(cfg.clip_length, len(v) - r)))
        img = self._images(v, [i, r])
        return {"target": img[0], "ref": img[1], "motion": torch.from_numpy(mv[i] - mv[r]),
                "lips": torch.from_numpy(((np.asarray(v.masks[i]) & LIP_BIT) > 0)[None].astype(np.float32))}


def _shard_motion(shard: Path, frames: int, kind: str):
    """A shard's Motion of `kind` ("measured" or "driving"), `frames` long."""
    from talkinghead.types import Motion

    if kind not in ("measured", "driving"):
        raise InputError(f"task.motion {kind!r}: \"measured\" or \"driving\"")
    path = shard / ("motion.npz" if kind == "measured" else "driving.npz")
    if not path.is_file():
        raise InputError(f"{shard}: task.motion \"{kind}\" needs {path.name} in every shard")
    m = Motion.load(path)
    return m[np.minimum(np.arange(frames), len(m) - 1)]     # cut, or the last row repeated


class UNetTask:
    def __init__(self, renderer: str, cfg: UNetTaskConfig, model_cfg, batch_size: int) -> None:
        from talkinghead.render.ldm.autoencoder import downsampling, is_diffusers_vae, load_vae

        self.renderer, self.cfg, self.batch_size = renderer, cfg, batch_size
        if cfg.masked_source not in ("target", "other"):
            raise InputError(f"task.masked_source {cfg.masked_source!r}: \"target\" or \"other\"")
        self.vae = load_vae(cfg.vae)
        ours = not is_diffusers_vae(cfg.vae)
        size = cfg.size or (self.vae.config.sample_size if ours else 0) or None
        self.train_set, self.val_set = _splits(cfg.data, size)
        self.size = self.train_set.size
        f = downsampling(self.vae)
        if self.size % (f * 2 ** (len(model_cfg.channels) - 1) * getattr(model_cfg, "patch", 1)):
            raise InputError(f"crop size {self.size} is not divisible by the VAE's and UNet's downsampling")
        extra = {"latent_channels": self.vae.config.latent_channels, "latent_size": self.size // f}
        if renderer == "difftalk":
            extra["audio_dim"] = self.train_set.feature_dim
        self.model_cfg = type(model_cfg)(**{**asdict(model_cfg), **extra})
        self.model = RENDERERS[renderer][1](self.model_cfg)
        self.schedule = schedule_of(self.model_cfg)
        self.train_samples, self.val_samples = (FrameSamples(self.train_set, cfg.data, cfg.motion),
                                                FrameSamples(self.val_set, cfg.data, cfg.motion))
        rng = np.random.default_rng(0)
        self._val = [self.val_samples.draw(4, rng, cfg, self.model_cfg) for _ in range(max(1, cfg.val_samples // 4))]
        self.scale = self._latent_scale(ours)

    @torch.no_grad()
    def _latent_scale(self, ours: bool) -> float:
        """1 / std of training latents (LDM's scale-by-std) for our VAE; the config's otherwise."""
        if not ours:
            return float(self.vae.config.scaling_factor)
        x = self.train_samples.draw(16, np.random.default_rng(1), self.cfg, self.model_cfg)["target"]
        return float(1.0 / encode(self.vae, x, 1.0).std().clamp(min=1e-4))

    def train_batch(self, step: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        return self.train_samples.draw(self.batch_size, _rng(g), self.cfg, self.model_cfg)

    def loss(self, model, batch: dict[str, torch.Tensor], g: torch.Generator):
        dev = next(model.parameters()).device
        b = {k: v.to(dev) for k, v in batch.items()}
        self.vae.to(dev)
        with torch.no_grad():
            z0 = encode(self.vae, b["target"], self.scale)
            zr = encode(self.vae, b["ref"], self.scale)
            zm = encode(self.vae, b["masked"], self.scale) if self.renderer == "difftalk" else None
        t = torch.randint(0, self.model_cfg.diffusion_steps, (len(z0),), generator=g).to(dev)
        noise = torch.randn(z0.shape, generator=g).to(dev)
        zt = self.schedule.add_noise(z0, noise, t)
        if self.renderer == "difftalk":
            pred = model(zt, t, zm, zr, b["audio"], b["outline"])
        else:
            pred = model(zt, t, zr, b["motion"])
        loss = diffusion_loss(pred, z0, noise, self.model_cfg.prediction, self._mouth_weight(b, z0))
        return loss, {"mse": float(loss.detach())}

    def _mouth_weight(self, b: dict[str, torch.Tensor], z0: torch.Tensor) -> torch.Tensor | None:
        """(B or 1, 1, h, w): mouth_weight on the mouth's latent cells, 1 elsewhere (None if 1)."""
        import torch.nn.functional as F

        w = self.cfg.mouth_weight
        if w == 1:
            return None
        h = z0.shape[-1]
        if self.renderer == "difftalk":
            mouth = latent_box(h, self.model_cfg.mouth_box).to(z0)
        else:   # the target's lips, (B, 1, S, S) -> cells they touch, dilated by one cell
            mouth = F.max_pool2d(F.adaptive_max_pool2d(b["lips"], h), 3, 1, 1)
        return 1 + (w - 1) * mouth

    def val_batches(self):
        return self._val

    def checkpoint_config(self) -> dict:
        return {"model": MODEL_NAMES[self.renderer], **asdict(self.model_cfg), "size": self.size,
                "latent_scale": self.scale, "feature": self.train_set.feature_kind,
                "crop_expand": self.train_set.crop_expand}


def _read(config: str | Path) -> dict:
    try:
        return json.loads(Path(config).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read config {config}: {e}") from None


def _tuples(values: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def train_ldm(renderer: str, stage: str, config: str | Path, data: str | None, output: str | Path,
              vae: str | None = None, steps: int | None = None, max_minutes: float | None = None,
              resume: bool = True, progress: bool = True) -> TrainResult:
    """`talkinghead train difftalk|fd2talk-render --stage vae|unet`."""
    if renderer not in RENDERERS:
        raise InputError(f"unknown latent diffusion renderer {renderer!r}: {', '.join(RENDERERS)}")
    raw = _read(config)
    train_cfg = dataclass_from(TrainConfig, raw.get("train", {}), f"{config} train")
    if stage == "vae":
        task_cfg = dataclass_from(VAETaskConfig, raw.get("task", {}), f"{config} task")
        model_cfg = dataclass_from(VAEConfig, _tuples(raw.get("model", {})), f"{config} model")
    elif stage == "decoder":
        if renderer != "fd2talk-render":
            raise InputError("--stage decoder is FD2Talk's (train fd2talk-render); DiffTalk decodes with the plain VAE")
        task_cfg = dataclass_from(DecoderTaskConfig, raw.get("task", {}), f"{config} task")
        model_cfg = dataclass_from(VAEConfig, _tuples(raw.get("model", {})), f"{config} model")
        task_cfg.vae = vae or task_cfg.vae
        if not task_cfg.vae:
            raise InputError("train fd2talk-render --stage decoder needs --vae DIR (a `--stage vae` checkpoint)")
    elif stage == "unet":
        task_cfg = dataclass_from(UNetTaskConfig, raw.get("task", {}), f"{config} task")
        model_cfg = dataclass_from(RENDERERS[renderer][0], _tuples(raw.get("model", {})), f"{config} model")
        task_cfg.vae = vae or task_cfg.vae
        if not task_cfg.vae:
            raise InputError(f"train {renderer} --stage unet needs --vae DIR (a `--stage vae` checkpoint "
                             "or a diffusers AutoencoderKL folder)")
    else:
        raise InputError(f"unknown stage {stage!r} (vae, decoder or unet)")
    task_cfg.data = data or task_cfg.data
    if not task_cfg.data:
        raise InputError("no dataset: pass --data DIR (made by `talkinghead prepare`)")
    override(train_cfg, steps, max_minutes)
    tasks = {"vae": lambda: VAETask(task_cfg, model_cfg, train_cfg.batch_size),
             "decoder": lambda: DecoderTask(task_cfg, model_cfg, train_cfg.batch_size),
             "unet": lambda: UNetTask(renderer, task_cfg, model_cfg, train_cfg.batch_size)}
    task = tasks[stage]()
    return train(task, train_cfg, output, resume=resume, progress=progress)

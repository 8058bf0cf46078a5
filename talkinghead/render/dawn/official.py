"""DAWN's released checkpoints (dawn.txt; github.com/Hanbo-Cheng/DAWN-pytorch, `pretrain_models/`):
loading them into our classes, and the inputs in the released conventions.

Folder layout (`generate --renderer dawn --dawn-checkpoints DIR`), as the authors ship it:

    DIR/LFG_128_1000ep.pth  DIR/DAWN_128.pth      (and/or LFG_256_400ep.pth, DAWN_256.pth)
    DIR/hubert-large-ls960-ft/                    (transformers folder: config.json, model.safetensors)

`DIR` picks 128 when both resolutions are there; pass `DIR/DAWN_256.pth` to pick 256. PyTorch
files are read with `torch.load(weights_only=True)` only. Model sizes are read off the weights'
shapes, so a smaller model in the same layout loads too (the tests use one).

Conventions (the released `unified_video_generator.py`):
* audio: HuBERT-large last hidden state of the whole clip (normalised over the clip, run in
  20 s segments), linearly interpolated from its 50 Hz to the video's frames
  (`np.linspace(0, L - 1, frames)`);
* condition per frame: [HuBERT (1024), pose - pose_src (6), eyes - eyes_src (2)], the pose being
  3DDFA_V2's [yaw, pitch, roll (degrees), scale, tx, ty (pixels)] and the eyes each eye's lid
  opening over its width on the 68 landmarks (left = the subject's left, points 42-47);
* the face box mask (1 inside the face landmarks' box, at the frame size) through `face_loc_emb`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from talkinghead.errors import InputError

FACE_SEED = 1234                  # the released configs' random_seed (see DawnA2V on face_loc_emb)
SCALE_SRC = 4.79e-4              # the released default source pose's 3DDFA scale
FACE_WIDTH_CM = 14.0              # to turn our translation (cm) into pixels for the pose's tx, ty


def find_checkpoints(path: str | Path) -> tuple[Path, Path, int]:
    """(LFG file, DAWN file, resolution) from a folder or a DAWN_<res>.pth file."""
    path = Path(path)
    if path.is_file():
        m = re.fullmatch(r"DAWN_(\d+)\.pth", path.name)
        if not m:
            raise InputError(f"{path}: --dawn-checkpoints takes a folder or a DAWN_<size>.pth file")
        folder, sizes = path.parent, [int(m.group(1))]
    elif path.is_dir():
        folder = path
        sizes = sorted(int(m.group(1)) for p in path.iterdir() if (m := re.fullmatch(r"DAWN_(\d+)\.pth", p.name)))
    else:
        raise InputError(f"{path}: no such DAWN checkpoint folder")
    for size in sizes:
        lfg = sorted(folder.glob(f"LFG_{size}_*.pth")) or sorted(folder.glob(f"LFG_{size}.pth"))
        if lfg:
            return lfg[-1], folder / f"DAWN_{size}.pth", size
    raise InputError(f"{path}: needs DAWN_<size>.pth and LFG_<size>_*.pth (DAWN's released files)")


def load_pth(path: str | Path) -> dict:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable or unsafe pickle is the user's file
        raise InputError(f"{path}: not a readable weights-only PyTorch file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})") from None


def _scale_from_kernel(state: dict, key: str) -> float:
    """AntiAliasInterpolation2d's scale from its kernel size (k = 2 round(4 sigma) + 1)."""
    if key not in state:
        return 1.0
    sigma = (state[key].shape[-1] - 1) / 8
    return 1.0 / (2 * sigma + 1)


def _hourglass(state: dict, prefix: str) -> dict:
    enc = [state[f"{prefix}.encoder.down_blocks.{i}.conv.weight"].shape
           for i in range(64) if f"{prefix}.encoder.down_blocks.{i}.conv.weight" in state]
    return dict(block_expansion=enc[0][0] // 2, num_blocks=len(enc), max_features=max(s[0] for s in enc))


def mraa_config(ckpt: dict, size: int):
    """MRAAConfig read off a released LFG checkpoint's shapes."""
    from talkinghead.render.dawn.lfg_mraa import MRAAConfig

    gen, reg, bg = ckpt["generator"], ckpt["region_predictor"], ckpt["bg_predictor"]
    downs = [k for k in gen if re.fullmatch(r"down_blocks\.\d+\.conv\.weight", k)]
    flow = _hourglass(gen, "pixelwise_flow_predictor.hourglass")
    widths = [gen[k].shape[0] for k in downs]
    bge = [bg[k].shape for k in bg if re.fullmatch(r"encoder\.down_blocks\.\d+\.conv\.weight", k)]
    return MRAAConfig(
        size=size, num_regions=reg["regions.weight"].shape[0], num_channels=gen["final.weight"].shape[0],
        bg=dict(block_expansion=bge[0][0] // 2, max_features=max(s[0] for s in bge), num_blocks=len(bge),
                bg_type="affine"),
        region=dict(temperature=0.1, scale_factor=_scale_from_kernel(reg, "down.weight"), pca_based=True,
                    **_hourglass(reg, "predictor")),
        generator=dict(block_expansion=gen["first.conv.weight"].shape[0], max_features=max(widths),
                       num_down_blocks=len(downs),
                       num_bottleneck_blocks=len({k.split(".")[1] for k in gen if k.startswith("bottleneck.")}),
                       skips=True),
        flow=dict(scale_factor=_scale_from_kernel(gen, "pixelwise_flow_predictor.down.weight"),
                  use_deformed_source=True, use_covar_heatmap=True, estimate_occlusion_map=True, **flow))


def load_official_lfg(path: str | Path, size: int):
    from talkinghead.render.dawn.lfg_mraa import MRAALatentFlowGenerator

    ckpt = load_pth(path)
    if not all(k in ckpt for k in ("generator", "region_predictor", "bg_predictor")):
        raise InputError(f"{path}: not DAWN's LFG (needs generator, region_predictor, bg_predictor)")
    model = MRAALatentFlowGenerator(mraa_config(ckpt, size))
    for name in ("generator", "region_predictor", "bg_predictor"):
        _load_strict(getattr(model, name), ckpt[name], f"{path} [{name}]")
    return model.eval().requires_grad_(False)


def unet_config(state: dict, win_width: int = 40, sampling_timesteps: int = 20):
    """Unet3DConfig read off a released `["diffusion"]` dict's shapes."""
    from talkinghead.render.dawn.unet3d import Unet3DConfig

    p = "denoise_fn."
    dim, channels = state[p + "init_conv.weight"].shape[:2]
    outs = [state[k].shape[0] for k in sorted(state, key=lambda k: int(k.split(".")[2]) if k.startswith(p + "downs.") else 0)
            if re.fullmatch(r"denoise_fn\.downs\.\d+\.0\.block1\.proj\.weight", k)]
    heads = state[p + "time_rel_pos_bias.relative_attention_bias.weight"].shape[1]
    qkv = state[p + "init_temporal_attn.fn.fn.fn.to_qkv.weight"].shape[0]
    blk = p + "downs.0.0."
    return Unet3DConfig(dim=dim, dim_mults=tuple(o // dim for o in outs),
                        latent_channels=channels - 3 - 16, cond_aud=state[blk + "audio_mlp.1.weight"].shape[1],
                        cond_pose=state[blk + "pose_mlp.1.weight"].shape[1],
                        cond_eye=state[blk + "eye_mlp.1.weight"].shape[1], attn_heads=heads,
                        attn_dim_head=qkv // 3 // heads, win_width=win_width,
                        sampling_timesteps=sampling_timesteps)


def load_official_a2v(path: str | Path, win_width: int = 40, steps: int = 20):
    from talkinghead.render.dawn.unet3d import DawnA2V

    ckpt = load_pth(path)
    state = ckpt.get("diffusion") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or "denoise_fn.init_conv.weight" not in state:
        raise InputError(f"{path}: not DAWN's A2V-FDM (needs a 'diffusion' state dict)")
    torch.manual_seed(FACE_SEED)          # face_loc_emb is not in the released files (DawnA2V)
    model = DawnA2V(unet_config(state, win_width, steps))
    _load_strict(model.diffusion, state, str(path), ignore=("rotary_emb.",))
    return model.eval().requires_grad_(False)


def _load_strict(module: torch.nn.Module, state: dict, where: str, ignore: tuple[str, ...] = ()) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not any(s in k for s in ignore)]
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise InputError(f"{where}: weights do not match the released architecture "
                         f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                         f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})")


# ---- inputs in the released conventions ----------------------------------------------------

def interpolate_frames(hidden: np.ndarray, frames: int) -> np.ndarray:
    """scipy's interp1d(kind='linear') of (L, D) at np.linspace(0, L - 1, frames), as released."""
    n = len(hidden)
    if n == 1:
        return np.repeat(hidden, frames, 0).astype(np.float32)
    x = np.linspace(0, n - 1, frames)
    lo = np.clip(np.floor(x).astype(np.int64), 0, n - 2)
    w = (x - lo)[:, None]
    return (hidden[lo] * (1 - w) + hidden[lo + 1] * w).astype(np.float32)


@torch.no_grad()
def hubert_hidden(model, speech_16k: np.ndarray, segment: int = 320 * 1000) -> np.ndarray:
    """The released `_get_hubert_from_16k_speech`: the clip normalised as a whole (the processor's
    zero-mean unit-variance step), HuBERT over 20 s segments (each with the 80 samples of overlap
    its first convolution needs), (L, 1024) with L = (samples - 80) // 320."""
    kernel, stride = 400, 320
    x = torch.from_numpy(np.asarray(speech_16k, np.float32))
    x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
    expected = (len(x) - (kernel - stride)) // stride
    parts = []
    for i in range(len(x) // segment):
        a = segment * i
        parts.append(model(x[None, a:a + segment - stride + kernel]).last_hidden_state[0])
    rest = x[segment * (len(x) // segment):]
    if len(rest) >= kernel:
        parts.append(model(rest[None]).last_hidden_state[0])
    if not parts:
        raise InputError("the speech is shorter than one HuBERT frame (25 ms)")
    out = torch.cat(parts)
    if len(out) < expected:
        out = torch.nn.functional.pad(out, (0, 0, 0, expected - len(out)))
    return out[:expected].float().numpy()


def pose_from_motion(motion, face_width_px: float) -> np.ndarray:
    """Our relative Motion -> (T, 6) changes in the released pose convention [yaw, pitch, roll
    (deg), scale, tx, ty (px of the portrait)]. Angles pass through (both in degrees); our scale
    change is a ratio, applied to the released default source scale (4.79e-4); translations go
    cm -> pixels through an assumed 14 cm face width over the portrait's face box. Not checked
    against 3DDFA_V2 here (its ONNX models do not ship), so signs and units are our reading."""
    if not motion.relative:
        raise ValueError("DAWN is driven by motion relative to the portrait")
    px_per_cm = face_width_px / FACE_WIDTH_CM
    out = np.zeros((len(motion), 6), np.float32)
    out[:, :3] = motion.rotation
    out[:, 3] = SCALE_SRC * (motion.scale - 1.0)
    out[:, 4] = motion.translation[:, 0] * px_per_cm
    out[:, 5] = -motion.translation[:, 1] * px_per_cm   # image y grows downwards
    return out


def eyes_from_motion(motion) -> np.ndarray:
    """(T, 2) eye-opening changes (left, right of the subject): our eye aspect ratio's change."""
    return np.asarray(motion.ear, np.float32)


def face_box_mask(landmarks_xy: np.ndarray, size: int) -> torch.Tensor:
    """(1, 1, S, S) mask of the landmarks' box in S x S crop pixels, as `generate_bbox_mask`
    (integer corners, the far edge + 1 included)."""
    x0, y0 = np.floor(landmarks_xy.min(0)).astype(int)
    x1, y1 = np.floor(landmarks_xy.max(0)).astype(int) + 1
    rows, cols = np.arange(size)[:, None], np.arange(size)[None, :]
    mask = (rows >= y0) & (rows <= y1) & (cols >= x0) & (cols <= x1)
    return torch.from_numpy(mask.astype(np.float32))[None, None]

"""DAWN's A2V-FDM denoiser as released (dawn.txt Sec. 3.3, 3.6; the authors' `DM_3/modules/
video_flow_diffusion_multiGPU_v0_crema_plus_faceemb_ca_multi_test.py`, a 3D U-Net after Ho et al.'s
video diffusion models as used by LFDM), named so the released `DAWN_128.pth` / `DAWN_256.pth`
(`["diffusion"]`: `denoise_fn.*` and the schedule's buffers) load by key.

Per level: two residual blocks (3x3 per-frame convolutions, GroupNorm, the diffusion step as a
scale/shift; per-frame cross-attention from every position to that frame's HuBERT vector, pose
change and eye change, one token each plus a learnt null token, cosine-similarity attention),
spatial linear attention, temporal attention (RoPE plus a T5 relative-position bias, masked to
|i - j| <= win_width = 40 frames: the local attention). The denoiser predicts the noise; sampling
is DDIM (20 steps, eta = 1) with dynamic thresholding (0.9 quantile of |x0| over the clip).

Two ways to run the same weights:
* `Unet3D.forward`: the released computation (one tensor for the clip; T x T attention scores);
* `run_linear` (`sample_linear`): layer by layer over the whole clip, each layer in time chunks.
  The temporal attention of a chunk reads only the keys inside its window (banded: the released
  mask gives weight exactly 0 outside it) and GroupNorm statistics are summed over all chunks, so
  the output equals the released single pass (GroupNorm normalises over the frames too, which is
  why independent time tiles with a halo would not), in time and memory linear in the length.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Unet3DConfig:
    dim: int = 64
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    latent_channels: int = 256       # the LFG's z_src channels
    face_channels: int = 16          # Face_loc_Encoder output
    cond_aud: int = 1024             # HuBERT-large
    cond_pose: int = 6
    cond_eye: int = 2
    attn_heads: int = 8
    attn_dim_head: int = 32
    resnet_groups: int = 8
    init_kernel_size: int = 7
    win_width: int = 40
    timesteps: int = 1000
    sampling_timesteps: int = 20
    ddim_eta: float = 1.0
    dynamic_thres_percentile: float = 0.9
    # Training-recipe options of models trained here (the released files use the defaults):
    # objective "pred_noise" (released) or "pred_x0" (the denoiser outputs the clean latents, the
    # x0 parameterisation of the released code's lineage, lucidrains' `objective`); residual_flow:
    # diffuse grid - identity instead of the grid (the released `use_residual_flow`, "-rf").
    objective: str = "pred_noise"
    residual_flow: bool = False

    @classmethod
    def debug(cls, **kw) -> Unet3DConfig:
        base = dict(dim=16, dim_mults=(1, 2), latent_channels=32, cond_aud=16, attn_heads=2,
                    attn_dim_head=8, win_width=3, sampling_timesteps=3)
        return cls(**{**base, **kw})

    @property
    def channels(self) -> int:
        return 3 + self.latent_channels + self.face_channels


# ---- small modules named as released ---------------------------------------------------------

class Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x, **kw):
        return self.fn(x, **kw) + x


class LayerNorm(nn.Module):
    """Over the channel axis of (B, C, F, H, W)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, dim, 1, 1, 1))

    def forward(self, x):
        var = torch.var(x, dim=1, unbiased=False, keepdim=True)
        return (x - x.mean(dim=1, keepdim=True)) / (var + self.eps).sqrt() * self.gamma


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn, self.norm = fn, LayerNorm(dim)

    def forward(self, x, **kw):
        return self.fn(self.norm(x), **kw)


class LayerNormLast(nn.Module):
    """`LayerNorm_img`: over the last axis, gain `g`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        var = torch.var(x, dim=-1, unbiased=False, keepdim=True)
        return (x - x.mean(dim=-1, keepdim=True)) * (var + 1e-5).rsqrt() * self.g


class RotaryEmbedding(nn.Module):
    """rotary-embedding-torch's interleaved RoPE; `freqs` is in the released state dict."""

    def __init__(self, dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        self.register_buffer("freqs", 1.0 / theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))

    def rotate(self, t: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """t (..., n, d) with the sequence on axis -2; positions (n,)."""
        f = (positions.to(t.dtype)[:, None] * self.freqs.to(t.dtype)).repeat_interleave(2, -1)   # (n, rot)
        rot = f.shape[-1]
        mid = t[..., :rot]
        pairs = mid.unflatten(-1, (-1, 2))
        half = torch.stack([-pairs[..., 1], pairs[..., 0]], -1).flatten(-2)
        return torch.cat([mid * f.cos() + half * f.sin(), t[..., rot:]], -1)


class RelativePositionBias(nn.Module):
    def __init__(self, heads: int = 8, num_buckets: int = 32, max_distance: int = 32, window_width: int = 40) -> None:
        super().__init__()
        self.num_buckets, self.max_distance, self.window_width = num_buckets, max_distance, window_width
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def _bucket(self, rel: torch.Tensor) -> torch.Tensor:
        n, nb = -rel, self.num_buckets // 2
        ret = (n < 0).long() * nb
        n = n.abs()
        exact = nb // 2
        large = exact + (torch.log(n.float() / exact) / math.log(self.max_distance / exact) * (nb - exact)).long()
        large = torch.minimum(large, torch.full_like(large, nb - 1))
        return ret + torch.where(n < exact, n, large)

    def between(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """(heads, len(q_pos), len(k_pos)) bias, -1e8 outside the local window."""
        rel = k_pos[None, :] - q_pos[:, None]
        mask = -((rel > self.window_width).float() + (rel < -self.window_width).float()) * 1e8
        return self.relative_attention_bias(self._bucket(rel)).permute(2, 0, 1) + mask

    def forward(self, n: int, device=None) -> torch.Tensor:
        pos = torch.arange(n, device=device)
        return self.between(pos, pos)


class Attention(nn.Module):
    """Softmax attention over axis -2 of (..., n, dim): temporal (RoPE + bias) or spatial."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32, rotary_emb: RotaryEmbedding | None = None) -> None:
        super().__init__()
        self.scale, self.heads = dim_head ** -0.5, heads
        self.rotary_emb = rotary_emb
        self.to_qkv = nn.Linear(dim, dim_head * heads * 3, bias=False)
        self.to_out = nn.Linear(dim_head * heads, dim, bias=False)

    def attend(self, q_in, kv_in, q_pos=None, k_pos=None, pos_bias=None):
        """q_in (..., nq, dim) and kv_in (..., nk, dim); positions for RoPE; bias (heads, nq, nk)."""
        wq, wk, wv = self.to_qkv.weight.chunk(3, 0)
        heads = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(-2, -3)          # (..., h, n, d)
        q, k, v = heads(F.linear(q_in, wq)) * self.scale, heads(F.linear(kv_in, wk)), heads(F.linear(kv_in, wv))
        if self.rotary_emb is not None:
            q, k = self.rotary_emb.rotate(q, q_pos), self.rotary_emb.rotate(k, k_pos)
        sim = q @ k.transpose(-1, -2)
        if pos_bias is not None:
            sim = sim + pos_bias
        attn = (sim - sim.amax(dim=-1, keepdim=True)).softmax(dim=-1)
        out = (attn @ v).transpose(-2, -3).flatten(-2)                                  # (..., n, h*d)
        return self.to_out(out)

    def forward(self, x, pos_bias=None, **_):
        pos = torch.arange(x.shape[-2], device=x.device)
        return self.attend(x, x, pos, pos, pos_bias)


class ToTokens(nn.Module):
    """`EinopsToAndFrom`: (B, C, F, H, W) -> tokens along time ('b (h w) f c') or space ('b f (h w) c')."""

    def __init__(self, axis: str, fn: nn.Module) -> None:
        super().__init__()
        self.axis, self.fn = axis, fn

    def forward(self, x, **kw):
        b, c, f, h, w = x.shape
        if self.axis == "time":
            t = x.permute(0, 3, 4, 2, 1).reshape(b, h * w, f, c)
            return self.fn(t, **kw).reshape(b, h, w, f, c).permute(0, 4, 3, 1, 2)
        t = x.permute(0, 2, 3, 4, 1).reshape(b, f, h * w, c)
        return self.fn(t, **kw).reshape(b, f, h, w, c).permute(0, 4, 1, 2, 3)


class SpatialLinearAttention(nn.Module):
    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        self.scale, self.heads = dim_head ** -0.5, heads
        self.to_qkv = nn.Conv2d(dim, dim_head * heads * 3, 1, bias=False)
        self.to_out = nn.Conv2d(dim_head * heads, dim, 1)

    def forward(self, x, **_):
        b, c, f, h, w = x.shape
        y = x.transpose(1, 2).reshape(b * f, c, h, w)
        q, k, v = (t.unflatten(1, (self.heads, -1)).flatten(3) for t in self.to_qkv(y).chunk(3, dim=1))
        q, k = q.softmax(dim=-2) * self.scale, k.softmax(dim=-1)                    # (bf, heads, d, hw)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q).reshape(b * f, -1, h, w)
        return self.to_out(out).reshape(b, f, c, h, w).transpose(1, 2)


class CrossAttention(nn.Module):
    """Each position of a frame attends to that frame's one condition token and a null token."""

    def __init__(self, dim: int, out_dim: int, context_dim: int, dim_head: int = 8, heads: int = 8,
                 scale: float = 8) -> None:
        super().__init__()
        self.scale, self.heads = scale, heads
        inner = dim_head * heads
        self.norm = LayerNormLast(dim)
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, inner * 2, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Sequential(nn.Linear(inner, out_dim, bias=False), LayerNormLast(out_dim))

    def forward(self, x, context):
        """x (N, n, dim) for N = frames; context (N, context_dim)."""
        n_ = x.shape[0]
        q = self.to_q(self.norm(x)).unflatten(-1, (self.heads, -1)).transpose(1, 2)      # (N, h, n, d)
        k, v = (t.unflatten(-1, (self.heads, -1))[:, :, None] for t in self.to_kv(context).chunk(2, -1))
        nk, nv = (t.expand(n_, self.heads, 1, -1) for t in self.null_kv[:, None, None].unbind(0))
        k, v = torch.cat([nk, k], 2), torch.cat([nv, v], 2)                               # (N, h, 2, d)
        q, k = F.normalize(q, dim=-1) * self.q_scale, F.normalize(k, dim=-1) * self.k_scale
        attn = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)
        return self.to_out((attn @ v).transpose(1, 2).flatten(2))


class Block(nn.Module):
    def __init__(self, dim: int, dim_out: int, groups: int = 8) -> None:
        super().__init__()
        self.proj = nn.Conv3d(dim, dim_out, (1, 3, 3), padding=(0, 1, 1))
        self.norm = nn.GroupNorm(groups, dim_out)
        self.act = nn.SiLU()

    def forward(self, x, time_scale_shift=None):
        x = self.norm(self.proj(x))
        if time_scale_shift is not None:
            scale, shift = time_scale_shift
            x = x * (scale + 1) + shift
        return self.act(x)


def _mlp(cin: int | None, cout: int) -> nn.Module | None:
    return nn.Sequential(nn.SiLU(), nn.Linear(cin, cout)) if cin is not None else None


class ResnetBlock(nn.Module):
    """`ResnetBlock_ca_mul`: x (B, C, F, H, W); cond (B, F, aud+pose+eye) split into three tokens."""

    def __init__(self, dim: int, dim_out: int, *, time_emb_dim=None, audio_emb_dim=None, pose_emb_dim=None,
                 eye_emb_dim=None, groups: int = 8) -> None:
        super().__init__()
        self.time_mlp = _mlp(time_emb_dim, dim_out * 2)
        self.audio_mlp = _mlp(audio_emb_dim, dim_out * 2)
        self.pose_mlp = _mlp(pose_emb_dim, dim_out * 2)
        self.eye_mlp = _mlp(eye_emb_dim, dim_out * 2)
        self.audio_emb_dim, self.pose_emb_dim = audio_emb_dim, pose_emb_dim
        for name in ("cross_attn_aud", "cross_attn_pose", "cross_attn_eye"):
            setattr(self, name, CrossAttention(dim, dim_out, context_dim=dim_out * 2))
        self.block1 = Block(dim, dim_out, groups)
        self.block2 = Block(dim_out, dim_out, groups)
        self.res_conv = nn.Conv3d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def time_scale_shift(self, t):
        return None if self.time_mlp is None else self.time_mlp(t)[:, :, None, None, None].chunk(2, dim=1)

    def cond_term(self, x, cond) -> torch.Tensor:
        """The three cross-attentions' sum (B, C_out, F, H, W), frame by frame."""
        b, c, f, h, w = x.shape
        a, p = self.audio_emb_dim, self.pose_emb_dim
        tokens = x.permute(0, 2, 3, 4, 1).reshape(b * f, h * w, c)                       # (BF, HW, C)
        flat = lambda e: e.reshape(b * f, -1)
        out = (self.cross_attn_pose(tokens, flat(self.pose_mlp(cond[..., a:a + p])))
               + self.cross_attn_aud(tokens, flat(self.audio_mlp(cond[..., :a])))
               + self.cross_attn_eye(tokens, flat(self.eye_mlp(cond[..., a + p:]))))
        return out.reshape(b, f, h, w, -1).permute(0, 4, 1, 2, 3)

    def forward(self, x, time_emb=None, cond=None):
        h = self.block1(x, self.time_scale_shift(time_emb))
        if self.audio_mlp is not None:
            h = self.cond_term(x, cond) + h
        return self.block2(h) + self.res_conv(x)


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x):
        half = self.dim // 2
        emb = torch.exp(torch.arange(half, device=x.device) * -(math.log(10000) / (half - 1)))
        emb = x[:, None] * emb[None, :]
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


class Unet3D(nn.Module):
    """`DynamicNfUnet3D` with `ResnetBlock_ca_mul` blocks; forward(x, t, cond) predicts the noise."""

    def __init__(self, cfg: Unet3DConfig) -> None:
        super().__init__()
        self.config = cfg
        dim, heads, dh = cfg.dim, cfg.attn_heads, cfg.attn_dim_head
        # one RoPE per attention (released: one shared module; the keys are the same either way, and
        # unshared buffers can be saved as safetensors)
        temporal = lambda d: Residual(PreNorm(d, ToTokens(
            "time", Attention(d, heads, dh, RotaryEmbedding(min(32, dh))))))
        self.time_rel_pos_bias = RelativePositionBias(heads=heads, max_distance=32, window_width=cfg.win_width)
        p = cfg.init_kernel_size // 2
        self.init_conv = nn.Conv3d(cfg.channels, dim, (1, cfg.init_kernel_size, cfg.init_kernel_size),
                                   padding=(0, p, p))
        self.init_temporal_attn = temporal(dim)
        dims = [dim, *(dim * m for m in cfg.dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        time_dim = dim * 4
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, time_dim), nn.GELU(),
                                      nn.Linear(time_dim, time_dim))
        block = lambda a, b: ResnetBlock(a, b, time_emb_dim=time_dim, audio_emb_dim=cfg.cond_aud,
                                         pose_emb_dim=cfg.cond_pose, eye_emb_dim=cfg.cond_eye,
                                         groups=cfg.resnet_groups)
        spatial = lambda d: Residual(PreNorm(d, SpatialLinearAttention(d, heads=heads)))
        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        for i, (a, b) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.downs.append(nn.ModuleList([block(a, b), block(b, b), spatial(b), temporal(b),
                                             nn.Conv3d(b, b, (1, 4, 4), (1, 2, 2), (0, 1, 1)) if not last
                                             else nn.Identity()]))
        mid = dims[-1]
        self.mid_block1 = block(mid, mid)
        self.mid_spatial_attn = Residual(PreNorm(mid, ToTokens("space", Attention(mid, heads=heads))))
        self.mid_temporal_attn = temporal(mid)
        self.mid_block2 = block(mid, mid)
        for i, (a, b) in enumerate(reversed(in_out)):
            last = i == len(in_out) - 1
            self.ups.append(nn.ModuleList([block(b * 2, a), block(a, a), spatial(a), temporal(a),
                                           nn.ConvTranspose3d(a, a, (1, 4, 4), (1, 2, 2), (0, 1, 1)) if not last
                                           else nn.Identity()]))
        plain = lambda a, b: ResnetBlock(a, b, groups=cfg.resnet_groups)
        self.final_conv = nn.Sequential(plain(dim * 2, dim), nn.Conv3d(dim, 2, 1))
        self.occlusion_map = nn.Sequential(plain(dim * 2, dim), nn.Conv3d(dim, 1, 1))

    def forward(self, x, time, cond):
        """x (B, 3+Cz+16, F, h, w); time (B,); cond (B, F, aud+pose+eye) -> noise (B, 3, F, h, w)."""
        bias = self.time_rel_pos_bias(x.shape[2], device=x.device)
        x = self.init_conv(x)
        r = x.clone()
        x = self.init_temporal_attn(x, pos_bias=bias)
        t = self.time_mlp(time)
        skips = []
        for block1, block2, spatial, temporal, down in self.downs:
            x = temporal(spatial(block2(block1(x, t, cond), t, cond)), pos_bias=bias)
            skips.append(x)
            x = down(x)
        x = self.mid_temporal_attn(self.mid_spatial_attn(self.mid_block1(x, t, cond)), pos_bias=bias)
        x = self.mid_block2(x, t, cond)
        for block1, block2, spatial, temporal, up in self.ups:
            x = torch.cat((x, skips.pop()), dim=1)
            x = up(temporal(spatial(block2(block1(x, t, cond), t, cond)), pos_bias=bias))
        x = torch.cat((x, r), dim=1)
        return torch.cat((self.final_conv[1](self.final_conv[0](x)),
                          self.occlusion_map[1](self.occlusion_map[0](x))), dim=1)


class FaceLocEncoder(nn.Module):
    """`Face_loc_Encoder`: the face box mask (B, 1, S, S) -> (B, 16, S/4, S/4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))))


def cosine_beta_schedule(timesteps: int, s: float = 0.008) -> torch.Tensor:
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    ac = torch.cos(((x / timesteps) + s) / (1 + s) * torch.pi * 0.5) ** 2
    ac = ac / ac[0]
    return torch.clip(1 - (ac[1:] / ac[:-1]), 0, 0.9999)


class GaussianDiffusion(nn.Module):
    """The schedule's buffers, named as in the released `["diffusion"]` dict, around `denoise_fn`."""

    def __init__(self, denoise_fn: Unet3D) -> None:
        super().__init__()
        self.denoise_fn = denoise_fn
        betas = cosine_beta_schedule(denoise_fn.config.timesteps)
        alphas = 1.0 - betas
        ac = torch.cumprod(alphas, 0)
        prev = F.pad(ac[:-1], (1, 0), value=1.0)
        post_var = betas * (1.0 - prev) / (1.0 - ac)
        for name, val in dict(
                betas=betas, alphas_cumprod=ac, alphas_cumprod_prev=prev, sqrt_alphas_cumprod=ac.sqrt(),
                sqrt_one_minus_alphas_cumprod=(1 - ac).sqrt(), log_one_minus_alphas_cumprod=(1 - ac).log(),
                sqrt_recip_alphas_cumprod=(1 / ac).sqrt(), sqrt_recipm1_alphas_cumprod=(1 / ac - 1).sqrt(),
                posterior_variance=post_var, posterior_log_variance_clipped=post_var.clamp(min=1e-20).log(),
                posterior_mean_coef1=betas * prev.sqrt() / (1 - ac),
                posterior_mean_coef2=(1 - prev) * alphas.sqrt() / (1 - ac)).items():
            self.register_buffer(name, val.to(torch.float32))


class DawnA2V(nn.Module):
    """The released A2V-FDM: `diffusion` (loads `DAWN_*.pth["diffusion"]`) and the face box encoder.

    The released training script saves only `diffusion`; its `face_loc_emb` is not in the files, so
    the released inference runs it with fresh random weights. `load_official` seeds it the same way
    each run (`face_seed`) and says so."""

    def __init__(self, config: Unet3DConfig = Unet3DConfig()) -> None:
        super().__init__()
        self.config = config
        self.diffusion = GaussianDiffusion(Unet3D(config))
        self.face_loc_emb = FaceLocEncoder()

    @property
    def unet(self) -> Unet3D:
        return self.diffusion.denoise_fn

    def config_dict(self) -> dict:
        return asdict(self.config)

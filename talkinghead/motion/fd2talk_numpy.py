"""FD2Talk's motion transformer (`fd2talk.py`) for inference in numpy, without torch.

FD2Talk (Yao et al. 2024, `../shared/papers/fd2talk.txt`, Sec. 3.2): a diffusion transformer
denoises a whole motion sequence x_t and predicts x_0; the diffusion step and the audio
condition every block, the audio through cross-attention under the alignment mask |i - j| <= k.
This is the same network as `fd2talk.MotionDiT` (RoPE local self-attention, banded audio
cross-attention, adaLN-Zero DiT blocks with tanh GELU, step / style / blink-rate conditions,
mean/std normalisation), evaluated in float32 numpy from the same model.safetensors and
config.json: importing torch is 1.2-1.3 CPU s, about half of `generate`'s path to its first
frame (issue #12). The torch module stays for training and as the reference this one is
tested against.

Inference-only rearrangements (the same function to float32 rounding): each attention's q, k, v
projections are one product with 1/sqrt(d_head) folded into q; the cross-attention keys and
values of all blocks, and the adaLN modulations of all blocks, are one product each per step;
the audio half of tau's first layer is computed once per sampling call; RoPE tables and the band
masks are cached per length.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkinghead.diffusion.numpy_samplers import SAMPLERS
from talkinghead.diffusion.schedule import cosine_alphas_cumprod
from talkinghead.diffusion.torch_rng import TorchGenerator
from talkinghead.errors import InputError
from talkinghead.nets.np_ops import Linear, layer_norm, silu

_F32 = np.float32
_NEG = np.finfo(np.float32).min / 2     # masked score: exp() gives 0, a row of them stays finite


@dataclass
class DiTConfig:
    channels: int = 20          # motion channels (expression 20 or pose 3)
    audio_dim: int = 512
    dim: int = 128
    depth: int = 4
    heads: int = 4
    window: int = 25            # self-attention reaches +- 1 s
    align_k: int = 3            # FD2Talk's alignment mask
    num_styles: int = 0         # > 0: style-id embedding (pose model)
    blink_rate: bool = False    # condition on a blink-rate scalar (expression model)
    train_steps: int = 1000
    cond_dropout: float = 0.1   # global conditions dropped in training (so they are optional)

    @classmethod
    def debug(cls, **kw) -> DiTConfig:
        return cls(**{"dim": 16, "depth": 2, "heads": 2, **kw})


# --- layers ----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def rope_tables(t: int, d_head: int, heads: int, base: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin (T, heads * d_head) for positions 0..t-1, each pair's angle on both of its
    channels and repeated per head: RoPE (RoFormer, Su et al. 2021) on heads laid out side by
    side (q and k together: 2 x the model's heads)."""
    freqs = _F32(base) ** (-np.arange(0, d_head, 2, dtype=_F32) / _F32(d_head))         # (Dh/2,)
    angles = np.arange(t, dtype=_F32)[:, None] * freqs                                  # (T, Dh/2)
    cos = np.tile(np.repeat(np.cos(angles), 2, -1), heads)                              # (T, D)
    sin = np.tile(np.repeat(np.sin(angles), 2, -1), heads)
    return cos, sin


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate channel pairs (2i, 2i+1) of x (..., T, D) in place: x1 cos - x2 sin, x1 sin + x2 cos."""
    rot = np.empty_like(x)
    np.negative(x[..., 1::2], out=rot[..., 0::2])
    rot[..., 1::2] = x[..., 0::2]
    x *= cos
    rot *= sin
    x += rot
    return x


@functools.lru_cache(maxsize=32)
def _dense_mask(t: int, window: int) -> np.ndarray:
    """(T, T) additive: 0 where |i - j| <= window."""
    i = np.arange(t)
    return np.where(np.abs(i[:, None] - i[None]) <= window, _F32(0), _F32(_NEG))


@functools.lru_cache(maxsize=32)
def _block_mask(n_blocks: int, block: int, window: int, t: int) -> np.ndarray:
    """(N, block, span) additive mask of `band_attention`'s key blocks (span = block + 2 window)."""
    qi = np.arange(block)[:, None]
    kj = np.arange(block + 2 * window)[None] - window                                   # key offset
    key_pos = np.arange(n_blocks)[:, None, None] * block + kj                           # (N, 1, span)
    keep = (np.abs(qi - kj) <= window) & (key_pos >= 0) & (key_pos < t)                 # (N, blk, span)
    return np.where(keep, _F32(0), _F32(_NEG))


def _softmax_(s: np.ndarray) -> np.ndarray:
    s -= s.max(-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(-1, keepdims=True)
    return s


def _blocks(x: np.ndarray, n: int, size: int, hop: int) -> np.ndarray:
    """(B, H, L, Dh) -> (B, H, n, size, Dh) view of rows [i hop, i hop + size)."""
    s = x.strides
    return np.lib.stride_tricks.as_strided(x, (*x.shape[:2], n, size, x.shape[3]),
                                           (s[0], s[1], hop * s[2], s[2], s[3]), writeable=False)


def band_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, window: int) -> np.ndarray:
    """softmax(q k^T + band mask) v with query i seeing keys |i - j| <= window; q, k, v
    (B, H, T, Dh), q already scaled. Short sequences in one product; longer ones in blocks of
    queries against their block's keys +- window (memory O(T (block + 2 window)), as
    `layers.local_attention`), so cost is linear in T. Blocks of 24 queries for a wide window,
    8 for a narrow one (one thread, T = 200 and 750, window 25: 24 and 32 fastest, 16 1.7x
    slower; window 3: 4-16 within the noise, 32 1.3x slower)."""
    b, h, t, dh = q.shape
    block = 24 if window > 8 else 8
    if t <= 2 * block:
        s = q @ k.swapaxes(-1, -2)                                                      # (B,H,T,T)
        s += _dense_mask(t, window)
        return _softmax_(s) @ v                                                         # (B,H,T,Dh)
    n = -(-t // block)
    span = block + 2 * window
    qp = np.zeros((b, h, n * block, dh), _F32)
    qp[:, :, :t] = q
    kp = np.zeros((b, h, n * block + 2 * window, dh), _F32)
    kp[:, :, window:window + t] = k
    vp = np.zeros_like(kp)
    vp[:, :, window:window + t] = v
    s = qp.reshape(b, h, n, block, dh) @ _blocks(kp, n, span, block).swapaxes(-1, -2)   # (B,H,N,blk,span)
    s += _block_mask(n, block, window, t)
    out = _softmax_(s) @ _blocks(vp, n, span, block)                                    # (B,H,N,blk,Dh)
    return out.reshape(b, h, n * block, dh)[:, :, :t]


def _heads(x: np.ndarray, heads: int) -> np.ndarray:
    b, t, d = x.shape
    return x.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)                     # (B,H,T,Dh)


def _merge(y: np.ndarray) -> np.ndarray:
    b, h, t, dh = y.shape
    return np.ascontiguousarray(y.transpose(0, 2, 1, 3)).reshape(b, t, h * dh)         # (B,T,D)


def gelu_tanh_(x: np.ndarray, rows: int = 64) -> np.ndarray:
    """tanh GELU in place, as x sigmoid(2 z), z = sqrt(2/pi) (x + 0.044715 x^3) (the form of
    `layers.TanhGELU`; equal to 0.5 x (1 + tanh z)), `rows` rows at a time so that the passes
    stay in cache (750 x 512: a whole forward 9 % faster than one pass over everything)."""
    c = math.sqrt(2 / math.pi)
    flat = x.reshape(-1, x.shape[-1])                                                   # (B T, F)
    buf = np.empty((min(rows, len(flat)), x.shape[-1]), _F32)
    for i in range(0, len(flat), rows):
        xb = flat[i:i + rows]
        y = buf[:len(xb)]
        np.multiply(xb, xb, out=y)
        y *= _F32(-2 * 0.044715 * c)
        y -= _F32(2 * c)
        y *= xb                                                                         # -2 z
        with np.errstate(over="ignore"):    # exp(-2 z) = inf for x << 0: x / inf = -0, the limit
            np.exp(y, out=y)
        y += _F32(1)
        np.divide(xb, y, out=xb)
    return x


def timestep_embedding(t: np.ndarray, dim: int, max_period: float = 10000.0) -> np.ndarray:
    """(B,) diffusion steps -> (B, dim) sinusoidal embedding (DDPM), as `layers.timestep_embedding`."""
    half = dim // 2
    freqs = np.exp(_F32(-math.log(max_period)) * (np.arange(half, dtype=_F32) / _F32(half)))
    args = np.asarray(t, _F32)[:, None] * freqs[None]
    return np.concatenate([np.cos(args), np.sin(args)], -1)


# --- the model -------------------------------------------------------------------------------

class _Block:
    """One adaLN-Zero DiT block's weights, from `layers.DiTBlock`'s state dict."""

    def __init__(self, w: dict[str, np.ndarray], p: str, heads: int, d: int) -> None:
        scale = _F32(1 / math.sqrt(d // heads))
        qkv_w = np.concatenate([w[p + "attn.q.weight"] * scale, w[p + "attn.kv.weight"]])  # (3D, D)
        qkv_b = np.concatenate([w[p + "attn.q.bias"] * scale, w[p + "attn.kv.bias"]])
        self.qkv = Linear(qkv_w, qkv_b)
        self.attn_out = Linear.from_state(w, p + "attn.out")
        self.cross_q = Linear(w[p + "cross.q.weight"] * scale, w[p + "cross.q.bias"] * scale)
        self.cross_out = Linear.from_state(w, p + "cross.out")
        self.norm2 = (w[p + "norm2.weight"], w[p + "norm2.bias"])
        self.mlp_in = Linear.from_state(w, p + "mlp.0")
        self.mlp_out = Linear.from_state(w, p + "mlp.3")


class _Recorded(dict):
    """A state dict that records which keys were read."""

    def __init__(self, *a) -> None:
        super().__init__(*a)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> np.ndarray:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default=None):
        if key in self:
            return self[key]
        return default


class NumpyMotionDiT:
    """x_t (B, T, C) + step + audio (B, T, A) -> x_0 estimate (B, T, C), in normalised units;
    `sample` returns motion in data units. Loaded by `from_checkpoint` or from a state dict."""

    def __init__(self, config: DiTConfig, state: dict[str, np.ndarray], feature: str = "whisper") -> None:
        self.config, self.feature = config, feature
        weights = _Recorded({k: np.asarray(v, _F32) for k, v in state.items()})
        try:
            self._load(config, weights)
        except KeyError as e:
            raise InputError(f"weights do not match the config (no {e.args[0]})") from None
        unused = sorted(set(weights) - weights.read)
        if unused:   # strict, as the torch module's load_state_dict
            raise InputError(f"weights do not match the config (unexpected {unused[0]})")

    def _load(self, c: DiTConfig, w: dict[str, np.ndarray]) -> None:
        self.inp, self.out = Linear.from_state(w, "inp"), Linear.from_state(w, "out")
        self.t_embed = (Linear.from_state(w, "t_embed.0"), Linear.from_state(w, "t_embed.2"))
        tau_w = w["tau.0.weight"]                                                       # (D, A + D)
        self.tau_audio = Linear(tau_w[:, :c.audio_dim], w["tau.0.bias"])
        self.tau_cond = Linear(tau_w[:, c.audio_dim:])
        self.tau_out = Linear.from_state(w, "tau.2")
        self.style = w["style.weight"] if c.num_styles else None                         # (S + 1, D)
        self.rate = Linear.from_state(w, "rate") if c.blink_rate else None
        blocks = [f"blocks.{i}." for i in range(c.depth)]
        self.blocks = [_Block(w, p, c.heads, c.dim) for p in blocks]
        # every block's modulation, and every block's cross-attention keys/values, in one product
        self.modulation = Linear(np.concatenate([w[p + "modulation.weight"] for p in blocks]),
                                 np.concatenate([w[p + "modulation.bias"] for p in blocks]))
        self.cross_kv = Linear(np.concatenate([w[p + "cross.kv.weight"] for p in blocks]),
                               np.concatenate([w[p + "cross.kv.bias"] for p in blocks]))
        self.norm = (w["norm.weight"], w["norm.bias"])
        self.mean, self.std = w["mean"], w["std"]

    @classmethod
    def from_checkpoint(cls, directory: str | Path) -> NumpyMotionDiT:
        """An FD2Talk checkpoint folder (config.json + model.safetensors), without torch."""
        from talkinghead.io.checkpoint import config_from, load_arrays, read_config

        fields = read_config(directory)["config"]
        if fields.get("model") not in ("fd2talk_expression", "fd2talk_pose"):
            raise InputError(f"{directory}: not an FD2Talk motion model ({fields.get('model')!r})")
        try:
            return cls(config_from(DiTConfig, fields), load_arrays(directory), fields.get("feature", "whisper"))
        except InputError as e:
            raise InputError(f"{directory}: {e}") from None

    # conditions
    def condition(self, t: np.ndarray, style: np.ndarray | None = None,
                  blink_rate: np.ndarray | None = None) -> np.ndarray:
        """(B, D) global condition: step embedding (+ style, + blink rate; NaN rate = none)."""
        first, second = self.t_embed
        cond = second(silu(first(timestep_embedding(t, self.config.dim))))
        if self.style is not None:
            idx = np.full(len(t), self.config.num_styles) if style is None else np.asarray(style)
            cond = cond + self.style[idx]
        if self.rate is not None and blink_rate is not None:
            rate = np.asarray(blink_rate, _F32)
            given = ~np.isnan(rate)
            cond = cond + self.rate(np.nan_to_num(rate)[:, None]) * given[:, None]
        return cond

    def audio_part(self, audio: np.ndarray) -> np.ndarray:
        """tau's first layer on the audio alone (B, T, D), bias included: the same every step."""
        return self.tau_audio(np.asarray(audio, _F32))

    # the network
    def __call__(self, x: np.ndarray, t: np.ndarray, audio: np.ndarray, style: np.ndarray | None = None,
                 blink_rate: np.ndarray | None = None) -> np.ndarray:
        return self.denoise(x, self.audio_part(audio), self.condition(t, style, blink_rate))

    def denoise(self, x: np.ndarray, audio_part: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """Noisy motion (B, T, C) under `cond` (B, D), audio as `audio_part` -> x0 (B, T, C)."""
        c = self.config
        b, t, _ = x.shape
        tau = audio_part + self.tau_cond(cond)[:, None]                                 # (B, T, D)
        tau = self.tau_out(silu(tau))
        kv = self.cross_kv(tau)                                                         # (B, T, depth 2D)
        mods = self.modulation(silu(cond))[:, None]                                     # (B, 1, depth 6D)
        cos2, sin2 = rope_tables(t, c.dim // c.heads, 2 * c.heads)                     # (T, 2D): q | k
        h = self.inp(np.asarray(x, _F32))                                               # (B, T, D)
        for i, blk in enumerate(self.blocks):
            s1, g1, a1, s2, g2, a2 = np.split(mods[..., 6 * c.dim * i:6 * c.dim * (i + 1)], 6, -1)
            h = self._block(blk, h, kv[..., 2 * c.dim * i:2 * c.dim * (i + 1)], (s1, g1, a1, s2, g2, a2),
                            cos2, sin2)
        return self.out(layer_norm(h, *self.norm))                                      # (B, T, C)

    def _block(self, blk: _Block, h: np.ndarray, kv: np.ndarray, mod: tuple, cos2: np.ndarray,
               sin2: np.ndarray) -> np.ndarray:
        c = self.config
        d, heads = c.dim, c.heads
        s1, g1, a1, s2, g2, a2 = mod
        # self-attention (local, RoPE), adaLN-modulated
        x = layer_norm(h)
        x *= g1 + _F32(1)
        x += s1
        qkv = blk.qkv(x)                                                                # (B, T, 3D)
        rope(qkv[..., :2 * d], cos2, sin2)
        y = band_attention(_heads(qkv[..., :d], heads), _heads(qkv[..., d:2 * d], heads),
                           _heads(qkv[..., 2 * d:], heads), c.window)
        y = blk.attn_out(_merge(y))
        y *= a1
        h = h + y
        # audio cross-attention under the alignment mask
        q = blk.cross_q(layer_norm(h, *blk.norm2))
        y = band_attention(_heads(q, heads), _heads(kv[..., :d], heads), _heads(kv[..., d:], heads), c.align_k)
        h += blk.cross_out(_merge(y))
        # MLP, adaLN-modulated
        x = layer_norm(h)
        x *= g2 + _F32(1)
        x += s2
        y = blk.mlp_out(gelu_tanh_(blk.mlp_in(x)))
        y *= a2
        h += y
        return h

    # sampling
    def normalise(self, motion: np.ndarray) -> np.ndarray:
        return (motion - self.mean) / self.std

    def denormalise(self, x: np.ndarray) -> np.ndarray:
        return x * self.std + self.mean

    def sample_from(self, audio: np.ndarray, noise: np.ndarray, steps: int = 10, sampler: str = "ddim",
                    style: np.ndarray | None = None, blink_rate: np.ndarray | None = None) -> np.ndarray:
        """audio (B or 1, T, A), initial noise (B, T, C) -> x0 (B, T, C), normalised."""
        part = self.audio_part(audio)                                                   # (B|1, T, D)
        part = np.broadcast_to(part, (len(noise), *part.shape[1:]))

        def denoise(x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
            return self.denoise(x_t, part, self.condition(t, style, blink_rate))

        return SAMPLERS[sampler](denoise, noise, cosine_alphas_cumprod(self.config.train_steps), steps)

    def sample(self, audio: np.ndarray, steps: int = 10, generator: TorchGenerator | None = None,
               style: np.ndarray | None = None, blink_rate: np.ndarray | None = None,
               sampler: str = "ddim") -> np.ndarray:
        """audio (B, T, A) -> motion (B, T, C) in data units, by few-step sampling; the noise is
        torch's `randn` draw from a generator of the same seed (`TorchGenerator`)."""
        generator = generator or TorchGenerator(int(np.random.randint(2 ** 31)))
        noise = generator.randn(audio.shape[0], audio.shape[1], self.config.channels)
        return self.denormalise(self.sample_from(audio, noise, steps, sampler, style, blink_rate))

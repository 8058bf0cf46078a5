"""The released A2V-FDM denoiser (`unet3d.Unet3D`) run in time and memory linear in the clip's length
(dawn.txt Sec. 3.6: one non-autoregressive pass over the whole clip).

The released forward holds T x T temporal attention scores per latent position (quadratic) and
the source latent repeated over all frames. Here the same weights run layer by layer over the
whole clip, each layer in chunks of `chunk` frames:

* per-frame layers (3x3 convolutions, cross-attention, spatial attention, down/up-sampling) chunk
  trivially; the source latent's part of the first convolution is computed once, not per frame;
* temporal attention: a chunk of queries attends to the keys within +-win_width frames, the only
  ones the released mask (-1e8 outside the window) leaves a non-zero weight;
* GroupNorm normalises over frames as well as channels and space: its statistics are summed over
  all chunks (float64) before any frame is normalised, so nothing changes with the chunk size;
* dynamic thresholding takes the 0.9 quantile of |x0| over the whole clip, as released.

So the output equals the released single pass (float rounding aside) for every chunk size, while
the largest intermediate is O(chunk x (chunk + 2 win_width)) attention scores. The activations of
the whole clip (a few times the top level's B x 64 x T x h x w floats) are what grows with T;
`spill_dir` keeps them in memory-mapped files instead of RAM.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile

import torch
import torch.nn.functional as F

from talkinghead.render.dawn.unet3d import Block, ResnetBlock, Unet3D


CPU_GROUP_BYTES = 4 << 20   # largest temporary of one temporal-attention call on CPU (see LinearRunner.group)


class Store:
    """Allocates whole-clip activations: in RAM, or memory-mapped files under `spill_dir` (CPU)."""

    def __init__(self, spill_dir: str | None = None) -> None:
        self.dir = spill_dir
        self._count = itertools.count()

    def empty(self, shape, like: torch.Tensor) -> torch.Tensor:
        if self.dir is None or like.device.type != "cpu":
            return torch.empty(shape, dtype=like.dtype, device=like.device)
        fd, path = tempfile.mkstemp(prefix=f"a2v{next(self._count)}_", dir=self.dir)
        os.close(fd)
        n = math.prod(shape)
        t = torch.from_file(path, shared=True, size=n, dtype=like.dtype).view(shape)
        os.unlink(path)                       # the mapping keeps the pages until the tensor dies
        return t


def activation_bytes(frames: int, latent: int, dim: int = 64) -> int:
    """Rough whole-clip activation size of one denoiser pass: about six top-level tensors
    (B=1, dim channels, latent x latent) are alive at the peak (measured 25.3 GiB on CUDA for 5000
    frames at 256 (25,907 MiB), where this gives 29 GiB)."""
    return 6 * frames * dim * latent * latent * 4


def auto_spill_dir(frames: int, latent: int, device: torch.device) -> str | None:
    """A temporary folder for memory-mapped activations when a CPU clip's activations would take
    more than half of the available memory, else None (RAM)."""
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(x.split()[1]) * 1024 for x in f if x.startswith("MemAvailable"))
    except (OSError, StopIteration):
        return None
    return tempfile.gettempdir() if activation_bytes(frames, latent) > avail // 2 else None


def _slice(src, a: int, b: int) -> torch.Tensor:
    """Frames a:b of a (B, C, F, H, W) tensor, or of a tuple of them concatenated on channels."""
    if isinstance(src, tuple):
        return torch.cat([t[:, :, a:b] for t in src], 1)
    return src[:, :, a:b]


def _frames(src) -> int:
    return (src[0] if isinstance(src, tuple) else src).shape[2]


def _ref(src) -> torch.Tensor:
    return src[0] if isinstance(src, tuple) else src


class LinearRunner:
    def __init__(self, unet: Unet3D, chunk: int = 32, spill_dir: str | None = None, positions: int = 1024) -> None:
        self.unet, self.chunk, self.store, self.positions = unet, chunk, Store(spill_dir), positions

    def spans(self, n: int):
        return ((a, min(n, a + self.chunk)) for a in range(0, n, self.chunk))

    def per_frame(self, fn, src) -> torch.Tensor:
        """fn(chunk (B, C, n, H, W), a, b) -> (B, C', n, H', W') over the clip, into one tensor."""
        n, out = _frames(src), None
        for a, b in self.spans(n):
            y = fn(_slice(src, a, b), a, b)
            if out is None:
                out = self.store.empty((y.shape[0], y.shape[1], n, *y.shape[3:]), _ref(src))
            out[:, :, a:b] = y
        return out

    def group_norm_(self, y: torch.Tensor, gn: torch.nn.GroupNorm, scale_shift=None) -> torch.Tensor:
        """GroupNorm over (channels of a group, all frames, H, W), then the block's scale/shift and
        SiLU, in place, chunk by chunk."""
        b, c = y.shape[:2]
        g = gn.num_groups
        s = torch.zeros(b, g, dtype=torch.float64, device=y.device)
        ss = torch.zeros_like(s)
        for a, e in self.spans(y.shape[2]):
            part = y[:, :, a:e].reshape(b, g, -1).double()
            s += part.sum(-1)
            ss += (part * part).sum(-1)
        count = y[0, 0].numel() * (c // g)
        mean = s / count
        inv = ((ss / count - mean * mean).clamp(min=0) + gn.eps).rsqrt()
        mean, inv = (t.to(y.dtype).repeat_interleave(c // g, 1)[:, :, None, None, None] for t in (mean, inv))
        w, bias = gn.weight[None, :, None, None, None], gn.bias[None, :, None, None, None]
        for a, e in self.spans(y.shape[2]):
            part = (y[:, :, a:e] - mean) * inv * w + bias
            if scale_shift is not None:
                part = part * (scale_shift[0] + 1) + scale_shift[1]
            y[:, :, a:e] = F.silu(part)
        return y

    def block(self, blk: Block, src, scale_shift=None) -> torch.Tensor:
        return self.group_norm_(self.per_frame(lambda x, a, b: blk.proj(x), src), blk.norm, scale_shift)

    def resnet(self, blk: ResnetBlock, src, t, cond) -> torch.Tensor:
        h = self.block(blk.block1, src, blk.time_scale_shift(t))
        if blk.audio_mlp is not None:
            for a, b in self.spans(h.shape[2]):
                h[:, :, a:b] += blk.cond_term(_slice(src, a, b), cond[:, a:b])
        h = self.block(blk.block2, h)
        for a, b in self.spans(h.shape[2]):
            h[:, :, a:b] += blk.res_conv(_slice(src, a, b))
        return h

    def group(self, x: torch.Tensor, attn, nq: int, nk: int) -> int:
        """Latent positions per attention call: `positions`, and on CPU few enough that the call's
        largest temporaries (keys, values, scores: about nk x max(inner, heads x nq) floats per
        position) stay under CPU_GROUP_BYTES. Larger blocks are above glibc's mmap threshold (at
        most 32 MiB): each is mapped and unmapped per call, and its page faults cost more than the
        arithmetic (128 px, 1,000 frames, 1,024 positions: 169 of 467 CPU s in the kernel)."""
        if x.device.type != "cpu":
            return self.positions
        per = nk * max(attn.to_qkv.weight.shape[0] // 3, attn.heads * nq, x.shape[1]) * x.element_size()
        return max(1, min(self.positions, CPU_GROUP_BYTES // per))

    def temporal(self, residual, x: torch.Tensor) -> torch.Tensor:
        """Residual(PreNorm(temporal Attention)) with banded keys."""
        norm, attn = residual.fn.norm, residual.fn.fn.fn
        bias_mod = self.unet.time_rel_pos_bias
        w = bias_mod.window_width
        bsz, c, n, hh, ww = x.shape
        out = self.store.empty(x.shape, x)
        for a, b in self.spans(n):
            ka, kb = max(0, a - w), min(n, b + w)
            tok = norm(x[:, :, ka:kb]).permute(0, 3, 4, 2, 1).reshape(bsz, hh * ww, kb - ka, c)   # (B, HW, nk, C)
            q_pos = torch.arange(a, b, device=x.device)
            k_pos = torch.arange(ka, kb, device=x.device)
            bias = bias_mod.between(q_pos, k_pos)
            res = torch.empty(bsz, hh * ww, b - a, c, dtype=x.dtype, device=x.device)
            step = self.group(x, attn, b - a, kb - ka)
            for p in range(0, hh * ww, step):
                kv = tok[:, p:p + step]
                res[:, p:p + step] = attn.attend(kv[:, :, a - ka:b - ka], kv, q_pos, k_pos, bias)
            out[:, :, a:b] = x[:, :, a:b] + res.reshape(bsz, hh, ww, b - a, c).permute(0, 4, 3, 1, 2)
        return out

    def init_conv(self, noisy: torch.Tensor, fea: torch.Tensor) -> torch.Tensor:
        """The first convolution of cat([noisy, fea repeated over frames]): fea's share once."""
        conv = self.unet.init_conv
        k = noisy.shape[1]
        const = F.conv2d(fea, conv.weight[:, k:, 0], conv.bias, padding=conv.padding[1:])   # (B, C, h, w)
        wx = conv.weight[:, :k]
        return self.per_frame(lambda x, a, b: F.conv3d(x, wx, None, padding=conv.padding) + const[:, :, None], noisy)

    def __call__(self, noisy: torch.Tensor, fea: torch.Tensor, time: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """noisy (B, 3, F, h, w); fea (B, Cz+16, h, w) (not repeated); time (B,); cond (B, F, D)
        -> the predicted noise (B, 3, F, h, w)."""
        u = self.unet
        r = self.init_conv(noisy, fea)
        x = self.temporal(u.init_temporal_attn, r)
        t = u.time_mlp(time)
        frame = lambda mod: (lambda z, a, b: mod(z))
        skips = []
        for block1, block2, spatial, temporal, down in u.downs:
            x = self.resnet(block2, self.resnet(block1, x, t, cond), t, cond)
            x = self.temporal(temporal, self.per_frame(frame(spatial), x))
            skips.append(x)
            x = self.per_frame(frame(down), x)
        x = self.resnet(u.mid_block1, x, t, cond)
        x = self.temporal(u.mid_temporal_attn, self.per_frame(frame(u.mid_spatial_attn), x))
        x = self.resnet(u.mid_block2, x, t, cond)
        for block1, block2, spatial, temporal, up in u.ups:
            x = self.resnet(block2, self.resnet(block1, (x, skips.pop()), t, cond), t, cond)
            x = self.per_frame(frame(up), self.temporal(temporal, self.per_frame(frame(spatial), x)))
        heads = []
        for head in (u.final_conv, u.occlusion_map):
            h = self.resnet(head[0], (x, r), None, None)
            heads.append(self.per_frame(frame(head[1]), h))
            del h
        return torch.cat(heads, 1)


def clip_quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """torch.quantile(x, q, dim=-1) (linear interpolation) for rows of any length (B, N)."""
    n = x.shape[-1]
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    v_lo = x.kthvalue(lo + 1, dim=-1).values
    v_hi = x.kthvalue(hi + 1, dim=-1).values if hi != lo else v_lo
    return torch.lerp(v_lo, v_hi, torch.full_like(v_lo, pos - lo))


def _predictions(diffusion, out: torch.Tensor, img: torch.Tensor, time: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, noise) at step `time` from the denoiser's output: the released noise prediction (x0 from
    it, then dynamic thresholding), or, for `objective="pred_x0"`, the clean latents (thresholded;
    the noise derived from them, as lucidrains' `model_predictions`)."""
    cfg, b = diffusion.denoise_fn.config, img.shape[0]
    rec, recm1 = diffusion.sqrt_recip_alphas_cumprod[time], diffusion.sqrt_recipm1_alphas_cumprod[time]
    if cfg.objective not in ("pred_noise", "pred_x0"):
        raise ValueError(f"objective {cfg.objective!r}: pred_noise or pred_x0")
    x0 = rec * img - recm1 * out if cfg.objective == "pred_noise" else out
    s = clip_quantile(x0.reshape(b, -1).abs(), cfg.dynamic_thres_percentile).clamp(min=1.0).view(b, 1, 1, 1, 1)
    x0 = x0.clamp(-s, s) / s
    return x0, (out if cfg.objective == "pred_noise" else (rec * img - x0) / recm1)


@torch.no_grad()
def sample_linear(diffusion, fea: torch.Tensor, cond: torch.Tensor, chunk: int = 32,
                  generator: torch.Generator | None = None, spill_dir: str | None = None,
                  steps: int | None = None, progress=None) -> torch.Tensor:
    """The released DDIM sampler (`ddim_sample`, eta and dynamic thresholding as configured; the
    denoiser's objective from its config) over `LinearRunner`. fea (B, Cz+16, h, w); cond (B, F, D)
    -> motion latents (B, 3, F, h, w).
    With generator=None the noise comes from torch's global generator in the released order.
    spill_dir: a folder for memory-mapped activations, "auto" (`auto_spill_dir`) or None (RAM)."""
    unet: Unet3D = diffusion.denoise_fn
    cfg = unet.config
    steps = steps or cfg.sampling_timesteps
    b, n = cond.shape[:2]
    shape = (b, 3, n, fea.shape[-2], fea.shape[-1])
    dev = fea.device
    randn = lambda: torch.randn(shape, generator=generator, device="cpu" if generator else dev).to(dev)
    if spill_dir == "auto":
        spill_dir = auto_spill_dir(n, fea.shape[-1], dev)
    run = LinearRunner(unet, chunk, spill_dir)
    times = list(reversed(torch.linspace(0.0, cfg.timesteps, steps=steps + 2)[:-1].int().tolist()))
    img = randn()
    for i, (time, nxt) in enumerate(zip(times[:-1], times[1:])):
        alpha, alpha_next = diffusion.alphas_cumprod_prev[time], diffusion.alphas_cumprod_prev[nxt]
        tc = torch.full((b,), time, device=dev, dtype=torch.long)
        x0, pred_noise = _predictions(diffusion, run(img, fea, tc, cond), img, time)
        sigma = cfg.ddim_eta * ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
        c = ((1 - alpha_next) - sigma ** 2).sqrt()
        noise = randn() if nxt > 0 else 0.0
        img = x0 * alpha_next.sqrt() + c * pred_noise + sigma * noise
        if progress is not None:
            progress(i + 1, len(times) - 1)
    return img

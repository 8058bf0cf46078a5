"""Transformer layers in plain numpy, for inference without importing torch.

torch's import is 1.2-1.3 CPU s, about half of a `generate` process's path to its first frame
(issue #12); the models on that path (the Whisper encoder, FD2Talk's transformers) only need
these few float32 operations at inference. Weights come from the same safetensors state dicts
as the torch modules (`safetensors.numpy`), under the same key names; tests hold each numpy
model to its torch module.
"""

from __future__ import annotations

import numpy as np

_ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807,
         -1.13520398, 1.48851587, -0.82215223, 0.17087277)
# Abramowitz & Stegun 7.1.26: erfc(z) = t (a1 + t (a2 + ... + t a5)) exp(-z^2), t = 1 / (1 + p z),
# z >= 0, absolute error < 1.5e-7
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
_BLOCK = 32768  # elements per pass of the blocked element-wise functions (their buffers stay in cache)


class Linear:
    """y = x W^T + b with W (out, in) as stored; kept transposed and contiguous for the product."""

    __slots__ = ("w_t", "b")

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
        self.w_t = np.ascontiguousarray(np.asarray(weight, np.float32).T)              # (in, out)
        self.b = None if bias is None else np.asarray(bias, np.float32)

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], prefix: str) -> Linear:
        """`prefix`.weight and, when present, `prefix`.bias."""
        return cls(state[prefix + ".weight"], state.get(prefix + ".bias"))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.w_t
        if self.b is not None:
            y += self.b
        return y


def layer_norm(x: np.ndarray, weight: np.ndarray | None = None, bias: np.ndarray | None = None,
               eps: float = 1e-5) -> np.ndarray:
    """LayerNorm over the last axis (biased variance, as torch)."""
    y = x - x.mean(-1, keepdims=True)
    var = np.einsum("...i,...i->...", y, y)[..., None]            # row sums of squares, no temporary
    var *= np.float32(1 / x.shape[-1])
    var += np.float32(eps)
    y *= 1 / np.sqrt(var)
    if weight is not None:
        y *= weight
    if bias is not None:
        y += bias
    return y


def erfc(x: np.ndarray) -> np.ndarray:
    """Complementary error function (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7),
    computed in float64 and returned as x's dtype (numpy has no erf)."""
    z = np.abs(x.astype(np.float64))
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.full_like(t, _ERFC[-1])
    for c in _ERFC[-2::-1]:
        poly *= t
        poly += c
    r = t * np.exp(poly - z * z)
    return np.where(x >= 0, r, 2.0 - r).astype(x.dtype)


def gelu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Exact GELU, x Phi(x) = x erfc(-x / sqrt 2) / 2 (torch's default `gelu`); `out` may be x.

    float32 input: x / 2 + |x| (1 - erfc(|x| / sqrt 2)) / 2 with A&S 7.1.26's erfc, in float32,
    over blocks that stay in cache (5 ms per million values, 9x the float64 form; within 5e-7 of
    torch's, which is itself 3.5e-7 from the exact value). Other dtypes: the float64 `erfc`."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        y = x * erfc(x * (-1 / np.sqrt(2))) * 0.5
        if out is None:
            return y
        out[...] = y
        return out
    y = np.empty_like(x) if out is None else out
    fx, fy = x.reshape(-1), y.reshape(-1)                       # views: x and y are contiguous
    b = min(_BLOCK, fx.size)
    a, t, e = (np.empty(b, np.float32) for _ in range(3))
    coef = [np.float32(0.5 * c) for c in _AS_A]
    inv_p = np.float32(np.sqrt(2) / _AS_P)                      # 1 / (1 + p z) = inv_p / (inv_p + |x|)
    half = np.float32(0.5)
    for lo in range(0, fx.size, b):
        xs, ys = fx[lo:lo + b], fy[lo:lo + b]
        k = len(xs)
        a_, t_, e_ = a[:k], t[:k], e[:k]
        np.abs(xs, out=a_)                                      # |x|; z = |x| / sqrt 2
        np.add(a_, inv_p, out=t_)
        np.divide(inv_p, t_, out=t_)                            # t = 1 / (1 + p z)
        np.multiply(t_, coef[4], out=e_)
        for c in coef[3::-1]:                                   # Horner: t (a1 + t (a2 + ...)) / 2
            e_ += c
            e_ *= t_
        np.multiply(a_, a_, out=t_)
        t_ *= np.float32(-0.5)
        np.exp(t_, out=t_)                                      # exp(-z^2)
        e_ *= t_                                                # q = erfc(z) / 2
        np.subtract(half, e_, out=e_)
        e_ *= a_
        np.multiply(xs, half, out=ys)
        ys += e_                                # x / 2 + |x| (1/2 - q): np.maximum is 4x slower
    return y


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU's tanh form, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    k = np.float32(np.sqrt(2 / np.pi))
    return np.float32(0.5) * x * (np.float32(1) + np.tanh(k * (x + np.float32(0.044715) * x * x * x)))


def silu(x: np.ndarray) -> np.ndarray:
    return x / (np.float32(1) + np.exp(-x))


def _exp_shifted(x: np.ndarray, axis: int) -> np.ndarray:
    """exp(x - max over `axis`), in place on x (a temporary of the caller's)."""
    x -= x.max(axis, keepdims=True)
    return np.exp(x, out=x)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = _exp_shifted(np.array(x, dtype=np.result_type(x, np.float32)), axis)
    e /= e.sum(axis, keepdims=True)
    return e


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None,
              scale: float | None = None) -> np.ndarray:
    """softmax(q k^T * scale + mask) v over the last two axes, scale 1/sqrt(d) by default;
    q (..., Tq, D), k and v (..., Tk, D); `mask` additive, broadcast to (..., Tq, Tk). The
    softmax's division comes after the product with v (Tq x D values, not Tq x Tk)."""
    scores = q @ np.swapaxes(k, -1, -2)                                       # (..., Tq, Tk)
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    if scale != 1:
        scores *= np.float32(scale)
    if mask is not None:
        if np.broadcast_shapes(scores.shape, np.shape(mask)) == scores.shape:
            scores += mask
        else:
            scores = scores + mask                                            # the mask widens it
    e = _exp_shifted(scores, -1)
    y = e @ v                                                                 # (..., Tq, D)
    y /= e.sum(-1, keepdims=True)
    return y

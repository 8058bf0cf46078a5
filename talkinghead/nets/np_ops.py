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
    mean = x.mean(-1, keepdims=True)
    d = x - mean
    y = d / np.sqrt((d * d).mean(-1, keepdims=True) + np.float32(eps))
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


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, x Phi(x) = x erfc(-x / sqrt 2) / 2 (torch's default `gelu`)."""
    return x * erfc(x * np.float32(-1 / np.sqrt(2))) * np.float32(0.5)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU's tanh form, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    k = np.float32(np.sqrt(2 / np.pi))
    return np.float32(0.5) * x * (np.float32(1) + np.tanh(k * (x + np.float32(0.044715) * x * x * x)))


def silu(x: np.ndarray) -> np.ndarray:
    return x / (np.float32(1) + np.exp(-x))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis, keepdims=True))
    e /= e.sum(axis, keepdims=True)
    return e


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """softmax(q k^T / sqrt(d) + mask) v over the last two axes; q (..., Tq, D), k and v
    (..., Tk, D); `mask` additive, broadcast to (..., Tq, Tk)."""
    scores = q @ np.swapaxes(k, -1, -2)
    scores *= np.float32(1 / np.sqrt(q.shape[-1]))
    if mask is not None:
        scores += mask
    return softmax(scores) @ v

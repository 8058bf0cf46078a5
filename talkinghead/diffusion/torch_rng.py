"""torch's CPU `torch.randn(shape, generator=torch.Generator().manual_seed(s))` in numpy.

The numpy sampling path (`motion/fd2talk_numpy.py`) draws the same initial noise as the torch
one, so a seed gives the same motion with or without torch. torch's CPU generator is a
32-bit Mersenne twister (mt19937) seeded like numpy's legacy `RandomState(seed)`; its normal
draws are Box-Muller over those 32-bit words, in two forms (ATen's `normal_fill` and
`normal_distribution<double>`):

* a float tensor of 16 values or more: every value first gets a float uniform
  u = (word & (2^24 - 1)) 2^-24; then each block of 16 becomes r cos(theta) (first 8) and
  r sin(theta) (last 8), r = sqrt(-2 log(1 - u[0:8])), theta = 2 pi u[8:16]; when the size is
  not a multiple of 16, 16 more uniforms are drawn and the last 16 values recomputed from them.
  torch evaluates log and sin/cos vectorised in float32; here they are float64 rounded to
  float32, so values agree to 1-2 ulp (5e-7), not bit for bit.
* fewer than 16 values: the double Box-Muller, one value per call. Each pair of values takes
  two 53-bit uniforms (two words each, the first word high); it returns r cos(theta) and keeps
  r sin(theta) in the generator for its next small draw (kept across calls, as torch's
  generator does), r = sqrt(-2 log1p(-u2)), theta = 2 pi u1.
"""

from __future__ import annotations

import numpy as np

_MASK24 = (1 << 24) - 1
_MASK53 = (1 << 53) - 1


class TorchGenerator:
    """A `torch.Generator().manual_seed(seed)` on CPU, for `randn` draws only."""

    def __init__(self, seed: int = 0) -> None:
        self._mt = np.random.RandomState(int(seed) & 0xFFFFFFFF)._bit_generator
        self._cached: float | None = None   # the double path's pending r sin(theta)

    def randn(self, *shape: int) -> np.ndarray:
        """float32 standard normal values of `shape`, as torch.randn(shape, generator=g)."""
        n = int(np.prod(shape, dtype=np.int64))
        values = self._floats(n) if n >= 16 else self._doubles(n)
        return values.reshape(shape)

    def _uniforms(self, n: int) -> np.ndarray:
        return (self._mt.random_raw(n) & _MASK24).astype(np.float32) * np.float32(2.0 ** -24)  # (n,)

    def _floats(self, n: int) -> np.ndarray:
        u = self._uniforms(n)
        out = np.empty(n, np.float32)
        full = n // 16 * 16
        out[:full] = _box_muller16(u[:full])
        if n % 16:
            out[n - 16:] = _box_muller16(self._uniforms(16))
        return out

    def _doubles(self, n: int) -> np.ndarray:
        out = np.empty(n, np.float32)
        for i in range(n):
            if self._cached is not None:
                out[i], self._cached = self._cached, None
                continue
            w = [int(x) for x in self._mt.random_raw(4)]
            u1 = (((w[0] << 32) | w[1]) & _MASK53) * 2.0 ** -53
            u2 = (((w[2] << 32) | w[3]) & _MASK53) * 2.0 ** -53
            r = np.sqrt(-2.0 * np.log1p(-u2))
            theta = 2.0 * np.pi * u1
            out[i], self._cached = r * np.cos(theta), r * np.sin(theta)
        return out


def _box_muller16(u: np.ndarray) -> np.ndarray:
    """(16 k,) float32 uniforms -> (16 k,) normals, torch's blocks of 8 cosines then 8 sines.
    Every step rounded to float32 where torch's is (log, the radius, theta, sin/cos, the
    product): 83 % of values equal torch's exactly, the rest within 5e-7 (16k draws, 3 seeds)."""
    u = u.reshape(-1, 2, 8)                                                           # (k, 2, 8)
    log = np.log((np.float32(1) - u[:, 0]).astype(np.float64)).astype(np.float32)
    r = np.sqrt((np.float32(-2) * log).astype(np.float64)).astype(np.float32)
    theta = (np.float32(2 * np.pi) * u[:, 1]).astype(np.float64)
    cos, sin = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
    return np.stack([r * cos, r * sin], 1).reshape(-1)                                # (16 k,)

"""Backward thin-plate-spline warp: destination control points -> source positions, on a grid.

A backward map is what image resampling needs (for every output pixel, where to read the
source), and defining the spline at the *destination* control points lets a closed mouth open:
coincident source points may go to separate destinations. The spline is solved per frame on a
few hundred points and evaluated on a coarse grid, then upsampled to pixels.
"""

from __future__ import annotations

import numpy as np


def _kernel(d2: np.ndarray) -> np.ndarray:
    """TPS radial basis U(r) = r^2 log r^2 given squared distances (three passes; `d2` is
    clamped in place to >= 1e-30, so U(0) is -7e-29, not 0: equal after float32 rounding).

    OpenCV's log (SIMD): 2.6x numpy's on the render's (1264, 252) float32 grid kernel, within
    1e-6 of it (float32; float64 within 2e-15). OpenCV's max clamps too: 3x numpy's maximum
    on that grid (0.055 vs 0.18 ms), the same values (#12)."""
    import cv2

    cv2.max(d2, 1e-30, dst=d2)
    k = cv2.log(d2)
    k *= d2
    return k


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) squared distances |a|^2 + |b|^2 - 2 a.b as one product of (., 4)
    matrices [a, |a|^2, 1] and [-2b, 1, |b|^2] (one pass over the result, was four; equal to
    the three-term sum on the render's inputs). May be slightly negative: `_kernel` clamps."""
    ea = np.empty((len(a), 4), a.dtype)
    ea[:, :2], ea[:, 2], ea[:, 3] = a, (a * a).sum(1), 1.0
    eb = np.empty((len(b), 4), a.dtype)
    eb[:, :2], eb[:, 2], eb[:, 3] = -2.0 * b, 1.0, (b * b).sum(1)
    return ea @ eb.T


def tps_backward(dest: np.ndarray, src: np.ndarray, grid: np.ndarray,
                 regularization: float = 1e-3) -> np.ndarray:
    """Source positions (G, 2) for grid points (G, 2), from control pairs dest (N, 2) -> src (N, 2).

    All coordinates in the same normalised units (about 0..1). `regularization` keeps nearly
    coincident destination points (lips pressed together) from blowing the spline up.
    """
    dest = dest.astype(np.float64)
    n = len(dest)
    lhs = np.zeros((n + 3, n + 3))                     # [[K + reg I, P], [P^T, 0]]
    lhs[:n, :n] = _kernel(_sq_dist(dest, dest))
    lhs.flat[:(n + 3) * n:n + 4] += regularization     # the diagonal of K
    lhs[:n, n] = lhs[n, :n] = 1.0
    lhs[:n, n + 1:] = dest
    lhs[n + 1:, :n] = dest.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = src - dest  # interpolate the displacement: better conditioned than positions
    coef = np.linalg.solve(lhs, rhs)
    g = grid.astype(np.float32)
    kg = _kernel(_sq_dist(g, dest.astype(np.float32)))
    disp = kg @ coef[:n].astype(np.float32) + coef[n] + g @ coef[n + 1:].astype(np.float32)
    return grid + disp

"""Backward thin-plate-spline warp: destination control points -> source positions, on a grid.

A backward map is what image resampling needs (for every output pixel, where to read the
source), and defining the spline at the *destination* control points lets a closed mouth open:
coincident source points may go to separate destinations. The spline is solved per frame on a
few hundred points and evaluated on a coarse grid, then upsampled to pixels.
"""

from __future__ import annotations

import numpy as np


def _kernel(d2: np.ndarray) -> np.ndarray:
    """TPS radial basis U(r) = r^2 log r^2 given squared distances (0 at r = 0; three passes)."""
    k = np.maximum(d2, 1e-30)
    np.log(k, out=k)
    k *= d2
    return k


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def tps_backward(dest: np.ndarray, src: np.ndarray, grid: np.ndarray,
                 regularization: float = 1e-3) -> np.ndarray:
    """Source positions (G, 2) for grid points (G, 2), from control pairs dest (N, 2) -> src (N, 2).

    All coordinates in the same normalised units (about 0..1). `regularization` keeps nearly
    coincident destination points (lips pressed together) from blowing the spline up.
    """
    dest = dest.astype(np.float64)
    n = len(dest)
    k = _kernel(_sq_dist(dest, dest)) + regularization * np.eye(n)
    p = np.concatenate([np.ones((n, 1)), dest], axis=1)
    lhs = np.zeros((n + 3, n + 3))
    lhs[:n, :n] = k
    lhs[:n, n:] = p
    lhs[n:, :n] = p.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = src - dest  # interpolate the displacement: better conditioned than positions
    coef = np.linalg.solve(lhs, rhs)
    g = grid.astype(np.float32)
    kg = _kernel(_sq_dist(g, dest.astype(np.float32)))
    disp = kg @ coef[:n].astype(np.float32) + coef[n] + g @ coef[n + 1:].astype(np.float32)
    return grid + disp

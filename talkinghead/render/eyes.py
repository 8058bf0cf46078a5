"""Eyelids that close: a per-eye resampling that slides the upper lid down over the eye.

In the eye's own frame (u along the corner-to-corner axis, v perpendicular, downward), the upper
lid line v_u(u) moves to v_n = v_u + f (v_l - v_u) for closure f in [0, 1]; the skin band
[v_u - H, v_u] above the lid stretches over [v_u - H, v_n], bringing the lash line down with it.
Below the new lid the eye shows as it was. It runs in source space, before the dense warp, so
the closed lid then moves with the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Eyelid:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in source pixels
    u: np.ndarray        # (h, w) local coordinate along the eye axis, px
    v: np.ndarray        # (h, w) local coordinate across it (down), px
    v_upper: np.ndarray  # (h, w) upper lid line at each pixel's u
    v_lower: np.ndarray  # (h, w) lower lid line
    inside: np.ndarray   # (h, w) weight: 1 between the corners, fading beyond them
    origin: np.ndarray   # (2,)
    axis_u: np.ndarray   # (2,)
    axis_v: np.ndarray   # (2,)
    skin: float          # H: height of the lid skin band that stretches, px


def make_eyelid(landmarks: np.ndarray, upper: tuple[int, ...], lower: tuple[int, ...],
                image_shape: tuple[int, int]) -> Eyelid:
    up = landmarks[list(upper), :2].astype(np.float64)
    lo = landmarks[list(lower), :2].astype(np.float64)
    origin = up[0]
    axis_u = up[-1] - up[0]
    width = float(np.linalg.norm(axis_u))
    axis_u /= max(width, 1e-6)
    axis_v = np.array([-axis_u[1], axis_u[0]])
    if axis_v[1] < 0:  # v points down the face
        axis_v = -axis_v

    def local(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = p - origin
        return d @ axis_u, d @ axis_v

    uu, vu = local(up)
    ul, vl = local(lo)
    skin = 0.45 * width
    pts = np.concatenate([up, lo])
    h, w = image_shape
    x0 = int(max(0, np.floor(pts[:, 0].min() - 0.15 * width)))
    x1 = int(min(w, np.ceil(pts[:, 0].max() + 0.15 * width)))
    y0 = int(max(0, np.floor(pts[:, 1].min() - skin - 0.1 * width)))
    y1 = int(min(h, np.ceil(pts[:, 1].max() + 0.1 * width)))
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    d = np.stack([xs - origin[0], ys - origin[1]], -1)
    pu, pv = d @ axis_u, d @ axis_v
    o_u, o_l = np.argsort(uu), np.argsort(ul)
    v_upper = np.interp(pu, uu[o_u], vu[o_u])
    v_lower = np.interp(pu, ul[o_l], vl[o_l])
    margin = 0.08 * width
    inside = np.clip(np.minimum(pu + margin, width + margin - pu) / (2 * margin), 0.0, 1.0)
    f32 = np.float32
    return Eyelid((x0, y0, x1, y1), pu.astype(f32), pv.astype(f32), v_upper.astype(f32),
                  v_lower.astype(f32), inside.astype(f32), origin, axis_u, axis_v, skin)


def close_eyelid(work: np.ndarray, source: np.ndarray, lid: Eyelid, amount: float) -> None:
    """Write into `work` the source eye region with the lid closed by `amount` (0 open, 1 shut)."""
    import cv2

    x0, y0, x1, y1 = lid.box
    f = float(np.clip(amount, 0.0, 1.0))
    if f <= 1e-3:
        work[y0:y1, x0:x1] = source[y0:y1, x0:x1]
        return
    f_px = f * lid.inside
    v_new = lid.v_upper + f_px * np.maximum(lid.v_lower - lid.v_upper, 0.0)
    v_top = lid.v_upper - lid.skin
    band = (lid.v >= v_top) & (lid.v < v_new)
    stretch = (lid.v_upper - v_top) / np.maximum(v_new - v_top, 1e-3)
    v_src = np.where(band, v_top + (lid.v - v_top) * stretch, lid.v)
    map_x = (lid.origin[0] + lid.u * lid.axis_u[0] + v_src * lid.axis_v[0]).astype(np.float32)
    map_y = (lid.origin[1] + lid.u * lid.axis_u[1] + v_src * lid.axis_v[1]).astype(np.float32)
    work[y0:y1, x0:x1] = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)

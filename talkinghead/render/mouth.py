"""Mouth interior for a mouth opened wider than in the source: inner-lip edge, dark cavity, teeth.

The warp alone only stretches the closed lip line across the gap; here the gap between the
destination inner-lip contours is painted in the mouth's own frame (a along the corner-to-corner
axis, 0..1; b across it). Colours come from the portrait's own lips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkinghead.face import regions as R


@dataclass(frozen=True)
class MouthStyle:
    lip: np.ndarray     # (3,) mean lip colour, float
    cavity: np.ndarray  # (3,)
    teeth: np.ndarray   # (3,)


def mouth_style(image: np.ndarray, landmarks: np.ndarray) -> MouthStyle:
    import cv2

    mask = np.zeros(image.shape[:2], np.uint8)
    outer = np.concatenate([landmarks[list(R.LIPS_OUTER_UPPER), :2],
                            landmarks[list(R.LIPS_OUTER_LOWER[::-1]), :2]])
    inner = np.concatenate([landmarks[list(R.LIPS_INNER_UPPER), :2],
                            landmarks[list(R.LIPS_INNER_LOWER[::-1]), :2]])
    cv2.fillPoly(mask, [np.round(outer).astype(np.int32)], 1)
    cv2.fillPoly(mask, [np.round(inner).astype(np.int32)], 0)
    lip = image[mask > 0].reshape(-1, 3).mean(0) if mask.any() else np.array([150.0, 80, 80])
    cavity = np.clip(lip * 0.28 + np.array([8.0, 0.0, 2.0]), 0, 255)
    teeth = np.clip(0.15 * lip + np.array([190.0, 184.0, 172.0]), 0, 255)
    return MouthStyle(lip.astype(np.float32), cavity.astype(np.float32), teeth.astype(np.float32))


def inner_gap(points: np.ndarray) -> float:
    """Mean distance between the middle inner-lip points, (478, >=2) landmarks or dest points."""
    up = points[list(R.LIPS_INNER_UPPER[3:8]), :2]
    lo = points[list(R.LIPS_INNER_LOWER[3:8]), :2]
    return float(np.linalg.norm(up - lo, axis=1).mean())


def paint_mouth(frame: np.ndarray, upper: np.ndarray, lower: np.ndarray, strength: float,
                style: MouthStyle) -> None:
    """Paint in place. upper/lower: (K, 2) inner-lip contours corner to corner, frame pixels."""
    if strength <= 1e-3:
        return
    h, w = frame.shape[:2]
    pts = np.concatenate([upper, lower])
    x0 = int(max(0, np.floor(pts[:, 0].min()) - 2))
    x1 = int(min(w, np.ceil(pts[:, 0].max()) + 3))
    y0 = int(max(0, np.floor(pts[:, 1].min()) - 2))
    y1 = int(min(h, np.ceil(pts[:, 1].max()) + 3))
    if x1 <= x0 or y1 <= y0:
        return
    origin = upper[0].astype(np.float64)
    axis = upper[-1] - upper[0]
    width = float(np.linalg.norm(axis))
    if width < 2:
        return
    axis = axis / width
    normal = np.array([-axis[1], axis[0]])
    if normal[1] < 0:
        normal = -normal
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    d = np.stack([xs - origin[0], ys - origin[1]], -1)
    a, b = d @ axis / width, d @ normal
    ua, ub = (upper - origin) @ axis / width, (upper - origin) @ normal
    la, lb = (lower - origin) @ axis / width, (lower - origin) @ normal
    b_up = np.interp(a, ua[np.argsort(ua)], ub[np.argsort(ua)])
    b_lo = np.interp(a, la[np.argsort(la)], lb[np.argsort(la)])
    height = np.maximum(b_lo - b_up, 1e-3)
    # soft inside mask (about one pixel of antialiasing), zero beyond the corners
    inside = np.clip(np.minimum(b - b_up, b_lo - b) + 0.5, 0.0, 1.0) * (a > 0) * (a < 1)
    if not inside.any():
        return
    r = np.clip((b - b_up) / height, 0.0, 1.0)
    across = np.sin(np.pi * np.clip(a, 0.0, 1.0))
    depth = (0.55 + 0.45 * (1.0 - np.sin(np.pi * r))) * (0.6 + 0.4 * across)
    color = style.cavity[None, None, :] * depth[..., None]
    # upper teeth: a band under the upper lip, widest in the middle; lower teeth: a hint
    t_up = np.minimum(0.42 * height, 0.085 * width)
    teeth_up = np.clip((t_up - (b - b_up)) / 1.2, 0.0, 1.0) * np.clip((across - 0.35) / 0.3, 0, 1)
    t_lo = np.minimum(0.2 * height, 0.04 * width)
    teeth_lo = np.clip((t_lo - (b_lo - b)) / 1.2, 0.0, 1.0) * np.clip((across - 0.6) / 0.3, 0, 1)
    shade = (0.78 + 0.22 * across)[..., None]
    color = color * (1 - teeth_up[..., None]) + style.teeth * shade * teeth_up[..., None]
    color = color * (1 - teeth_lo[..., None]) + style.teeth * 0.8 * shade * teeth_lo[..., None]
    # inner-lip edge: a thin band of darkened lip colour along both contours
    edge_px = max(1.0, 0.02 * width)
    edge = np.clip(1.0 - np.minimum(b - b_up, b_lo - b) / edge_px, 0.0, 1.0)[..., None]
    color = color * (1 - edge) + style.lip * 0.55 * edge
    alpha = (inside * strength)[..., None]
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(roi * (1 - alpha) + color * alpha + 0.5, 0, 255).astype(np.uint8)

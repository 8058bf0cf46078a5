"""Eyelids that close with a lash line and a crease, and eyes that look where the driver looks.

In the eye's own frame (u along the corner-to-corner axis, v perpendicular, downward), the upper
lid line v_u(u) moves to v_n = v_u + f (v_l - v_u) for closure f in [0, 1]. The lid skin between
the crease (v_u - H) and the lid margin unrolls over [v_u - H, v_n - L] while the lash line (the
last L px above the margin, L about 6 % of the eye width) keeps its thickness and rides on the
margin, so a closed eye shows smooth lid skin, a dark lash line and the crease where it was (the
crease is darkened slightly as the lid stretches under it, as in a real closed eye).

Gaze: the eyeLook* blendshape deltas that Motion carries (the face model's ARKit set) shift what
shows between the lids, iris and all, by up to about a quarter of the eye width horizontally and
an eighth vertically, fading to nothing at the lids and corners (the sclera stretches), so
`drive` transfers gaze. It runs in source space, before the dense warp, so the eye then moves
with the head. Appearance comes from the portrait itself (SadTalker's face render keeps the
source appearance and moves it: sadtalker.txt Sec. 3.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkinghead.types import BS

GAZE_U = 0.22      # horizontal iris shift per unit eyeLook delta, in eye widths
GAZE_V = 0.12      # vertical
LASH = 0.06        # lash-line thickness, in eye widths


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
    width: float = 0.0   # corner to corner, px
    side: str = "Left"   # the subject's "Left" or "Right" (names of the blendshapes)


def make_eyelid(landmarks: np.ndarray, upper: tuple[int, ...], lower: tuple[int, ...],
                image_shape: tuple[int, int]) -> Eyelid:
    from talkinghead.face import regions as R

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
    side = "Left" if tuple(upper) == tuple(R.LEFT_EYE_UPPER) else "Right"
    return Eyelid((x0, y0, x1, y1), pu.astype(f32), pv.astype(f32), v_upper.astype(f32),
                  v_lower.astype(f32), inside.astype(f32), origin, axis_u, axis_v, skin,
                  width, side)


def gaze_shift(lid: Eyelid, blendshapes: np.ndarray | None) -> tuple[float, float]:
    """(du, dv) px shift of the eye's content along the eye axes for eyeLook* deltas."""
    if blendshapes is None:
        return 0.0, 0.0
    s = lid.side
    look = {k: float(blendshapes[BS[f"eyeLook{k}{s}"]]) for k in ("In", "Out", "Up", "Down")}
    # towards the subject's left is image +x: "out" for the left eye, "in" for the right one
    gx = look["Out"] - look["In"] if s == "Left" else look["In"] - look["Out"]
    gy = look["Down"] - look["Up"]
    shift = np.array([gx * GAZE_U, gy * GAZE_V]) * lid.width    # image px (x right, y down)
    return float(shift @ lid.axis_u), float(shift @ lid.axis_v)


def close_eyelid(work: np.ndarray, source: np.ndarray, lid: Eyelid, amount: float,
                 blendshapes: np.ndarray | None = None) -> None:
    """Write into `work` the source eye region with the lid closed by `amount` (0 open, 1 shut),
    the eye looking by the eyeLook* deltas in `blendshapes` (52,) when given."""
    import cv2

    x0, y0, x1, y1 = lid.box
    f = float(np.clip(amount, 0.0, 1.0))
    du, dv = gaze_shift(lid, blendshapes)
    if f <= 1e-3 and abs(du) + abs(dv) < 0.05:
        work[y0:y1, x0:x1] = source[y0:y1, x0:x1]
        return
    gap = np.maximum(lid.v_lower - lid.v_upper, 0.0)
    v_new = lid.v_upper + f * lid.inside * gap
    v_top = lid.v_upper - lid.skin
    lash = min(LASH * lid.width, 0.5 * lid.skin)
    # lid skin [v_top, v_upper - lash] unrolls over [v_top, v_new - lash]; the lash line keeps
    # its thickness on the margin
    skin = (lid.v >= v_top) & (lid.v < v_new - lash)
    stretch = (lid.v_upper - lash - v_top) / np.maximum(v_new - lash - v_top, 1e-3)
    lashes = (lid.v >= v_new - lash) & (lid.v < v_new)
    v_src = np.where(skin, v_top + (lid.v - v_top) * stretch,
                     np.where(lashes, lid.v - (v_new - lid.v_upper), lid.v))
    u_src = lid.u
    if abs(du) + abs(dv) >= 0.05:   # gaze: shift the open eye's content, fading at lids/corners
        t = np.clip((lid.v - v_new) / np.maximum(lid.v_lower - v_new, 1e-3), 0.0, 1.0)
        bump = (np.sin(np.pi * t) * np.sin(np.pi * np.clip(lid.u / max(lid.width, 1e-3), 0, 1)))
        bump = np.where(lid.v > v_new, np.sqrt(np.maximum(bump, 0.0)), 0.0) * lid.inside
        u_src, v_src = u_src - du * bump, v_src - dv * bump
    map_x = (lid.origin[0] + u_src * lid.axis_u[0] + v_src * lid.axis_v[0]).astype(np.float32)
    map_y = (lid.origin[1] + u_src * lid.axis_u[1] + v_src * lid.axis_v[1]).astype(np.float32)
    out = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if f > 0.05:  # crease deepens where the lid skin stretches under it
        crease = np.exp(-((lid.v - v_top - 0.15 * lid.skin) / (0.12 * lid.skin)) ** 2)
        dark = 1.0 - 0.12 * f * crease * lid.inside
        out = np.clip(out * dark[..., None] + 0.5, 0, 255).astype(np.uint8)
    work[y0:y1, x0:x1] = out

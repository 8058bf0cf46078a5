"""Image reading: JPEG/PNG/WebP/BMP/TIFF, any mode (RGBA, grayscale, 16-bit, palette), EXIF orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from talkinghead.errors import InputError


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        hi = 1.0 if a.max(initial=0.0) <= 1.0 else 255.0
        return np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
    # integer images: 16-bit (or 32-bit holding 16-bit values) -> 8-bit
    hi = 65535 if a.max(initial=0) > 255 else 255
    return np.clip(a.astype(np.float64) / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, upright per EXIF; transparency is composited on white."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (JPEG, PNG, WebP, BMP or TIFF expected)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{path}: corrupt or truncated image ({e})") from None
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("CMYK", "YCbCr", "LAB", "HSV", "1"):
        im = im.convert("RGB")
    a = np.asarray(im)
    if a.ndim == 2:  # grayscale, any bit depth
        a = np.repeat(_to_uint8(a)[:, :, None], 3, axis=2)
    a = _to_uint8(a)
    if a.shape[2] == 2:  # gray + alpha
        a = np.concatenate([np.repeat(a[:, :, :1], 3, axis=2), a[:, :, 1:]], axis=2)
    if a.shape[2] == 4:
        alpha = a[:, :, 3:].astype(np.float32) / 255.0
        a = (a[:, :, :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    if a.shape[0] < 16 or a.shape[1] < 16:
        raise InputError(f"{path}: image is {a.shape[1]}x{a.shape[0]} px, too small for a portrait")
    return np.ascontiguousarray(a[:, :, :3])


def write_image(path: str | Path, image: np.ndarray) -> None:
    from PIL import Image

    from talkinghead.io.atomic import atomic_output

    path = Path(path)
    with atomic_output(path) as tmp:
        Image.fromarray(image).save(tmp, format=(path.suffix.lstrip(".") or "png").upper()
                                    .replace("JPG", "JPEG"))

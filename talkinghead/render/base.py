"""The renderer interface: one small protocol and a registry by name.

A renderer turns a portrait plus relative Motion (and, for learned renderers, the audio) into a
stream of full output frames. Every renderer follows the same three steps:
  1. `prepare(image, face, landmarker)` once per portrait: crop, encode, calibrate;
  2. `frames(state, motion, inputs)` lazily yields one (H, W, 3) uint8 frame per Motion frame,
     so memory stays bounded in the audio's length;
  3. `paste(state, crop)` puts a generated face crop back into the portrait (identity for
     renderers that draw into the full image).
Pipelines pick a renderer with `get_renderer(name, options)` and never branch on its type;
`generate --renderer NAME` lists `renderer_names()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Protocol, runtime_checkable

import numpy as np

from talkinghead.errors import InputError
from talkinghead.types import AudioClip, FaceAnalysis, Motion


@dataclass(frozen=True)
class RenderOptions:
    """What a renderer is built from; each renderer reads the fields it needs."""

    mode: str = "full"                   # "full": frames are the whole portrait; "crop"
    crop_size: int = 512                 # output size in crop mode
    calibrate: tuple[str, ...] = ()      # geometric: rig channels fitted to the face model
    geometric: Any = None                # geometric: a RenderConfig (None: its defaults)
    checkpoints: Mapping[str, str | None] = field(default_factory=dict)  # renderer name -> path
    steps: int = 10                      # sampling steps of diffusion renderers (DAWN)
    pose_style: int | None = None        # sadtalker: the released PoseVAE's style (None: the Motion's pose)

    def checkpoint(self, name: str) -> str | None:
        return self.checkpoints.get(name)


@dataclass
class RenderInputs:
    """Per-call inputs beyond the Motion: the speech, and features the pipeline already has."""

    clip: AudioClip | None = None        # None: a renderer that needs audio raises InputError
    fps: float = 25.0
    features: Any = None                 # AudioFeatures the motion model used (reused by kind)
    seed: int = 0
    progress: bool = True


@runtime_checkable
class Renderer(Protocol):
    name: str
    # True: `prepare` gets the whole portrait and the renderer crops the face and pastes back
    # itself; False: in crop mode the pipeline hands it the face crop
    crops_itself: bool

    def prepare(self, image: np.ndarray, face: FaceAnalysis, landmarker: Any = None) -> Any: ...

    def frames(self, state: Any, motion: Motion, inputs: RenderInputs) -> Iterator[np.ndarray]: ...

    def paste(self, state: Any, crop: np.ndarray) -> np.ndarray: ...


# name -> "module:factory"; a factory takes RenderOptions and returns a Renderer. Built-ins are
# imported only when picked, so choosing the geometric renderer never imports torch.
_REGISTRY: dict[str, str | Callable[[RenderOptions], Renderer]] = {
    "geometric": "talkinghead.render.geometric:GeometricRenderer.from_options",
    "dawn": "talkinghead.render.dawn.renderer:DawnRenderer.from_options",
    "sadtalker": "talkinghead.render.sadtalker.renderer:SadTalkerRenderer.from_options",
    "difftalk": "talkinghead.render.ldm.difftalk:DiffTalkRenderer.from_options",
    "fd2talk": "talkinghead.render.ldm.fd2talk_render:FD2TalkRenderer.from_options",
    "hallo2": "talkinghead.render.ldm.hallo2:Hallo2Renderer.from_options",
}


def register(name: str, factory: Callable[[RenderOptions], Renderer]) -> None:
    """Add a renderer under `name` (replacing one of that name)."""
    _REGISTRY[name] = factory


def renderer_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def _resolve(spec: str) -> Callable[[RenderOptions], Renderer]:
    module, _, attr = spec.partition(":")
    obj: Any = import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def get_renderer(name: str, options: RenderOptions = RenderOptions()) -> Renderer:
    """The renderer registered as `name`, built from `options` (InputError when unknown)."""
    if name not in _REGISTRY:
        raise InputError(f"unknown renderer {name!r}; choose one of {', '.join(_REGISTRY)}")
    factory = _REGISTRY[name]
    return (_resolve(factory) if isinstance(factory, str) else factory)(options)


def paste_feathered(image: np.ndarray, box: tuple[int, int, int, int], crop: np.ndarray,
                    feather: float = 0.08) -> np.ndarray:
    """A generated square crop back into `image` at `box` (which may reach past the image),
    blended over the box's outer `feather` fraction so no seam shows."""
    import cv2

    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    h, w = image.shape[:2]
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    canvas = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge").astype(np.float32)
    patch = cv2.resize(crop, (bw, bh), interpolation=cv2.INTER_CUBIC).astype(np.float32)

    def ramp(n: int) -> np.ndarray:
        return np.clip(np.minimum(np.arange(n), np.arange(n)[::-1]) / max(1.0, feather * n), 0, 1)

    alpha = np.minimum(ramp(bh)[:, None], ramp(bw)[None, :])[..., None]
    region = canvas[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
    canvas[y0 + pad:y1 + pad, x0 + pad:x1 + pad] = alpha * patch + (1 - alpha) * region
    return np.clip(canvas[pad:pad + h, pad:pad + w] + 0.5, 0, 255).astype(np.uint8)

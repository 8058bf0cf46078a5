"""What the stages pass each other: FaceAnalysis (one image), Motion (a sequence), AudioClip.

Motion is our analogue of the 3DMM coefficients that SadTalker (sadtalker.txt, Sec. 3.1) and DAWN
(dawn.txt, Sec. 3.3: pose + eye-aspect-ratio "blink" signal) use as the intermediate between audio
and frames: per frame, expression = 52 ARKit-style blendshapes, head pose = yaw/pitch/roll +
translation + scale, eyes = left/right blink and eye aspect ratio. It can be absolute (measured on
a face) or relative to a source state (delta = frame - source), as both papers drive faces.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

# MediaPipe FaceLandmarker's blendshape categories, in its output order ("Left" = the subject's left).
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft",
    "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)
BS = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}


@dataclass
class FaceAnalysis:
    """One face in one image, as the face model sees it.

    landmarks: (478, 3) float32 in pixels; z is depth in the same pixel scale as x (smaller = nearer).
    blendshapes: (52,) float32 in [0, 1]. matrix: (4, 4) canonical-face -> camera transform (cm).
    """

    landmarks: np.ndarray
    blendshapes: np.ndarray
    matrix: np.ndarray
    image_size: tuple[int, int]  # (height, width)
    num_faces: int = 1

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the 468 mesh landmarks, in pixels."""
        xy = self.landmarks[:468, :2]
        x0, y0 = xy.min(0)
        x1, y1 = xy.max(0)
        return float(x0), float(y0), float(x1), float(y1)

    @property
    def size(self) -> float:
        """Face size in pixels: the larger side of the landmark box."""
        x0, y0, x1, y1 = self.bbox
        return max(x1 - x0, y1 - y0)


@dataclass
class AudioClip:
    """Audio samples, float32 in [-1, 1], shape (channels, n)."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return self.samples.shape[-1] / float(self.sample_rate)

    def mono(self) -> np.ndarray:
        return self.samples.mean(axis=0)


_PER_FRAME = ("blendshapes", "rotation", "translation", "scale", "ear")


@dataclass
class Motion:
    """Per-frame face motion. All arrays share the first axis T (frames).

    blendshapes (T, 52); rotation (T, 3) yaw/pitch/roll in degrees; translation (T, 3) in cm
    (camera frame of the face model); scale (T,) face size / image width; ear (T, 2) eye aspect
    ratio, left/right eye of the subject.
    """

    blendshapes: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    scale: np.ndarray
    ear: np.ndarray
    fps: float = 25.0
    relative: bool = False
    valid: np.ndarray | None = field(default=None)  # (T,) bool: a face was measured in that frame

    def __post_init__(self) -> None:
        for name in _PER_FRAME:
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float32))
        t = len(self.blendshapes)
        shapes = {"blendshapes": (t, 52), "rotation": (t, 3), "translation": (t, 3),
                  "scale": (t,), "ear": (t, 2)}
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"Motion.{name} has shape {getattr(self, name).shape}, want {shape}")
        if self.valid is None:
            self.valid = np.ones(t, dtype=bool)
        self.valid = np.asarray(self.valid, dtype=bool)

    def __len__(self) -> int:
        return len(self.blendshapes)

    @property
    def duration(self) -> float:
        return len(self) / self.fps

    @property
    def blink(self) -> np.ndarray:
        """(T, 2) eyeBlinkLeft, eyeBlinkRight."""
        return self.blendshapes[:, [BS["eyeBlinkLeft"], BS["eyeBlinkRight"]]]

    def channel(self, name: str) -> np.ndarray:
        """(T,) one blendshape by name."""
        return self.blendshapes[:, BS[name]]

    def __getitem__(self, index: slice | int | np.ndarray) -> Motion:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return replace(self, **{n: getattr(self, n)[index] for n in _PER_FRAME},
                       valid=self.valid[index])

    @staticmethod
    def concatenate(parts: list[Motion]) -> Motion:
        if not parts:
            raise ValueError("nothing to concatenate")
        return replace(parts[0], **{n: np.concatenate([getattr(p, n) for p in parts])
                                    for n in _PER_FRAME},
                       valid=np.concatenate([p.valid for p in parts]))

    def relative_to(self, source: Motion) -> Motion:
        """delta = frame - source (source: a one-frame Motion), as DAWN and SadTalker drive faces.

        Rotation and translation become differences, scale a ratio.
        """
        if self.relative or source.relative:
            raise ValueError("relative_to needs two absolute Motions")
        s = source[0]
        return replace(
            self,
            blendshapes=self.blendshapes - s.blendshapes,
            rotation=self.rotation - s.rotation,
            translation=self.translation - s.translation,
            scale=self.scale / max(float(s.scale[0]), 1e-6),
            ear=self.ear - s.ear,
            relative=True,
        )

    def scaled(self, expression: float = 1.0, pose: float = 1.0) -> Motion:
        """A relative Motion with its expression and pose deltas multiplied (0 = none)."""
        if not self.relative:
            raise ValueError("scaled() works on relative motion")
        return replace(
            self,
            blendshapes=self.blendshapes * expression,
            ear=self.ear * expression,
            rotation=self.rotation * pose,
            translation=self.translation * pose,
            scale=1.0 + (self.scale - 1.0) * pose,
        )

    def resample(self, fps: float) -> Motion:
        """Linear re-timing to another frame rate (same duration)."""
        if abs(fps - self.fps) < 1e-6 or len(self) < 2:
            return replace(self, fps=fps)
        n_out = max(1, int(round(len(self) * fps / self.fps)))
        t_in = np.arange(len(self)) / self.fps
        t_out = np.minimum(np.arange(n_out) / fps, t_in[-1])

        def interp(a: np.ndarray) -> np.ndarray:
            flat = a.reshape(len(a), -1)
            out = np.stack([np.interp(t_out, t_in, flat[:, j]) for j in range(flat.shape[1])], 1)
            return out.reshape((n_out,) + a.shape[1:]).astype(np.float32)

        nearest = np.clip(np.round(t_out * self.fps).astype(int), 0, len(self) - 1)
        return replace(self, **{n: interp(getattr(self, n)) for n in _PER_FRAME},
                       valid=self.valid[nearest], fps=fps)

    def save(self, path: str | Path) -> None:
        """Save as .npz (plain arrays, no pickle); blendshape names travel with it."""
        arrays = {n: getattr(self, n) for n in _PER_FRAME}
        np.savez(path, **arrays, valid=self.valid, fps=np.float32(self.fps),
                 relative=np.bool_(self.relative), blendshape_names=np.array(BLENDSHAPE_NAMES))

    @classmethod
    def load(cls, path: str | Path) -> Motion:
        with np.load(path, allow_pickle=False) as z:
            names = tuple(str(n) for n in z["blendshape_names"])
            if names != BLENDSHAPE_NAMES:
                raise ValueError(f"{path}: blendshape names differ from this version's")
            return cls(**{n: z[n] for n in _PER_FRAME}, valid=z["valid"], fps=float(z["fps"]),
                       relative=bool(z["relative"]))

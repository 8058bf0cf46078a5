"""Re-analysis of an OUTPUT video with the face model: per-frame Motion plus lip opening.

Quality is judged on what a viewer sees, so every figure starts from the encoded frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkinghead.face.regions import mouth_opening
from talkinghead.types import Motion


@dataclass
class VideoAnalysis:
    motion: Motion            # absolute, as measured
    opening: np.ndarray       # (T,) inner-lip gap / mouth width; NaN where no face

    @property
    def blink(self) -> np.ndarray:
        return self.motion.blink.mean(1)


def analyze_video(path: str | Path, progress: bool = False) -> VideoAnalysis:
    from talkinghead.face.extract import extract_video_motion

    opening: list[float] = []
    motion = extract_video_motion(path, progress, on_frame=lambda _, face: opening.append(
        mouth_opening(face.landmarks) if face is not None else np.nan))
    return VideoAnalysis(motion, np.asarray(opening, np.float32))

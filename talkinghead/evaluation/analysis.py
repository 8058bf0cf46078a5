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
    from tqdm import tqdm

    from talkinghead.errors import InputError
    from talkinghead.face.extract import _fill_missing, motion_from_face
    from talkinghead.face.landmarker import FaceLandmarker
    from talkinghead.io.video import iter_frames, video_info

    info = video_info(path)
    rows, opening = [], []
    with FaceLandmarker(video=True) as lm:
        for i, frame in enumerate(tqdm(iter_frames(path), total=info.num_frames or None,
                                       desc="analysing", disable=not progress, leave=False)):
            faces = lm.detect(frame, timestamp_ms=int(round(i * 1000.0 / info.fps)))
            rows.append(motion_from_face(faces[0]) if faces else None)
            opening.append(mouth_opening(faces[0].landmarks) if faces else np.nan)
    if not rows:
        raise InputError(f"{path}: video has no frames")
    return VideoAnalysis(_fill_missing(rows, info.fps, str(path)), np.asarray(opening, np.float32))

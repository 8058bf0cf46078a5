"""Temporal filters for measured motion: measurement jitter off the head pose, blinks kept."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from talkinghead.types import Motion


def smooth_pose(motion: Motion, window_s: float = 0.2) -> Motion:
    """Savitzky-Golay (order 2) over rotation, translation and scale; expression untouched,
    since blinks and plosives last only a few frames."""
    from scipy.signal import savgol_filter

    win = int(round(window_s * motion.fps)) | 1
    if len(motion) < win or win < 5:
        return motion

    def f(a: np.ndarray) -> np.ndarray:
        return savgol_filter(a, win, 2, axis=0).astype(np.float32)

    return replace(motion, rotation=f(motion.rotation), translation=f(motion.translation),
                   scale=f(motion.scale))


def still(motion: Motion) -> Motion:
    """No head motion: zero pose deltas of a relative Motion."""
    if not motion.relative:
        raise ValueError("still() works on relative motion")
    return replace(motion, rotation=np.zeros_like(motion.rotation),
                   translation=np.zeros_like(motion.translation), scale=np.ones_like(motion.scale))

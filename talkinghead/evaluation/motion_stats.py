"""Liveliness figures from measured motion: blinks (count, rate, durations) and head-pose spread."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from talkinghead.types import Motion


def detect_blinks(signal: np.ndarray, fps: float = 25.0, min_rise: float = 0.1) -> list[tuple[int, int]]:
    """[(start, end)] frame ranges where the eyelid signal rises well above its resting level.

    Threshold: resting level (median) + half the way to the clip's 99th percentile, at least
    `min_rise` above rest; a blink is a run of frames above it.
    """
    x = np.nan_to_num(np.asarray(signal, np.float64), nan=float(np.nanmedian(signal)))
    rest = float(np.median(x))
    thr = rest + max(min_rise, 0.5 * (float(np.percentile(x, 99)) - rest))
    above = np.concatenate([[False], x > thr, [False]])
    edges = np.flatnonzero(np.diff(above.astype(int)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


@dataclass
class MotionStats:
    seconds: float
    blinks: int
    blinks_per_second: float
    blink_durations_ms: list[float]
    pose_std_deg: float               # sqrt of the mean per-axis variance of yaw/pitch/roll
    pose_std_axes: list[float]

    def as_dict(self) -> dict:
        return asdict(self)


def motion_stats(motion: Motion) -> MotionStats:
    # duration of a blink: frames above threshold plus one frame (the half frames at each edge)
    blinks = detect_blinks(motion.blink.mean(1), motion.fps)
    durations = [1000.0 * (b - a + 1) / motion.fps for a, b in blinks]
    axes = motion.rotation.std(0)
    return MotionStats(motion.duration, len(blinks), len(blinks) / max(motion.duration, 1e-6),
                       durations, float(np.sqrt(np.mean(axes ** 2))), [float(a) for a in axes])

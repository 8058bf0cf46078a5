"""Temporal filters: measurement jitter off a measured head pose (blinks kept), `still`, and the
speech gate that rests a generated mouth where the audio is quiet."""

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


def speech_gate(samples: np.ndarray, num_frames: int, fps: float = 25.0,
                sample_rate: int = 16000, hangover_s: float = 0.12) -> np.ndarray:
    """(T,) in [0, 1]: 1 where the audio is louder than its quiet floor by a clear margin.

    Frame energy in dB; "loud" means 15 dB above the clip's 10th percentile and within 45 dB of
    its peak. Spread by `hangover_s` on both sides (a mouth closes after the sound ends and
    opens before it starts) and smoothed, so the gate never cuts a phone. Steady noise with no
    modulation is not speech: the mouth rests.
    """
    x = np.asarray(samples, np.float32)
    hop = sample_rate / fps
    edges = (np.arange(num_frames + 1) * hop).astype(int)
    energy = np.array([np.mean(x[a:b] ** 2) if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])])
    db = 10 * np.log10(energy + 1e-10)
    if db.max() < -60:                               # digital silence: the face rests
        return np.zeros(num_frames, np.float32)
    audible = db > -90                               # digital silence says nothing of the floor
    # the noise floor of the last/next 2 s; digital silence sorts above everything
    floor = _rank_filter(np.where(audible, db, 1e3), 10, int(4 * fps) + 1)
    floor = np.where(floor < 1e3, floor, np.percentile(db[audible], 10))
    loud = (db > floor + 8) & (db > db.max() - 45)
    if loud.mean() > 0.9:                            # no quiet stretches to learn a floor from
        loud[:] = True
    spread = _max_filter(loud.astype(np.float32), 1 + 2 * int(round(hangover_s * fps)))
    edged = np.pad(spread, 1, mode="symmetric").astype(np.float64)                  # (T + 2,)
    return np.clip((edged[:-2] + edged[1:-1] + edged[2:]) / 3, 0, 1).astype(np.float32)


# The gate's three 1-D filters in numpy, equal to scipy.ndimage's percentile_filter (mode
# "nearest"), maximum_filter1d and uniform_filter1d (mode "reflect" = numpy's "symmetric") on
# these inputs (tests/test_speed_paths.py): importing scipy.ndimage cost 0.25 CPU s of a cold
# start, and the live stream gates every hop.

def _rank_filter(x: np.ndarray, percentile: float, size: int, rows: int = 4096) -> np.ndarray:
    """scipy.ndimage.percentile_filter(x, percentile, size, mode="nearest") of a 1-D x (odd
    size): the element of rank int(size * percentile / 100) in each centred window."""
    from numpy.lib.stride_tricks import sliding_window_view

    rank = min(int(float(size) * percentile / 100.0), size - 1)
    half = size // 2
    windows = sliding_window_view(np.pad(x, half, mode="edge"), size)                # (T, size)
    out = np.empty_like(x)
    for i in range(0, len(x), rows):                                                 # bounded memory
        out[i:i + rows] = np.partition(windows[i:i + rows], rank, axis=1)[:, rank]
    return out


def _max_filter(x: np.ndarray, size: int) -> np.ndarray:
    """scipy.ndimage.maximum_filter1d(x, size) (mode "reflect", odd size) of a 1-D x."""
    from numpy.lib.stride_tricks import sliding_window_view

    return sliding_window_view(np.pad(x, size // 2, mode="symmetric"), size).max(1)


def gate_mouth(motion: Motion, gate: np.ndarray, channels: list[int]) -> Motion:
    """Scale the mouth blendshape deltas of a relative Motion by the speech gate."""
    blend = motion.blendshapes.copy()
    blend[:, channels] *= gate[: len(blend), None]
    return replace(motion, blendshapes=blend)

"""Beat Align Score (Li et al., "AI Choreographer" / Siyao et al., "Bailando", CVPR 2022), used
for head motion by FD2Talk and DAWN: how well the audio's beats are met by motion beats.

* audio beats: speech onsets, peaks of the spectral-flux onset envelope of a log-mel spectrogram;
* motion beats: local minima of the head's kinematic speed (frame-to-frame change of yaw, pitch,
  roll in degrees), Gaussian-smoothed (sigma 5 frames), as Bailando's evaluation does;
* BAS = mean over audio beats of exp(-d^2 / (2 sigma^2)), d the distance in frames to the nearest
  motion beat, sigma = 3 frames (Bailando's published evaluation).
"""

from __future__ import annotations

import numpy as np

from talkinghead.types import AudioClip


def onset_envelope(clip: AudioClip, fps: float = 25.0) -> np.ndarray:
    """(T,) positive spectral flux of the log-mel spectrogram, one value per video frame."""
    from talkinghead.audio.features import wav2lip_mel

    mel = wav2lip_mel(clip.mono())                      # (M, 80) log-mel at 80 Hz
    flux = np.maximum(np.diff(mel, axis=0), 0).sum(1)   # (M - 1,)
    hop_s = 1.0 / 80.0
    t_frames = np.arange(int(round(clip.duration * fps))) / fps
    return np.interp(t_frames, np.arange(len(flux)) * hop_s + hop_s, flux)


def audio_beats(clip: AudioClip, fps: float = 25.0, min_gap_s: float = 0.2) -> np.ndarray:
    """Frame indices of speech onsets: envelope peaks above its mean + 0.5 std."""
    from scipy.signal import find_peaks

    env = onset_envelope(clip, fps)
    if env.size < 3 or env.std() == 0:
        return np.zeros(0, int)
    peaks, _ = find_peaks(env, height=env.mean() + 0.5 * env.std(),
                          distance=max(1, int(round(min_gap_s * fps))))
    return peaks


def motion_beats(rotation: np.ndarray, smooth: float = 5.0) -> np.ndarray:
    """Frame indices of local minima of head speed ((T, 3) yaw/pitch/roll in degrees)."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import argrelextrema

    speed = np.linalg.norm(np.diff(np.asarray(rotation, np.float64), axis=0), axis=1)
    if speed.size < 3:
        return np.zeros(0, int)
    return argrelextrema(gaussian_filter1d(speed, smooth), np.less)[0] + 1


def beat_align_score(audio: np.ndarray, motion: np.ndarray, sigma: float = 3.0) -> float:
    """Mean over audio beats of exp(-(distance to the nearest motion beat)^2 / (2 sigma^2))."""
    audio, motion = np.asarray(audio, float), np.asarray(motion, float)
    if audio.size == 0 or motion.size == 0:
        return float("nan")
    d = np.abs(audio[:, None] - motion[None, :]).min(1)
    return float(np.mean(np.exp(-d ** 2 / (2 * sigma ** 2))))

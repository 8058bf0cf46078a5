"""Beat Align Score (Li et al., "AI Choreographer" / Siyao et al., "Bailando", CVPR 2022), used
for head motion by SadTalker, FD2Talk and DAWN: how well the audio's beats are met by motion beats.

* audio beats: speech onsets, peaks of the spectral-flux onset envelope of a log-mel spectrogram
  (Bailando reads music beats from librosa; speech has none, so onsets stand in);
* motion beats: local minima of the head's kinematic speed (frame-to-frame change of yaw, pitch,
  roll in degrees), Gaussian-smoothed, as Bailando's `calc_db`: the minima are indices into the
  speed series (speed[i] is the change from frame i to i+1), compared with frame indices as they are;
* BAS = mean over audio beats of exp(-d^2 / (2 sigma^2)), d the distance to the nearest motion
  beat (Bailando's `BA`).

Units. Bailando counts sigma (3) and the smoothing (5) in frames of its 60 fps AIST++ data; the
talking-head papers ran that code on 25 fps video, i.e. sigma 0.12 s and smoothing 0.2 s. Both
are taken here in seconds with those 25-fps values as defaults, so a video scores the same at any
frame rate, and at 25 fps the score equals Bailando's code applied to the frames (pass
sigma_s=0.05, smooth_s=5/60 for Bailando's own 60-fps timing).
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


SIGMA_S = 3 / 25.0          # Bailando's sigma of 3 frames, at the 25 fps of the talking-head papers
SMOOTH_S = 5 / 25.0         # Bailando's Gaussian smoothing of the speed, 5 frames at 25 fps


def motion_beats(rotation: np.ndarray, fps: float = 25.0, smooth_s: float = SMOOTH_S) -> np.ndarray:
    """Indices (into the (T - 1,) speed series) of the local minima of smoothed head speed;
    rotation: (T, 3) yaw/pitch/roll in degrees."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import argrelextrema

    speed = np.linalg.norm(np.diff(np.asarray(rotation, np.float64), axis=0), axis=1)   # (T - 1,)
    if speed.size < 3:
        return np.zeros(0, int)
    return argrelextrema(gaussian_filter1d(speed, smooth_s * fps), np.less)[0]


def beat_align_score(audio: np.ndarray, motion: np.ndarray, fps: float = 25.0,
                     sigma_s: float = SIGMA_S) -> float:
    """Mean over audio beats of exp(-(distance to the nearest motion beat)^2 / (2 sigma^2)),
    beats given as frame indices at `fps`, sigma in seconds."""
    audio, motion = np.asarray(audio, float), np.asarray(motion, float)
    if audio.size == 0 or motion.size == 0:
        return float("nan")
    d = np.abs(audio[:, None] - motion[None, :]).min(1)
    sigma = sigma_s * fps
    return float(np.mean(np.exp(-d ** 2 / (2 * sigma ** 2))))

"""Prosody -> ground-truth head motion, blinks and brows for the speech-motion corpus.

Head motion follows pitch/energy accents (speakers nod and turn on stressed syllables: Graf et
al. 2002, Busso et al. 2007) on top of a slow Ornstein-Uhlenbeck drift, with per-utterance
"pose styles" (SadTalker's PoseVAE is conditioned on a style id) that set amplitudes. Blinks
are a renewal process with a refractory period, more likely at pause onsets (Nakano &
Kitazawa 2010), 100-400 ms long with a fast closing and a slower opening phase.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkinghead.data.tts import Phone

# pose styles: (yaw, pitch, roll) drift std in degrees, accent nod gain in degrees, name
POSE_STYLES = (
    ((2.5, 1.5, 1.0), 2.5, "calm"),
    ((4.0, 2.0, 1.5), 3.5, "nodder"),
    ((5.0, 1.5, 1.5), 2.0, "turner"),
    ((3.0, 2.0, 3.0), 2.5, "tilter"),
    ((5.0, 3.0, 2.0), 4.5, "lively"),
    ((1.8, 1.2, 0.8), 1.5, "reserved"),
    ((3.5, 2.5, 1.5), 3.0, "speaker"),
    ((4.5, 2.0, 2.5), 3.0, "swayer"),
)
NUM_STYLES = len(POSE_STYLES)


def pitch_energy(samples: np.ndarray, num_frames: int, fps: float = 25.0,
                 sample_rate: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """(T,) log-f0 (0 where unvoiced) and (T,) log-energy per video frame (autocorrelation)."""
    hop, win = sample_rate // 100, sample_rate // 25         # 10 ms hop, 40 ms window
    x = np.pad(np.asarray(samples, np.float32), (win // 2, win))
    n = max(1, (len(x) - win) // hop)
    idx = np.arange(win)[None] + hop * np.arange(n)[:, None]
    frames = x[idx] * np.hanning(win)[None].astype(np.float32)
    energy = np.log((frames ** 2).mean(1) + 1e-8)
    spec = np.fft.rfft(frames, 2 * win)
    ac = np.fft.irfft(np.abs(spec) ** 2)[:, :win]
    ac /= ac[:, :1] + 1e-8
    lo, hi = sample_rate // 400, sample_rate // 70
    lag = lo + np.argmax(ac[:, lo:hi], 1)
    strength = ac[np.arange(n), lag]
    voiced = (strength > 0.45) & (energy > energy.max() - 7.0)
    f0 = np.where(voiced, np.log(sample_rate / lag), 0.0)
    # 100 Hz -> fps (mean over each video frame)
    t = np.minimum((np.arange(n) / 100.0 * fps).astype(int), num_frames - 1)
    counts = np.bincount(t, minlength=num_frames)
    vcount = np.bincount(t, weights=voiced, minlength=num_frames)
    f0sum = np.bincount(t, weights=f0, minlength=num_frames)
    out_f0 = np.where(vcount > 0, f0sum / np.maximum(vcount, 1), 0.0)
    esum = np.bincount(t, weights=energy, minlength=num_frames)
    out_e = np.where(counts > 0, esum / np.maximum(counts, 1), energy.min())
    return out_f0.astype(np.float32), out_e.astype(np.float32)


def accents(f0: np.ndarray, energy: np.ndarray, fps: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    """Frames of pitch/energy accents and their prominence in [0, 1]."""
    from scipy.signal import find_peaks  # scipy.signal: 1.5 s of import; here only

    voiced = f0 > 0
    if voiced.sum() < 3:
        return np.zeros(0, int), np.zeros(0)
    fz = np.where(voiced, (f0 - f0[voiced].mean()) / (f0[voiced].std() + 1e-3), 0.0)
    ez = (energy - energy.mean()) / (energy.std() + 1e-3)
    score = np.convolve(np.where(voiced, 0.6 * fz + 0.4 * ez, -1.0), np.ones(3) / 3, "same")
    peaks, props = find_peaks(score, height=0.3, distance=int(0.35 * fps))
    prominence = np.clip(props["peak_heights"] / 2.0, 0.1, 1.0)
    return peaks, prominence


def speech_mask(phones: list[Phone], num_frames: int, fps: float = 25.0) -> np.ndarray:
    m = np.zeros(num_frames, bool)
    for p in phones:
        if p.name != "sil":
            m[int(p.start * fps):int(np.ceil(p.end * fps))] = True
    return m


def _ou(n: int, std: float, tau_s: float, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Ornstein-Uhlenbeck path starting at 0 with stationary std `std`."""
    a = np.exp(-1.0 / (tau_s * fps))
    noise = rng.normal(0, std * np.sqrt(1 - a * a), n)
    out = np.zeros(n)
    for i in range(1, n):
        out[i] = a * out[i - 1] + noise[i]
    return out


def _pulse(n: int, at: np.ndarray, gain: np.ndarray, width_s: float, fps: float) -> np.ndarray:
    """Sum of smooth bumps (raised cosine of `width_s`) centred at frames `at`."""
    t = np.arange(n)[:, None]
    half = width_s * fps / 2
    d = np.clip((t - at[None]) / half, -1, 1)
    return (gain[None] * 0.5 * (1 + np.cos(np.pi * d))).sum(1) if len(at) else np.zeros(n)


def head_pose(f0: np.ndarray, energy: np.ndarray, speaking: np.ndarray, style: int,
              rng: np.random.Generator, fps: float = 25.0) -> np.ndarray:
    """(T, 3) yaw/pitch/roll in degrees relative to the first frame."""
    n = len(f0)
    drift_std, nod_gain, _ = POSE_STYLES[style]
    activity = np.convolve(speaking.astype(float), np.ones(int(fps)) / fps, "same")
    activity = 0.4 + 0.6 * activity                      # calmer in pauses
    pose = np.stack([_ou(n, s, tau, fps, rng) for s, tau in zip(drift_std, (1.6, 1.2, 2.0))], 1)
    pose *= activity[:, None]
    peaks, prom = accents(f0, energy, fps)
    lead = int(0.06 * fps)                                # the head moves slightly before the peak
    at = np.clip(peaks - lead, 0, n - 1)
    pose[:, 1] += _pulse(n, at, nod_gain * prom * rng.uniform(0.6, 1.2, len(at)), 0.4, fps)
    pose[:, 0] += _pulse(n, at, nod_gain * 0.5 * prom * rng.choice([-1, 1], len(at)), 0.6, fps)
    pose[:, 2] += _pulse(n, at, nod_gain * 0.25 * prom * rng.choice([-1, 1], len(at)), 0.6, fps)
    return (pose - pose[:1]).astype(np.float32)


def brow_raise(f0: np.ndarray, energy: np.ndarray, rng: np.random.Generator,
               fps: float = 25.0) -> np.ndarray:
    """(T,) browInnerUp: raised on the strongest accents."""
    peaks, prom = accents(f0, energy, fps)
    keep = prom > 0.5
    return np.clip(_pulse(len(f0), peaks[keep], 0.35 * prom[keep] * rng.uniform(0.5, 1, keep.sum()),
                          0.5, fps), 0, 1).astype(np.float32)


@dataclass(frozen=True)
class BlinkConfig:
    rate: float = 0.3            # blinks per second
    refractory_s: float = 1.0
    min_duration_s: float = 0.12
    max_duration_s: float = 0.32


def blink_curve(n: int, speaking: np.ndarray, rng: np.random.Generator, config: BlinkConfig,
                fps: float = 25.0) -> np.ndarray:
    """(T,) eyelid closure in [0, 1]: a renewal process, biased toward pause onsets."""
    out = np.zeros(n, np.float32)
    pause_onsets = np.flatnonzero(np.diff(speaking.astype(int)) == -1) + 1
    mean_gap = max(1.0 / max(config.rate, 1e-3) - config.refractory_s, 0.1)
    t = rng.uniform(0, 1.0 / max(config.rate, 1e-3))   # first blink time
    while t * fps < n:
        frame = int(t * fps)
        near = pause_onsets[(pause_onsets >= frame - 0.3 * fps) & (pause_onsets <= frame + 0.8 * fps)]
        if len(near) and rng.random() < 0.6:
            frame = int(near[0])                         # snap to the pause onset
        dur = rng.uniform(config.min_duration_s, config.max_duration_s)
        close, reopen = 0.4 * dur * fps, 0.6 * dur * fps
        peak = rng.uniform(0.85, 1.0)
        k = np.arange(n) - frame
        shape = np.where(k < 0, 1 + k / max(close, 1e-3), 1 - k / max(reopen, 1e-3))
        out = np.maximum(out, peak * np.clip(shape, 0, 1))
        t = frame / fps + config.refractory_s + rng.exponential(mean_gap)
    return out.astype(np.float32)

"""Waveform augmentation for the corpus: speed (which shifts pitch too), noise, reverb, gain."""

from __future__ import annotations

import numpy as np


def change_speed(samples: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (pitch moves with it, as a tape would)."""
    from scipy.signal import resample_poly  # scipy.signal: 1.5 s of import; here only

    up = 100
    down = int(round(up * factor))
    return resample_poly(samples, up, down).astype(np.float32)


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator,
              colour: str = "white") -> np.ndarray:
    noise = rng.normal(0, 1, len(samples))
    if colour == "pink":  # 1/f power: shape white noise in the frequency domain
        spec = np.fft.rfft(noise)
        spec /= np.sqrt(np.maximum(np.arange(len(spec)), 1))
        noise = np.fft.irfft(spec, len(samples))
    power = np.mean(samples ** 2) + 1e-10
    noise *= np.sqrt(power / (10 ** (snr_db / 10)) / (np.mean(noise ** 2) + 1e-12))
    return (samples + noise).astype(np.float32)


def add_reverb(samples: np.ndarray, rt60: float, wet: float, rng: np.random.Generator,
               sample_rate: int = 16000) -> np.ndarray:
    """Convolve with a synthetic room impulse response (decaying noise with a given RT60)."""
    from scipy.signal import fftconvolve

    n = int(rt60 * sample_rate)
    t = np.arange(n) / sample_rate
    rir = rng.normal(0, 1, n) * np.exp(-6.9 * t / rt60)
    rir[0] = 0.0
    rir /= np.sqrt((rir ** 2).sum()) + 1e-9
    wet_sig = fftconvolve(samples, rir)[: len(samples)]
    return ((1 - wet) * samples + wet * wet_sig).astype(np.float32)


def normalise(samples: np.ndarray, peak: float) -> np.ndarray:
    return (samples * (peak / (np.abs(samples).max() + 1e-9))).astype(np.float32)

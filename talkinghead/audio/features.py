"""Waveform -> per-video-frame speech features.

* `mel`: log-mel spectrogram with Wav2Lip's settings (Prajwal et al. 2020; SadTalker's audio
  encoder takes the same input): pre-emphasis 0.97, 800-sample STFT, hop 200 (80 Hz), 80 slaney
  mel bands 55-7600 Hz, dB scaled and normalised to [-4, 4]. Each video frame gets the 4 mel
  frames that cover it (interpolated), so the per-frame vector is 320 wide.
* `whisper`: the pretrained Whisper-base encoder (50 Hz), two frames averaged per video frame;
  its log-mel and encoder run in numpy (`audio/whisper_numpy.py`).
* `wav2vec2` / `hubert`: a user's local checkpoint (the papers' choice; none ship offline here).

`mel` and `whisper` never import torch (1.2-1.3 CPU s, half of `generate`'s path to its first
frame); only the user checkpoints' extractor does.

Every extractor encodes long audio in overlapping windows (never all at once), so memory is
bounded by the window, and stitches the windows by keeping each one's centre.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from talkinghead.errors import InputError
from talkinghead.types import AudioClip

SAMPLE_RATE = 16000


@dataclass
class AudioFeatures:
    """(T, D) float32 features, one row per video frame at `fps`."""

    values: np.ndarray
    fps: float
    kind: str

    def __len__(self) -> int:
        return len(self.values)

    @property
    def dim(self) -> int:
        return self.values.shape[1]


def num_frames(num_samples: int, fps: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Video frames covering `num_samples` of audio (the last partial frame counts)."""
    return max(1, int(np.ceil(num_samples / sample_rate * fps - 1e-6)))


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    return np.where(f < 1000.0, 3.0 * f / 200.0, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) * 27.0 / np.log(6.4))


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return np.where(m < 15.0, 200.0 * m / 3.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)))


def _mel_filters(n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_fft/2 + 1, n_mels) triangular Slaney-normalised filters on the Slaney mel scale
    (librosa's and transformers' mel_filter_bank(norm="slaney", mel_scale="slaney"), without
    importing transformers)."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))  # (M + 2,)
    fft = np.linspace(0, SAMPLE_RATE // 2, n_fft // 2 + 1)
    slopes = edges[None, :] - fft[:, None]                                          # (F, M + 2)
    width = np.diff(edges)
    down, up = -slopes[:, :-2] / width[:-1], slopes[:, 2:] / width[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return (filters * (2.0 / (edges[2:] - edges[:-2]))[None]).astype(np.float32)


@lru_cache(maxsize=4)
def _filters(n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, n_fft/2 + 1) contiguous, as the spectra are multiplied (shared: read-only)."""
    filters = np.ascontiguousarray(_mel_filters(n_fft, n_mels, fmin, fmax).T)
    filters.flags.writeable = False
    return filters


@lru_cache(maxsize=2)
def _hann(n: int) -> np.ndarray:
    """Periodic Hann window (torch.hann_window's default), float32 (shared: read-only)."""
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)
    window.flags.writeable = False
    return window


def _power_spectrum(samples: np.ndarray, n_fft: int, hop: int, frames: int) -> np.ndarray:
    """(frames, n_fft/2 + 1) float32 |STFT|^2 as torch.stft(center=True) frames it: the signal
    reflect-padded by n_fft/2 on each side, periodic Hann window, frame k starting at k hop."""
    x = np.pad(np.asarray(samples, np.float32), n_fft // 2, mode="reflect")
    windows = np.lib.stride_tricks.as_strided(x, (frames, n_fft), (hop * x.strides[0], x.strides[0]))
    spec = np.fft.rfft(windows * _hann(n_fft), axis=1)                   # (F, n_fft/2 + 1) complex64
    return spec.real ** 2 + spec.imag ** 2


def wav2lip_mel(samples: np.ndarray) -> np.ndarray:
    """(F, 80) normalised log-mel at 80 Hz (Wav2Lip's hparams), F = len // 200 + 1."""
    x = np.asarray(samples, np.float32)
    x = np.append(x[:1], x[1:] - np.float32(0.97) * x[:-1])              # pre-emphasis
    magnitude = np.sqrt(_power_spectrum(x, 800, 200, len(x) // 200 + 1))  # (F, 401)
    mel = _filters(800, 80, 55.0, 7600.0) @ magnitude.T                   # (80, F)
    db = np.float32(20) * np.log10(np.maximum(mel, np.float32(1e-5))) - np.float32(20)  # ref 20 dB
    norm = np.clip(np.float32(0.08) * (db + np.float32(100)) - np.float32(4), -4, 4)  # min -100 dB
    return np.ascontiguousarray(norm.T, np.float32)


def whisper_mel(samples: np.ndarray) -> np.ndarray:
    """(80, F) float32 Whisper log-mel at 100 Hz, F = len // 160: |STFT|^2 (n_fft 400, hop 160,
    periodic Hann, centred frames with reflect padding; the last frame dropped, as Whisper does),
    80 Slaney mel bands, log10 floored 8 below the peak, scaled to about [-1, 1]."""
    power = _power_spectrum(samples, 400, 160, len(samples) // 160)      # (F, 201)
    log = np.log10(np.maximum(_filters(400, 80, 0.0, 8000.0) @ power.T, np.float32(1e-10)))  # (80, F)
    log = np.maximum(log, log.max() - np.float32(8.0))
    return (log + np.float32(4.0)) / np.float32(4.0)


def windowed(encode: Callable[[np.ndarray], np.ndarray], samples: np.ndarray, out_rate: float,
             window_s: float, context_s: float) -> np.ndarray:
    """Encode `samples` in windows of `window_s` seconds plus `context_s` on each side; keep each
    window's centre. `encode` maps a waveform to (N, D) frames at `out_rate` Hz."""
    return np.concatenate(list(iter_windows(encode, samples, out_rate, window_s, context_s)))


def iter_windows(encode: Callable[[np.ndarray], np.ndarray], samples: np.ndarray, out_rate: float,
                 window_s: float, context_s: float) -> Iterator[np.ndarray]:
    """`windowed`, one window's centre frames at a time (in order; concatenated, the same)."""
    n = len(samples)
    hop = int(window_s * SAMPLE_RATE)
    ctx = int(context_s * SAMPLE_RATE)
    for start in range(0, max(n, 1), hop):
        lo, hi = max(0, start - ctx), min(n, start + hop + ctx)
        frames = encode(samples[lo:hi])
        a = int(round((start - lo) / SAMPLE_RATE * out_rate))
        b = a + int(round((min(start + hop, n) - start) / SAMPLE_RATE * out_rate))
        yield frames[a:min(b, len(frames))]


def _to_fps(frames: np.ndarray, in_rate: float, fps: float, t: int) -> np.ndarray:
    """Average/interpolate (N, D) frames at in_rate onto T video frames at fps."""
    centers = (np.arange(t) + 0.5) / fps * in_rate - 0.5
    idx = np.arange(len(frames))
    return np.stack([np.interp(centers, idx, frames[:, j]) for j in range(frames.shape[1])],
                    1).astype(np.float32)


def _to_fps_chunks(parts: Iterator[np.ndarray], in_rate: float, fps: float, t: int) -> Iterator[np.ndarray]:
    """`_to_fps` over frames that arrive in consecutive parts: each video frame is emitted as soon
    as both frames around its centre have arrived (bit-identical to `_to_fps` on the whole)."""
    centers = (np.arange(t) + 0.5) / fps * in_rate - 0.5
    carry, start, done = None, 0, 0          # carry: the last frame of the previous part
    parts = iter(parts)
    part = next(parts, None)
    while part is not None:
        following = next(parts, None)
        buf = part if carry is None else np.concatenate([carry, part])            # (N, D)
        base = start - (0 if carry is None else 1)                                 # index of buf[0]
        start += len(part)
        stop = t if following is None else int(np.searchsorted(centers, start - 1, side="right"))
        if stop > done:
            c, idx = centers[done:stop] - base, np.arange(len(buf))
            yield np.stack([np.interp(c, idx, buf[:, j]) for j in range(buf.shape[1])], 1).astype(np.float32)
            done = stop
        carry, part = buf[-1:], following


class FeatureExtractor:
    """Base: `extractor(clip, fps)` -> AudioFeatures."""

    kind = "base"
    dim = 0

    def __call__(self, clip: AudioClip, fps: float = 25.0) -> AudioFeatures:
        if clip.sample_rate != SAMPLE_RATE:
            raise InputError(f"features need {SAMPLE_RATE} Hz audio, got {clip.sample_rate} Hz")
        samples = clip.mono()
        t = num_frames(len(samples), fps)
        return AudioFeatures(self.frames(samples, fps, t), fps, self.kind)

    def chunks(self, clip: AudioClip, fps: float = 25.0) -> Iterator[np.ndarray]:
        """The rows of `self(clip, fps).values` in consecutive chunks, each yielded as soon as it is
        computed (a streaming pipeline starts on the first while the rest are encoded)."""
        if clip.sample_rate != SAMPLE_RATE:
            raise InputError(f"features need {SAMPLE_RATE} Hz audio, got {clip.sample_rate} Hz")
        samples = clip.mono()
        return self.frame_chunks(samples, fps, num_frames(len(samples), fps))

    def frame_chunks(self, samples: np.ndarray, fps: float, t: int) -> Iterator[np.ndarray]:
        yield self.frames(samples, fps, t)

    def frames(self, samples: np.ndarray, fps: float, t: int) -> np.ndarray:
        raise NotImplementedError


class MelExtractor(FeatureExtractor):
    kind = "mel"
    sub = 4          # mel frames per video frame
    dim = 80 * sub

    def frames(self, samples: np.ndarray, fps: float, t: int) -> np.ndarray:
        mel = windowed(wav2lip_mel, samples, 80.0, 30.0, 0.1)
        # sub-frame k of video frame i sits at (i + (k + 0.5) / sub) / fps seconds
        return _to_fps(mel, 80.0, fps * self.sub, t * self.sub).reshape(t, self.dim)


class _TransformerExtractor(FeatureExtractor):
    """Shared windowing for 50 Hz transformer encoders."""

    window_s = 8.0
    context_s = 1.0
    rate = 50.0

    def __init__(self, model) -> None:
        self.model = model.eval() if hasattr(model, "eval") else model  # torch modules: eval mode

    def frames(self, samples: np.ndarray, fps: float, t: int) -> np.ndarray:
        return np.concatenate(list(self.frame_chunks(samples, fps, t)))

    def frame_chunks(self, samples: np.ndarray, fps: float, t: int) -> Iterator[np.ndarray]:
        """One chunk of video frames per encoder window (`window_s` of audio)."""
        parts = iter_windows(self.encode, samples, self.rate, self.window_s, self.context_s)
        return _to_fps_chunks(parts, self.rate, fps, t)

    def encode(self, samples: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class WhisperExtractor(_TransformerExtractor):
    """Whisper-base features. The default encoder is the numpy one (no torch import); a torch
    `AudioEncoder` (or transformers' `WhisperEncoder`) passed in runs instead, on the same mel."""

    kind = "whisper"
    dim = 512

    def __init__(self, encoder=None) -> None:
        if encoder is None:
            from talkinghead.audio.whisper_numpy import load_numpy_encoder

            encoder = load_numpy_encoder()
        super().__init__(encoder)
        self.dim = self.model.config.d_model

    def encode(self, samples: np.ndarray) -> np.ndarray:
        pad = (-len(samples)) % 320 + 320 * (len(samples) < 320)  # whole encoder frames
        mel = whisper_mel(np.pad(samples, (0, pad)))                 # (80, 2N)
        if not hasattr(self.model, "parameters"):                     # the numpy encoder
            return self.model(mel)
        import torch

        from talkinghead.audio.whisper import encode_window

        with torch.inference_mode():
            return encode_window(self.model, torch.from_numpy(mel)[None])[0].numpy()


class Wav2Vec2Extractor(_TransformerExtractor):
    """A user's local wav2vec2 or HuBERT checkpoint (a transformers folder: config.json plus
    model.safetensors). Last hidden state, 50 Hz -> video frames."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(load_speech_checkpoint(path))
        self.kind = self.model.config.model_type
        self.dim = self.model.config.hidden_size

    def encode(self, samples: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.asarray(samples, np.float32))
        x = (x - x.mean()) / (x.std() + 1e-7)  # the processors' zero-mean unit-variance step
        pad = max(0, 400 - len(x))
        with torch.inference_mode():
            hidden = self.model(torch.nn.functional.pad(x, (0, pad))[None]).last_hidden_state[0]
        return hidden.numpy()


def load_speech_checkpoint(path: str | Path):
    """wav2vec2 / HuBERT from a local folder (safetensors only: pickled .bin files are refused)."""
    import json

    from safetensors.torch import load_file
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    path = Path(path)
    if not (path / "config.json").exists():
        raise InputError(f"{path}: not a speech checkpoint folder (needs config.json)")
    weights = path / "model.safetensors"
    if not weights.exists():
        raise InputError(f"{path}: needs model.safetensors (pickled .bin checkpoints are not "
                         "loaded; convert with safetensors)")
    config = json.loads((path / "config.json").read_text())
    kinds = {"wav2vec2": (Wav2Vec2Config, Wav2Vec2Model), "hubert": (HubertConfig, HubertModel)}
    if config.get("model_type") not in kinds:
        raise InputError(f"{path}: model_type {config.get('model_type')!r} is not wav2vec2 or hubert")
    config_cls, model_cls = kinds[config["model_type"]]
    model = model_cls(config_cls.from_dict(config))
    state = {k.split(".", 1)[1] if k.split(".", 1)[0] in ("wav2vec2", "hubert") else k: v
             for k, v in load_file(str(weights)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.startswith(("lm_head", "project", "quantizer"))]
    if missing or unexpected:
        raise InputError(f"{path}: weights do not match the config "
                         f"({len(missing)} missing, {len(unexpected)} unexpected keys)")
    return model.eval()


EXTRACTORS = {"mel": MelExtractor, "whisper": WhisperExtractor}


def get_extractor(kind: str, checkpoint: str | Path | None = None) -> FeatureExtractor:
    if kind in ("wav2vec2", "hubert"):
        if checkpoint is None:
            raise InputError(f"{kind} features need --speech-checkpoint PATH (no weights ship)")
        return Wav2Vec2Extractor(checkpoint)
    if kind not in EXTRACTORS:
        raise InputError(f"unknown audio features {kind!r}; choose mel, whisper, wav2vec2, hubert")
    return EXTRACTORS[kind]()

"""Weight-free lip-sync measures: mouth opening of the video vs the phones of its audio.

The audio is aligned to phones with pocketsphinx (its en-us acoustic model ships in the wheel;
10 ms resolution); the phones give a viseme opening track (`data.visemes`, the same
coarticulation model as the corpus). Measures, all on the re-analysed output video:

* Pearson r between measured opening and the viseme track (and the audio-visual offset, in
  frames, that maximises it; SyncNet's offset search, with the viseme track as the audio side);
* bilabial closures: share of p/b/m lasting >= 60 ms where the mouth reaches its lowest 30% of
  opening for the clip;
* pauses: share of frames inside silences >= 300 ms where the mouth is closed: the inner-lip
  gap is at most CLOSED (5% of the mouth width) above the portrait's own resting gap (a portrait
  smiling with parted lips cannot close further than its rest; pass rest_opening = 0 to demand
  touching lips).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from talkinghead.data.tts import Phone, normalize_phone
from talkinghead.data.visemes import BILABIALS, opening_track, phone_frames
from talkinghead.types import AudioClip

CLOSED = 0.05          # tolerance above the resting inner-lip gap (fraction of mouth width)


def align_phones(clip: AudioClip, transcript: str | None = None) -> list[Phone]:
    """Phone segments of 16 kHz speech (forced alignment to `transcript`, else to the ASR result)."""
    from pocketsphinx import Decoder

    if clip.sample_rate != 16000:
        raise ValueError("align_phones needs 16 kHz audio")
    pcm = (np.clip(clip.mono(), -1, 1) * 32767).astype(np.int16).tobytes()
    decoder = Decoder(samprate=16000, loglevel="FATAL")
    if transcript is None:
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        transcript = decoder.hyp().hypstr if decoder.hyp() else ""
    words = " ".join(w for w in transcript.lower().replace(",", " ").replace(".", " ").split()
                     if decoder.lookup_word(w))
    if not words:
        return [Phone("sil", 0.0, clip.duration)]
    try:
        decoder.set_align_text(words)
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        decoder.set_alignment()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        phones = [Phone(normalize_phone(p.name), p.start / 100.0, (p.start + p.duration) / 100.0)
                  for word in decoder.get_alignment() for p in word]
    except RuntimeError:       # no alignment path for this text: fall back to phone recognition
        phones = recognize_phones(pcm)
    if phones and phones[-1].end < clip.duration:
        phones.append(Phone("sil", phones[-1].end, clip.duration))
    return phones


def recognize_phones(pcm: bytes) -> list[Phone]:
    """Phone segments by pocketsphinx's all-phone decoder (phone n-gram; no transcript needed)."""
    from pocketsphinx import Decoder, get_model_path

    decoder = Decoder(samprate=16000, loglevel="FATAL", lm=None, lw=2.0, beam=1e-20, pbeam=1e-20,
                      allphone=get_model_path("en-us/en-us-phone.lm.bin"))
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    return [Phone(normalize_phone(s.word), s.start_frame / 100.0, (s.end_frame + 1) / 100.0)
            for s in decoder.seg()]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) < 1e-9 or np.std(b[ok]) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def best_offset(opening: np.ndarray, track: np.ndarray, max_shift: int = 15) -> tuple[int, float]:
    """Shift k (frames; > 0: video lags audio) maximising corr(opening[t + k], track[t])."""
    best = (0, -np.inf)
    for k in range(-max_shift, max_shift + 1):
        a = opening[max(k, 0):len(opening) + min(k, 0)]
        b = track[max(-k, 0):len(track) - max(k, 0)]
        n = min(len(a), len(b))
        r = _pearson(a[:n], b[:n])
        if np.isfinite(r) and r > best[1]:
            best = (k, r)
    return best[0], float(best[1])


@dataclass
class LipSyncReport:
    pearson_r: float
    offset_frames: int
    offset_r: float
    bilabial_hit_rate: float
    bilabials: int
    pause_closed_rate: float
    pauses: int

    def as_dict(self) -> dict:
        return asdict(self)


def lipsync_report(opening: np.ndarray, phones: list[Phone], fps: float = 25.0,
                   rest_opening: float = 0.0) -> LipSyncReport:
    n = len(opening)
    track = opening_track(phones, n, fps)
    r = _pearson(opening, track)
    k, rk = best_offset(opening, track)
    finite = opening[np.isfinite(opening)]
    low = np.percentile(finite, 30) if len(finite) else np.nan
    closures = phone_frames(phones, BILABIALS, fps, n, 0.06)
    hits = [np.nanmin(opening[a:b]) <= low for a, b in closures]
    pauses = []
    for a, b in phone_frames(phones, {"sil"}, fps, n, 0.3):
        inner = opening[a + 3:b - 2] if b - a > 6 else opening[a:b]   # skip 120/80 ms edges
        pauses.append(np.nanmean(inner <= rest_opening + CLOSED))
    return LipSyncReport(r, k, rk, float(np.mean(hits)) if hits else float("nan"), len(hits),
                         float(np.mean(pauses)) if pauses else float("nan"), len(pauses))

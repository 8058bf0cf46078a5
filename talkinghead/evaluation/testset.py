"""Real recorded speech for testing lip sync (never used for training).

CMU ARCTIC a0007 (bundled sample; free licence) and the eight spoken channel names of Debian's
alsa-utils (`/usr/share/sounds/alsa`, GPL), with their transcripts. `real_speech()` joins them
with 0.6 s pauses into one clip and aligns each part with pocketsphinx to its transcript.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkinghead.assets import SAMPLE_DIR
from talkinghead.data.tts import Phone
from talkinghead.types import AudioClip

ALSA = Path("/usr/share/sounds/alsa")
CLIPS = (
    (SAMPLE_DIR / "speech.wav", "and you always want to see it in the superlative degree"),
    *((ALSA / f"{name.replace(' ', '_')}.wav", name.lower())
      for name in ("Front Center", "Front Left", "Front Right", "Rear Center", "Rear Left",
                   "Rear Right", "Side Left", "Side Right")),
)


@dataclass
class RealSpeech:
    clip: AudioClip
    phones: list[Phone]
    parts: list[tuple[str, float, float]]      # (name, start s, end s)


def real_speech(pause_s: float = 0.6, include_alsa: bool = True) -> RealSpeech:
    from talkinghead.evaluation.lipsync import align_phones
    from talkinghead.io.audio import read_audio

    pieces, phones, parts, t = [], [], [], 0.0
    gap = np.zeros(int(pause_s * 16000), np.float32)
    for path, text in CLIPS:
        if not path.exists() or (not include_alsa and path.parent == ALSA):
            continue
        clip = read_audio(path)
        if pieces:
            pieces.append(gap)
            phones.append(Phone("sil", t, t + pause_s))
            t += pause_s
        for p in align_phones(clip, text):
            phones.append(Phone(p.name, p.start + t, p.end + t))
        pieces.append(clip.mono())
        parts.append((path.stem, t, t + clip.duration))
        t += clip.duration
    samples = np.concatenate(pieces)[None]
    return RealSpeech(AudioClip(samples, 16000), phones, parts)

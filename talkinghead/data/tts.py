"""Text-to-speech voices that report phone timings: flite and festival (Debian packages).

`Voice.speak(text)` -> `Utterance`: 16 kHz mono speech plus (phone, start, end) segments in
seconds, phones in lower-case ARPAbet without stress ("sil" for pauses). These timings are the
ground truth the speech-motion corpus is built from (as SadTalker distils lip-only targets from
a teacher; here the teacher is the synthesiser itself).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkinghead.errors import TalkingHeadError

SILENCE = {"pau", "sil", "h#", "#", "sp", "spn", "nsn", "brth"}


@dataclass
class Phone:
    name: str
    start: float
    end: float


@dataclass
class Utterance:
    text: str
    voice: str
    samples: np.ndarray        # (n,) float32, 16 kHz
    phones: list[Phone]

    @property
    def duration(self) -> float:
        return len(self.samples) / 16000.0


def normalize_phone(name: str) -> str:
    name = name.strip().lower().rstrip("012")
    return "sil" if name in SILENCE or not name else name


def _read_wav(path: Path) -> np.ndarray:
    from talkinghead.io.audio import read_audio

    return read_audio(path).mono()


def _phones_from_ends(pairs: list[tuple[str, float]]) -> list[Phone]:
    phones, start = [], 0.0
    for name, end in pairs:
        if end > start:
            phones.append(Phone(normalize_phone(name), start, end))
        start = max(start, end)
    return phones


@dataclass(frozen=True)
class Voice:
    name: str           # e.g. "flite:slt"
    engine: str         # "flite" | "festival"
    voice: str          # the engine's own voice name

    def speak(self, text: str) -> Utterance:
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "out.wav"
            if self.engine == "flite":
                pairs = self._flite(text, wav)
            else:
                pairs = self._festival(text, wav, Path(tmp))
            samples = _read_wav(wav)
        phones = _phones_from_ends(pairs)
        if phones and phones[-1].end < len(samples) / 16000.0:
            phones.append(Phone("sil", phones[-1].end, len(samples) / 16000.0))
        return Utterance(text, self.name, samples, phones)

    def _flite(self, text: str, wav: Path) -> list[tuple[str, float]]:
        out = subprocess.run(["flite", "-voice", self.voice, "-t", text, "-o", str(wav), "-psdur"],
                             capture_output=True, text=True, check=True).stdout
        pairs = []
        for token in out.split():
            name, _, end = token.rpartition(":")
            try:
                pairs.append((name, float(end)))
            except ValueError:
                continue
        return pairs

    def _festival(self, text: str, wav: Path, tmp: Path) -> list[tuple[str, float]]:
        segs = tmp / "out.segs"
        quoted = text.replace("\\", " ").replace('"', " ")
        script = (f"({self.voice})\n(set! utt (Utterance Text \"{quoted}\"))\n(utt.synth utt)\n"
                  f"(utt.save.wave utt \"{wav}\" 'riff)\n(utt.save.segs utt \"{segs}\")\n")
        (tmp / "run.scm").write_text(script)
        subprocess.run(["festival", "-b", str(tmp / "run.scm")], capture_output=True, check=True)
        pairs = []
        for line in segs.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and not line.startswith("#"):
                pairs.append((parts[2], float(parts[0])))
        return pairs


ALL_VOICES = (
    Voice("flite:slt", "flite", "slt"), Voice("flite:awb", "flite", "awb"),
    Voice("flite:rms", "flite", "rms"), Voice("flite:kal16", "flite", "kal16"),
    Voice("flite:kal", "flite", "kal"),
    Voice("festival:ked", "festival", "voice_ked_diphone"),
    Voice("festival:kal", "festival", "voice_kal_diphone"),
    Voice("festival:slt_hts", "festival", "voice_cmu_us_slt_arctic_hts"),
)


def available_voices() -> list[Voice]:
    """The voices whose engine is installed (apt-get install flite festival festvox-...)."""
    have = {e for e in ("flite", "festival") if shutil.which(e)}
    voices = [v for v in ALL_VOICES if v.engine in have]
    if not voices:
        raise TalkingHeadError("no TTS engine found: apt-get install flite festival "
                               "festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts")
    return voices

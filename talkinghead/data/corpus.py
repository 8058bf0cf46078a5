"""Speech-motion corpus: TTS sentences with phone-derived mouth targets, blinks and head motion.

No talking video with audio exists offline here, so supervision is built from speech whose
phone timings are known (the synthesisers report them), the way SadTalker distils lip targets
from a teacher. Per utterance:

* audio: one TTS voice, optionally sped up/down (timings follow), with noise, reverb and gain;
* expression (T, 20): coarticulated viseme targets on 17 mouth blendshapes (`visemes.py`),
  eyeBlinkLeft/Right from a blink process, browInnerUp on accents (`prosody.py`);
* pose (T, 3): yaw/pitch/roll relative to the first frame, accents + drift, a pose style id;
* features: per-video-frame speech features (whisper and/or mel), computed once at build time.

A few percent of items are non-speech (silence, noise, tones) with a mouth at rest, so models
learn to keep the face still when nobody speaks. One voice is held out for validation.
Shards are plain .npz files (no pickle) plus manifest.json; generated corpora are not committed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from talkinghead.audio.features import num_frames
from talkinghead.data import augment
from talkinghead.data.prosody import (NUM_STYLES, BlinkConfig, blink_curve, brow_raise, head_pose,
                                      pitch_energy, speech_mask)
from talkinghead.data.tts import ALL_VOICES, Phone, Utterance, Voice, available_voices
from talkinghead.data.visemes import MOUTH_CHANNELS, viseme_track
from talkinghead.errors import InputError

EXPRESSION_CHANNELS = MOUTH_CHANNELS + ("eyeBlinkLeft", "eyeBlinkRight", "browInnerUp")
POSE_CHANNELS = ("yaw", "pitch", "roll")
FPS = 25.0
TEXT_SOURCES = ("/usr/share/common-licenses",)
_FALLBACK_TEXT = (
    "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. "
    "Peter Piper picked a peck of pickled peppers. How much wood would a woodchuck chuck. "
    "A big black bug bit a big black bear. Please bring me my blue umbrella before it rains. "
)


@dataclass
class CorpusConfig:
    hours: float = 2.2               # speech, all voices together (>= 2 h after non-speech items)
    holdout: str = "flite:rms"       # validation voice
    val_fraction: float = 0.08       # share of the hours spoken by the held-out voice
    features: tuple[str, ...] = ("whisper", "mel")
    augment_prob: float = 0.6
    nonspeech_prob: float = 0.04
    max_words: int = 28
    shard_frames: int = 60000
    seed: int = 0
    voices: tuple[str, ...] = ()     # empty: every available voice


@dataclass
class Item:
    """One corpus item before features: audio and its motion targets at 25 fps."""

    samples: np.ndarray
    expression: np.ndarray          # (T, 20)
    pose: np.ndarray                # (T, 3) degrees
    style: int
    blink_rate: float
    voice: str
    text: str
    speech: bool = True
    phones: list[Phone] = field(default_factory=list)


def sentences(max_words: int = 28) -> list[str]:
    """English sentences from text files every Debian system has (licence texts)."""
    text = ""
    for src in TEXT_SOURCES:
        for p in sorted(Path(src).glob("*")) if Path(src).is_dir() else []:
            if p.is_file():
                text += " " + p.read_text(errors="ignore")
    text = text or _FALLBACK_TEXT
    text = re.sub(r"\s+", " ", re.sub(r"[^A-Za-z0-9,.;:!?' ]+", " ", text))
    out, seen = [], set()
    for s in re.split(r"(?<=[.;:!?])\s+", text):
        words = s.split()
        if len(words) < 4 or sum(w.isupper() and len(w) > 1 for w in words) > len(words) // 3:
            continue
        for i in range(0, len(words), max_words):
            chunk = " ".join(words[i:i + max_words])
            if len(chunk.split()) >= 4 and chunk.lower() not in seen:
                seen.add(chunk.lower())
                out.append(chunk)
    return out


def targets(utt: Utterance, samples_for_prosody: np.ndarray, rng: np.random.Generator,
            n: int) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Motion targets for an utterance: expression (n, 20), pose (n, 3), style, blink rate."""
    articulation = rng.uniform(0.9, 1.5)
    mouth = viseme_track(utt.phones, n, FPS, articulation)
    speaking = speech_mask(utt.phones, n, FPS)
    f0, energy = pitch_energy(samples_for_prosody, n, FPS)
    style = int(rng.integers(NUM_STYLES))
    rate = float(rng.uniform(0.15, 0.5))
    blink = blink_curve(n, speaking, rng, BlinkConfig(rate=rate), FPS)
    asym = rng.uniform(0.92, 1.0)
    expression = np.concatenate([mouth, blink[:, None], (blink * asym)[:, None],
                                 brow_raise(f0, energy, rng, FPS)[:, None]], 1)
    pose = head_pose(f0, energy, speaking, style, rng, FPS)
    return expression.astype(np.float32), pose, style, rate


def speech_item(voice: Voice, text: str, rng: np.random.Generator, augment_prob: float) -> Item:
    utt = voice.speak(text)
    samples = utt.samples
    if rng.random() < augment_prob:
        factor = rng.uniform(0.85, 1.18)
        samples = augment.change_speed(samples, factor)
        utt.phones = [Phone(p.name, p.start / factor, p.end / factor) for p in utt.phones]
    clean = samples
    if rng.random() < augment_prob:
        samples = augment.add_reverb(samples, rng.uniform(0.15, 0.6), rng.uniform(0.1, 0.5), rng)
    if rng.random() < augment_prob:
        samples = augment.add_noise(samples, rng.uniform(12, 35), rng, rng.choice(["white", "pink"]))
    samples = augment.normalise(samples, rng.uniform(0.2, 0.95))
    n = num_frames(len(samples), FPS)
    expression, pose, style, rate = targets(utt, clean, rng, n)
    return Item(samples, expression, pose, style, rate, voice.name, text, True, utt.phones)


def nonspeech_item(rng: np.random.Generator) -> Item:
    """Silence, noise or a tone sequence ("music") with the mouth at rest."""
    n_samples = int(rng.uniform(2, 8) * 16000)
    kind = rng.choice(["silence", "noise", "music"])
    t = np.arange(n_samples) / 16000
    if kind == "silence":
        samples = rng.normal(0, 1e-4, n_samples)
    elif kind == "noise":
        samples = augment.add_noise(np.zeros(n_samples, np.float32) + 1e-3, -20, rng, "pink")
    else:
        notes = rng.uniform(110, 880, int(t[-1] * 4) + 1)
        samples = np.sin(2 * np.pi * notes[(t * 4).astype(int)] * t) * 0.5
    samples = augment.normalise(np.asarray(samples, np.float32), rng.uniform(0.05, 0.8)) \
        if kind != "silence" else samples.astype(np.float32)
    n = num_frames(n_samples, FPS)
    rate = float(rng.uniform(0.15, 0.5))
    style = int(rng.integers(NUM_STYLES))
    blink = blink_curve(n, np.zeros(n, bool), rng, BlinkConfig(rate=rate), FPS)
    expression = np.zeros((n, len(EXPRESSION_CHANNELS)), np.float32)
    expression[:, len(MOUTH_CHANNELS)] = expression[:, len(MOUTH_CHANNELS) + 1] = blink
    f0 = np.zeros(n, np.float32)
    pose = head_pose(f0, np.zeros(n, np.float32), np.zeros(n, bool), style, rng, FPS) * 0.5
    return Item(samples, expression, pose, style, rate, "nonspeech", str(kind), False)


def plan(config: CorpusConfig) -> list[tuple[str, str, int]]:
    """[(voice name, text, seed)]: every voice speaks different sentences; the held-out voice
    gets val_fraction of the hours. About 2.7 words per second of TTS speech (measured on a full build)."""
    voices = [v.name for v in available_voices()]
    if config.voices:
        voices = [v for v in voices if v in config.voices]
    if config.holdout not in voices:
        raise InputError(f"held-out voice {config.holdout} is not available ({', '.join(voices)})")
    train = [v for v in voices if v != config.holdout]
    texts = sentences(config.max_words)
    rng = np.random.default_rng(config.seed)
    words_total = config.hours * 3600 * 2.7
    budget = {v: words_total * (1 - config.val_fraction) / len(train) for v in train}
    budget[config.holdout] = words_total * config.val_fraction
    jobs = []
    for v in voices:
        order = rng.permutation(len(texts))
        words, i = 0.0, 0
        while words < budget[v]:
            text = texts[order[i % len(order)]]
            jobs.append((v, text, int(rng.integers(2**31))))
            words += len(text.split())
            i += 1
    rng.shuffle(jobs)
    return jobs


def make_item(job: tuple[str, str, int], augment_prob: float, nonspeech_prob: float) -> Item:
    voice_name, text, seed = job
    rng = np.random.default_rng(seed)
    if rng.random() < nonspeech_prob:
        item = nonspeech_item(rng)
        item.voice = f"nonspeech:{voice_name}"  # split follows the voice it replaced
        return item
    voice = next(v for v in ALL_VOICES if v.name == voice_name)  # plan() checked it is installed
    return speech_item(voice, text, rng, augment_prob)


class ShardWriter:
    """Accumulates items and writes {split}-{k:03d}.npz shards of about shard_frames frames."""

    def __init__(self, root: Path, split: str, shard_frames: int) -> None:
        self.root, self.split, self.shard_frames = root, split, shard_frames
        self.items: list[tuple[Item, dict[str, np.ndarray]]] = []
        self.frames = 0
        self.count = 0
        self.seconds = 0.0
        self.speech_seconds = 0.0

    def add(self, item: Item, features: dict[str, np.ndarray]) -> None:
        self.items.append((item, features))
        self.frames += len(item.expression)
        self.seconds += len(item.samples) / 16000
        self.speech_seconds += len(item.samples) / 16000 if item.speech else 0.0
        if self.frames >= self.shard_frames:
            self.flush()

    def flush(self) -> None:
        if not self.items:
            return
        lengths = [len(i.expression) for i, _ in self.items]
        arrays = {
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "expression": np.concatenate([i.expression for i, _ in self.items]),
            "pose": np.concatenate([i.pose for i, _ in self.items]),
            "style": np.array([i.style for i, _ in self.items], np.int64),
            "blink_rate": np.array([i.blink_rate for i, _ in self.items], np.float32),
            "speech": np.array([i.speech for i, _ in self.items]),
            "voice": np.array([i.voice for i, _ in self.items]),
        }
        for kind in self.items[0][1]:
            arrays[f"features_{kind}"] = np.concatenate([f[kind] for _, f in self.items]).astype(np.float16)
        path = self.root / f"{self.split}-{self.count:03d}.npz"
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
        self.count += 1
        self.items, self.frames = [], 0


def item_features(item: Item, extractors: dict) -> dict[str, np.ndarray]:
    from talkinghead.types import AudioClip

    clip = AudioClip(item.samples[None], 16000)
    out = {}
    for kind, extractor in extractors.items():
        values = extractor(clip, FPS).values
        n = len(item.expression)
        if len(values) < n:
            values = np.concatenate([values, np.repeat(values[-1:], n - len(values), 0)])
        out[kind] = values[:n]
    return out


def build_corpus(out_dir: str | Path, config: CorpusConfig = CorpusConfig(), workers: int = 1,
                 progress: bool = True) -> dict:
    """Synthesise, annotate and featurise the corpus into out_dir; returns the manifest."""
    from multiprocessing import Pool

    from tqdm import tqdm

    from talkinghead.audio.features import get_extractor

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    jobs = plan(config)
    extractors = {k: get_extractor(k) for k in config.features}
    writers = {s: ShardWriter(root, s, config.shard_frames) for s in ("train", "val")}

    def items() -> Iterator[Item]:
        args = [(j, config.augment_prob, config.nonspeech_prob) for j in jobs]
        if workers > 1:
            with Pool(workers) as pool:
                yield from pool.imap(_make_item_star, args, chunksize=4)
        else:
            yield from map(_make_item_star, args)

    for item in tqdm(items(), total=len(jobs), desc="corpus", unit="utt", disable=not progress):
        split = "val" if item.voice.endswith(config.holdout) else "train"
        writers[split].add(item, item_features(item, extractors))
    for w in writers.values():
        w.flush()
    manifest = {
        "config": asdict(config),
        "fps": FPS,
        "expression_channels": list(EXPRESSION_CHANNELS),
        "pose_channels": list(POSE_CHANNELS),
        "feature_dims": {k: e.dim for k, e in extractors.items()},
        "splits": {s: {"shards": w.count, "seconds": round(w.seconds, 1),
                       "speech_seconds": round(w.speech_seconds, 1)} for s, w in writers.items()},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _make_item_star(args) -> Item:
    return make_item(*args)

"""Phones -> mouth blendshape targets with coarticulation (Cohen & Massaro's dominance model).

Each phone has a target on the mouth channels and a dominance function peaking at its centre,
alpha * exp(-theta * |t - centre|). A channel's value at time t is the dominance-weighted mean
of the targets of the phones around t, so neighbours blend (a rounded vowel pulls the lips of
the consonant before it) instead of one box per phone. Bilabials (p, b, m) get a strong, narrow
dominance on the lips and jaw, so the lips close even between open vowels. Silence is a phone
with the rest pose as its target; long pauses therefore close the mouth.

The same function gives the corpus its training targets (from TTS phone timings) and the
evaluation its viseme track of a real recording (from a pocketsphinx alignment).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from talkinghead.data.tts import Phone

MOUTH_CHANNELS = (
    "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugUpper", "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft",
    "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
)
_C = {n: i for i, n in enumerate(MOUTH_CHANNELS)}

# viseme class: (targets, alpha (strength), theta (1/s: larger = narrower))
_VISEMES: dict[str, tuple[dict[str, float], float, float]] = {
    "sil": ({}, 0.6, 6.0),
    "bilabial": ({"jawOpen": 0.02, "mouthPressLeft": 0.35, "mouthPressRight": 0.35,
                  "mouthRollLower": 0.15, "mouthRollUpper": 0.1}, 4.0, 30.0),
    "labiodental": ({"jawOpen": 0.08, "mouthRollLower": 0.45, "mouthUpperUpLeft": 0.2,
                     "mouthUpperUpRight": 0.2}, 2.0, 25.0),
    "dental": ({"jawOpen": 0.14, "mouthStretchLeft": 0.1, "mouthStretchRight": 0.1}, 1.0, 20.0),
    "alveolar": ({"jawOpen": 0.12, "mouthStretchLeft": 0.12, "mouthStretchRight": 0.12}, 0.8, 20.0),
    "postalveolar": ({"jawOpen": 0.12, "mouthFunnel": 0.35, "mouthPucker": 0.25}, 1.2, 20.0),
    "velar": ({"jawOpen": 0.2}, 0.6, 18.0),
    "rhotic": ({"jawOpen": 0.16, "mouthPucker": 0.3, "mouthFunnel": 0.2}, 0.9, 18.0),
    "w": ({"jawOpen": 0.08, "mouthPucker": 0.6, "mouthFunnel": 0.25}, 1.5, 20.0),
    "y": ({"jawOpen": 0.14, "mouthStretchLeft": 0.25, "mouthStretchRight": 0.25}, 0.8, 20.0),
    "aa": ({"jawOpen": 0.62, "mouthLowerDownLeft": 0.3, "mouthLowerDownRight": 0.3}, 1.0, 12.0),
    "ae": ({"jawOpen": 0.5, "mouthStretchLeft": 0.25, "mouthStretchRight": 0.25,
            "mouthLowerDownLeft": 0.25, "mouthLowerDownRight": 0.25}, 1.0, 12.0),
    "ah": ({"jawOpen": 0.45, "mouthLowerDownLeft": 0.2, "mouthLowerDownRight": 0.2}, 1.0, 12.0),
    "ao": ({"jawOpen": 0.5, "mouthFunnel": 0.35, "mouthPucker": 0.15}, 1.0, 12.0),
    "eh": ({"jawOpen": 0.36, "mouthStretchLeft": 0.22, "mouthStretchRight": 0.22}, 1.0, 12.0),
    "er": ({"jawOpen": 0.22, "mouthFunnel": 0.3, "mouthPucker": 0.3}, 1.0, 12.0),
    "ey": ({"jawOpen": 0.3, "mouthStretchLeft": 0.3, "mouthStretchRight": 0.3,
            "mouthSmileLeft": 0.1, "mouthSmileRight": 0.1}, 1.0, 12.0),
    "ih": ({"jawOpen": 0.25, "mouthStretchLeft": 0.3, "mouthStretchRight": 0.3}, 1.0, 12.0),
    "iy": ({"jawOpen": 0.16, "mouthStretchLeft": 0.4, "mouthStretchRight": 0.4,
            "mouthSmileLeft": 0.2, "mouthSmileRight": 0.2}, 1.0, 12.0),
    "ow": ({"jawOpen": 0.36, "mouthFunnel": 0.45, "mouthPucker": 0.35}, 1.0, 12.0),
    "uh": ({"jawOpen": 0.24, "mouthPucker": 0.35, "mouthFunnel": 0.2}, 1.0, 12.0),
    "uw": ({"jawOpen": 0.14, "mouthPucker": 0.7, "mouthFunnel": 0.3}, 1.2, 12.0),
    "ax": ({"jawOpen": 0.3}, 0.7, 14.0),
}
# diphthongs: (first, second) viseme halves
_DIPHTHONGS = {"aw": ("aa", "uw"), "ay": ("aa", "iy"), "oy": ("ao", "iy")}
_PHONE_CLASS = {
    **{p: "bilabial" for p in ("p", "b", "m", "em")},
    **{p: "labiodental" for p in ("f", "v")},
    **{p: "dental" for p in ("th", "dh")},
    **{p: "alveolar" for p in ("t", "d", "n", "l", "s", "z", "en", "el", "dx", "nx")},
    **{p: "postalveolar" for p in ("sh", "zh", "ch", "jh")},
    **{p: "velar" for p in ("k", "g", "ng", "hh")},
    **{p: "rhotic" for p in ("r",)},
    "w": "w", "y": "y", "ax": "ax", "axr": "er", "ix": "ih", "ux": "uw",
    **{v: v for v in ("aa", "ae", "ah", "ao", "eh", "er", "ey", "ih", "iy", "ow", "uh", "uw")},
    "sil": "sil",
}
VOWELS = set(_VISEMES) - {"sil", "bilabial", "labiodental", "dental", "alveolar",
                          "postalveolar", "velar", "rhotic", "w", "y"} | set(_DIPHTHONGS)
BILABIALS = {"p", "b", "m", "em"}


def _target(name: str) -> np.ndarray:
    v = np.zeros(len(MOUTH_CHANNELS), np.float32)
    for ch, value in _VISEMES[name][0].items():
        v[_C[ch]] = value
    return v


def _segments(phones: Sequence[Phone]):
    """(centre, half-width, viseme name) per phone; diphthongs become two halves."""
    for p in phones:
        mid, half = 0.5 * (p.start + p.end), 0.5 * (p.end - p.start)
        if p.name in _DIPHTHONGS:
            a, b = _DIPHTHONGS[p.name]
            yield p.start + 0.5 * half, 0.5 * half, a
            yield p.end - 0.5 * half, 0.5 * half, b
        else:
            yield mid, half, _PHONE_CLASS.get(p.name, "ax")


def viseme_track(phones: Sequence[Phone], num_frames: int, fps: float = 25.0,
                 articulation: float = 1.0, oversample: int = 4) -> np.ndarray:
    """(T, len(MOUTH_CHANNELS)) mouth targets at `fps` (each frame averages `oversample` points).

    articulation scales how far the mouth moves (a speaker's style), not the closures.
    """
    t = (np.arange(num_frames * oversample) + 0.5) / (fps * oversample)
    segs = list(_segments(phones))
    if not segs:
        return np.zeros((num_frames, len(MOUTH_CHANNELS)), np.float32)
    centres = np.array([s[0] for s in segs])[:, None]
    halves = np.array([s[1] for s in segs])[:, None]
    alpha = np.array([_VISEMES[s[2]][1] for s in segs])[:, None]
    theta = np.array([_VISEMES[s[2]][2] for s in segs])[:, None]
    targets = np.stack([_target(s[2]) for s in segs])                      # (S, C)
    # dominance is flat inside the phone and decays outside it
    dist = np.maximum(np.abs(t[None] - centres) - 0.5 * halves, 0.0)       # (S, N)
    dom = alpha * np.exp(-theta * dist) + 1e-6
    value = (dom.T @ targets) / dom.sum(0)[:, None]                         # (N, C)
    value *= articulation
    return value.reshape(num_frames, oversample, -1).mean(1).astype(np.float32)


def opening_track(phones: Sequence[Phone], num_frames: int, fps: float = 25.0) -> np.ndarray:
    """(T,) the jaw-open component of the viseme track: how open the mouth should be."""
    return viseme_track(phones, num_frames, fps)[:, _C["jawOpen"]]


def phone_frames(phones: Sequence[Phone], names: set[str], fps: float, num_frames: int,
                 min_duration: float = 0.0) -> list[tuple[int, int]]:
    """[(first, last+1)] frame ranges of phones in `names` lasting >= min_duration seconds."""
    out = []
    for p in phones:
        if p.name in names and p.end - p.start >= min_duration - 1e-9:
            a = int(np.floor(p.start * fps))
            b = max(a + 1, int(np.ceil(p.end * fps)))
            out.append((max(0, a), min(num_frames, b)))
    return [r for r in out if r[1] > r[0]]

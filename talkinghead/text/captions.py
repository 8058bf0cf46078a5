"""Expression captions derived from motion statistics (Hallo2's textual prompts, A.2).

Hallo2 trains its second stage with textual prompts that describe the clip's expression. Our
speech-motion corpus (`data/corpus.py`) has no captions, so each training window gets one from
its own expression statistics: the window's mean smile (mouthSmileLeft/Right), brow raise
(browInnerUp) and jaw opening, compared with thresholds taken from the corpus's windows.
A window whose smile is above the corpus's usual range reads "smiling", one whose brows are
raised (with the jaw dropped) "surprised", the rest "neutral". Each class has several phrasings;
the held-out ones are never trained on (the benchmark uses them to test generalisation through
the sentence embedding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkinghead.data.corpus import EXPRESSION_CHANNELS

CLASSES = ("neutral", "smiling", "surprised")
PHRASES: dict[str, tuple[str, ...]] = {
    "neutral": ("neutral", "a neutral face", "calm and expressionless", "speaking with a straight face",
                "a relaxed, neutral expression", "no particular emotion", "a plain, serious look"),
    "smiling": ("smiling", "a smiling person", "she smiles while she talks", "a happy face with a smile",
                "he speaks with a big smile", "cheerful and smiling", "a warm, friendly smile"),
    "surprised": ("surprised", "a surprised person", "raised eyebrows in surprise", "he looks amazed",
                  "astonished, with the eyebrows up", "shocked and surprised", "wide-eyed surprise"),
}
HELD_OUT: dict[str, tuple[str, ...]] = {
    "neutral": ("an expressionless face",),
    "smiling": ("grinning happily",),
    "surprised": ("looking astonished",),
}
_CH = {n: i for i, n in enumerate(EXPRESSION_CHANNELS)}
SMILE = (_CH["mouthSmileLeft"], _CH["mouthSmileRight"])
BROW = _CH["browInnerUp"]
JAW = _CH["jawOpen"]


@dataclass(frozen=True)
class ExpressionStats:
    """Per-window means (blendshape units) of what the captions speak about."""

    smile: np.ndarray    # (N,)
    brow: np.ndarray     # (N,)
    jaw: np.ndarray      # (N,)


def window_stats(expression: np.ndarray, mask: np.ndarray | None = None) -> ExpressionStats:
    """expression (N, T, 20) [+ mask (N, T)] -> per-window means."""
    e = np.asarray(expression, np.float32)
    m = np.ones(e.shape[:2], np.float32) if mask is None else np.asarray(mask, np.float32)
    mean = lambda x: (x * m).sum(1) / np.maximum(m.sum(1), 1)  # noqa: E731
    return ExpressionStats(mean(e[..., list(SMILE)].mean(-1)), mean(e[..., BROW]), mean(e[..., JAW]))


@dataclass(frozen=True)
class CaptionRules:
    """Thresholds on the window statistics (set from a corpus's own windows)."""

    smile: float = 0.15
    brow: float = 0.25
    jaw: float = 0.05
    quantile: float = 0.98

    @classmethod
    def from_corpus(cls, stats: ExpressionStats, quantile: float = 0.98) -> CaptionRules:
        """Smiling / surprised mean: above `quantile` of the corpus's own windows."""
        return cls(float(np.quantile(stats.smile, quantile)), float(np.quantile(stats.brow, quantile)),
                   float(np.quantile(stats.jaw, 0.5)), quantile)

    def classify(self, stats: ExpressionStats) -> np.ndarray:
        """(N,) class index into CLASSES; the larger excess over its threshold wins."""
        smile_excess = stats.smile - self.smile
        brow_excess = np.where(stats.jaw > self.jaw, stats.brow - self.brow, -np.inf)
        out = np.zeros(len(stats.smile), np.int64)
        out[(smile_excess > 0) & (smile_excess >= brow_excess)] = CLASSES.index("smiling")
        out[(brow_excess > 0) & (brow_excess > smile_excess)] = CLASSES.index("surprised")
        return out


def caption_table() -> tuple[list[str], np.ndarray]:
    """All training phrasings and their class index."""
    texts, labels = [], []
    for k, name in enumerate(CLASSES):
        texts += PHRASES[name]
        labels += [k] * len(PHRASES[name])
    return texts, np.array(labels, np.int64)

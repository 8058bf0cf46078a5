"""Windows of the speech-motion corpus for training the motion models.

Shards are loaded into memory (features as float16: ~1 KB per frame for Whisper). A batch is
`window` frames cut from random utterances; utterances shorter than the window are padded and
masked. Pose is made relative to the window's first frame (how generation starts from a
portrait); `pose_start` keeps where the window began (PoseVAE conditions on it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from talkinghead.errors import InputError


@dataclass
class MotionBatch:
    audio: torch.Tensor        # (B, L, A) float32
    expression: torch.Tensor   # (B, L, 20)
    pose: torch.Tensor         # (B, L, 3) relative to the window's first frame, degrees
    pose_start: torch.Tensor   # (B, 3) pose of the first frame relative to the utterance start
    mask: torch.Tensor         # (B, L) bool, real frames
    style: torch.Tensor        # (B,) long
    blink_rate: torch.Tensor   # (B,) float


class MotionCorpus:
    def __init__(self, root: str | Path, split: str, feature: str = "whisper") -> None:
        root = Path(root)
        shards = sorted(root.glob(f"{split}-*.npz"))
        if not shards:
            raise InputError(f"{root}: no {split} shards (build one with `talkinghead corpus build`)")
        self.manifest = json.loads((root / "manifest.json").read_text()) \
            if (root / "manifest.json").exists() else {}
        feats, expr, pose, style, rate, starts, lengths = [], [], [], [], [], [], []
        base = 0
        for path in shards:
            with np.load(path, allow_pickle=False) as z:
                key = f"features_{feature}"
                if key not in z.files:
                    raise InputError(f"{path}: no {feature} features in this corpus")
                feats.append(z[key])
                expr.append(z["expression"])
                pose.append(z["pose"])
                style.append(z["style"])
                rate.append(z["blink_rate"])
                off = z["offsets"]
                starts.append(off[:-1] + base)
                lengths.append(np.diff(off))
                base += int(off[-1])
        self.features = np.concatenate(feats)
        self.expression = np.concatenate(expr).astype(np.float32)
        self.pose = np.concatenate(pose).astype(np.float32)
        self.style = np.concatenate(style)
        self.blink_rate = np.concatenate(rate).astype(np.float32)
        self.starts = np.concatenate(starts)
        self.lengths = np.concatenate(lengths)
        self.feature_dim = self.features.shape[1]

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def frames(self) -> int:
        return int(self.lengths.sum())

    def stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-channel mean/std of expression and (window-relative) pose."""
        pose_rel = self.pose - self.pose[self.starts].repeat(self.lengths, 0)
        return {"expression": (self.expression.mean(0), self.expression.std(0) + 1e-3),
                "pose": (np.zeros(3, np.float32), pose_rel.std(0) + 1e-3)}

    def window(self, utt: int, offset: int, length: int) -> dict[str, np.ndarray]:
        s, n = int(self.starts[utt]), int(self.lengths[utt])
        a, b = s + offset, s + min(n, offset + length)
        pad = length - (b - a)
        padf = lambda x: np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x  # noqa: E731
        pose = self.pose[a:b] - self.pose[a]
        return {"audio": padf(self.features[a:b].astype(np.float32)),
                "expression": padf(self.expression[a:b]), "pose": padf(pose),
                "pose_start": self.pose[a] - self.pose[s],
                "mask": np.arange(length) < (b - a), "style": self.style[utt],
                "blink_rate": self.blink_rate[utt]}

    def _collate(self, items: list[dict]) -> MotionBatch:
        t = lambda k, dt=torch.float32: torch.as_tensor(np.stack([i[k] for i in items]), dtype=dt)  # noqa: E731
        return MotionBatch(t("audio"), t("expression"), t("pose"), t("pose_start"),
                           t("mask", torch.bool), t("style", torch.long), t("blink_rate"))

    def sample(self, batch_size: int, length: int, rng: np.random.Generator) -> MotionBatch:
        # utterances drawn in proportion to their length (every frame equally likely)
        p = self.lengths / self.lengths.sum()
        utts = rng.choice(len(self), batch_size, p=p)
        items = []
        for u in utts:
            offset = int(rng.integers(0, max(1, self.lengths[u] - length + 1)))
            items.append(self.window(int(u), offset, length))
        return self._collate(items)

    def fixed_batches(self, n_batches: int, batch_size: int, length: int, seed: int = 0) -> list[MotionBatch]:
        rng = np.random.default_rng(seed)
        return [self.sample(batch_size, length, rng) for _ in range(n_batches)]

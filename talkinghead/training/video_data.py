"""Prepared talking-video shards (`talkinghead prepare`) as training batches for the learned
renderers. Frames, masks and features are memory-mapped, so a batch reads only its frames from
disk and memory does not grow with the dataset.

Every 10th video (sorted by shard name; at least one when there are two or more) is held out
for validation, so validation clips come from videos never trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from talkinghead.data.prepare import FACE_BIT, LIP_BIT
from talkinghead.errors import InputError
from talkinghead.render.dawn.conditions import pose_blink  # the one definition, shared with the renderer
from talkinghead.types import Motion


@dataclass
class Video:
    name: str
    frames: np.ndarray          # (T, S, S, 3) uint8, memory-mapped
    masks: np.ndarray           # (T, S, S) uint8
    features: np.ndarray        # (T, D) float16
    pose: np.ndarray            # (T, 6)
    blink: np.ndarray           # (T, 2)

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class ClipBatch:
    frames: torch.Tensor        # (B, N, 3, S, S) float in [0, 1]
    source: torch.Tensor        # (B, 3, S, S)
    source_face: torch.Tensor   # (B, 1, S, S) face mask of the source frame
    lips: torch.Tensor          # (B, N, 1, S, S) lip masks
    audio: torch.Tensor         # (B, N, D)
    pose: torch.Tensor          # (B, N, 6) delta from the source frame
    blink: torch.Tensor         # (B, N, 2) delta from the source frame


def numpy_rng(g: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded from the training loop's torch generator (one draw), so batches
    drawn with numpy follow the loop's seed and resume."""
    return np.random.default_rng(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=g)))


def train_val_shards(data: str, size: int) -> tuple[VideoShards, VideoShards]:
    """`prepare`d shards' train and val splits; a single video validates on itself (warned)."""
    import logging

    train_set = VideoShards(data, "train", size)
    try:
        val_set = VideoShards(data, "val", size)
    except InputError:
        logging.getLogger("talkinghead").warning("%s: a single video; validating on it too", data)
        val_set = train_set
    return train_set, val_set


class VideoShards:
    def __init__(self, root: str | Path, split: str = "train", size: int | None = None) -> None:
        root = Path(root)
        manifest = root / "manifest.json"
        if not manifest.exists():
            raise InputError(f"{root}: not a prepared dataset (run `talkinghead prepare` first)")
        meta = json.loads(manifest.read_text())
        names = sorted(meta["shards"])
        self.crop_expand = float(meta["config"]["expand"])
        if not names:
            raise InputError(f"{root}: the dataset holds no videos")
        held = set(names[::10]) if len(names) >= 2 else set()
        names = [n for n in names if (n in held) == (split == "val")]
        if not names:
            raise InputError(f"{root}: no {split} videos")
        self.videos = [self._open(root / "shards" / n) for n in names]
        self.size = size or self.videos[0].frames.shape[1]
        self.feature_dim = self.videos[0].features.shape[1]
        info = json.loads((root / "shards" / names[0] / "info.json").read_text())
        self.feature_kind = info["features"]

    @staticmethod
    def _open(d: Path) -> Video:
        motion = Motion.load(d / "motion.npz")
        pose, blink = pose_blink(motion)
        return Video(d.name, np.load(d / "frames.npy", mmap_mode="r"), np.load(d / "masks.npy", mmap_mode="r"),
                     np.load(d / "features.npy", mmap_mode="r"), pose, blink)

    @property
    def frames(self) -> int:
        return sum(len(v) for v in self.videos)

    def _images(self, arr: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(arr, copy=True)).float() / 255.0
        x = x.permute(0, 3, 1, 2) if x.dim() == 4 else x[:, None]
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="area")
        return x

    def pairs(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n (source, driving) frame pairs, each from one random video: (n, 3, S, S) twice."""
        src, dri = [], []
        for _ in range(n):
            v = self.videos[rng.integers(len(self.videos))]
            i, j = rng.integers(len(v), size=2)
            src.append(v.frames[i])
            dri.append(v.frames[j])
        return self._images(np.stack(src)), self._images(np.stack(dri))

    def clips(self, n: int, length: int, rng: np.random.Generator, first_source: bool) -> ClipBatch:
        """n clips of `length` frames. first_source: the source is the clip's first frame (TCL
        stage 1); else any frame of the whole video (stage 2)."""
        out: dict[str, list] = {k: [] for k in ("frames", "source", "face", "lips", "audio", "pose", "blink")}
        for _ in range(n):
            v = self.videos[rng.integers(len(self.videos))]
            length_v = min(length, len(v))
            a = int(rng.integers(len(v) - length_v + 1))
            s = a if first_source else int(rng.integers(len(v)))
            idx = np.arange(a, a + length_v)
            idx = np.concatenate([idx, np.full(length - length_v, idx[-1])])          # pad short videos
            out["frames"].append(self._images(v.frames[idx]))
            out["source"].append(self._images(v.frames[s:s + 1])[0])
            out["face"].append(self._images(((v.masks[s:s + 1] & FACE_BIT) > 0).astype(np.uint8) * 255)[0])
            out["lips"].append(self._images(((v.masks[idx] & LIP_BIT) > 0).astype(np.uint8) * 255))
            out["audio"].append(torch.from_numpy(np.array(v.features[idx], np.float32)))
            out["pose"].append(torch.from_numpy(v.pose[idx] - v.pose[s]))
            out["blink"].append(torch.from_numpy(v.blink[idx] - v.blink[s]))
        st = {k: torch.stack(x) for k, x in out.items()}
        return ClipBatch(st["frames"], st["source"], st["face"], st["lips"], st["audio"], st["pose"], st["blink"])

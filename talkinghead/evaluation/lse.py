"""LSE-D and LSE-C (Prajwal et al., Wav2Lip, ACM MM 2020), the lip-sync figures of every paper
here, computed as syncnet_python does with the user's SyncNet weights.

Each 5-frame window of 224x224 face crops and the matching 0.2 s of MFCC are embedded; for
offsets of -15..15 frames the mean embedding distance over the clip is taken. LSE-D is the
minimum of that curve, LSE-C the median minus the minimum, and the arg-min is the audio-visual
offset (frames; > 0: the video lags the audio). Frames are streamed, only embeddings are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from talkinghead.types import AudioClip, FaceAnalysis

CROP_MARGIN = 0.4         # syncnet_python's crop scale around the face box
PAD_VALUE = 110


def syncnet_crop(frame: np.ndarray, bbox: tuple[float, float, float, float]) -> np.ndarray:
    """(224, 224, 3) BGR uint8 crop of a face box, framed as syncnet_python's face tracks are:
    the box's half-size bs; bs * (1 + margin) either side horizontally; from bs above the centre to
    bs * (1 + 2 margin) below it (the mouth sits in the lower half)."""
    import cv2

    x0, y0, x1, y1 = bbox
    bs = max(x1 - x0, y1 - y0) / 2
    pad = int(bs * (1 + 2 * CROP_MARGIN)) + 1
    img = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT,
                             value=(PAD_VALUE,) * 3)
    mx, my = (x0 + x1) / 2 + pad, (y0 + y1) / 2 + pad
    top, bottom = int(my - bs), int(my + bs * (1 + 2 * CROP_MARGIN))
    left, right = int(mx - bs * (1 + CROP_MARGIN)), int(mx + bs * (1 + CROP_MARGIN))
    crop = img[top:bottom, left:right]
    return cv2.resize(crop, (224, 224))[:, :, ::-1]


def mfcc(clip: AudioClip) -> np.ndarray:
    """(13, N) MFCC at 100 Hz of 16 kHz audio, as python_speech_features computes them on int16."""
    import python_speech_features

    if clip.sample_rate != 16000:
        raise ValueError("SyncNet needs 16 kHz audio")
    pcm = np.clip(clip.mono(), -1, 1) * 32767.0
    return python_speech_features.mfcc(pcm, 16000).T.astype(np.float32)


@dataclass
class SyncResult:
    lse_d: float
    lse_c: float
    offset_frames: int
    mean_distance: list[float]       # per offset -vshift..vshift (index i: offset vshift - i)


def offset_search(video: torch.Tensor, audio: torch.Tensor, vshift: int = 15) -> SyncResult:
    """(N, D) window embeddings of video and audio -> LSE-D/C and the offset (syncnet_python's
    calc_pdist: audio zero-padded by vshift at both ends)."""
    n = min(len(video), len(audio))
    video, audio = video[:n], audio[:n]
    padded = torch.nn.functional.pad(audio, (0, 0, vshift, vshift))         # (N + 2 vshift, D)
    win = 2 * vshift + 1
    idx = torch.arange(n)[:, None] + torch.arange(win)[None]                  # (N, win)
    dists = (video[:, None, :] - padded[idx] + 1e-6).norm(dim=-1)            # (N, win)
    mean = dists.mean(0)
    best = int(torch.argmin(mean))
    return SyncResult(float(mean[best]), float(mean.median() - mean[best]), vshift - best,
                      [float(v) for v in mean])


class SyncScorer:
    """Streams frames (with the face model's box) into SyncNet lip embeddings, then scores them
    against the audio."""

    def __init__(self, net, batch: int = 16) -> None:
        self.net, self.batch = net, batch
        self._crops: list[np.ndarray] = []
        self._feats: list[torch.Tensor] = []
        self._box: tuple[float, float, float, float] | None = None
        self.frames = 0

    def add(self, frame: np.ndarray, face: FaceAnalysis | None) -> None:
        if face is not None:
            self._box = face.bbox
        if self._box is None:                # no face yet: a neutral grey crop
            crop = np.full((224, 224, 3), PAD_VALUE, np.uint8)
        else:
            crop = syncnet_crop(frame, self._box)
        self._crops.append(crop)
        self.frames += 1
        if len(self._crops) >= self.batch + 4:
            self._embed(len(self._crops) - 4)

    @torch.no_grad()
    def _embed(self, windows: int) -> None:
        stack = torch.from_numpy(np.stack(self._crops)).float().permute(3, 0, 1, 2)   # (3, F, 224, 224)
        clips = torch.stack([stack[:, i:i + 5] for i in range(windows)])          # (B, 3, 5, 224, 224)
        self._feats.append(self.net.forward_lip(clips))
        self._crops = self._crops[windows:]

    @torch.no_grad()
    def score(self, clip: AudioClip, fps: float = 25.0, vshift: int = 15) -> SyncResult:
        if abs(fps - 25.0) > 0.01:
            raise ValueError("SyncNet expects 25 fps video")
        if len(self._crops) >= 5:
            self._embed(len(self._crops) - 4)
        video = torch.cat(self._feats) if self._feats else torch.zeros(0, 1024)
        cc = torch.from_numpy(mfcc(clip))                                            # (13, M)
        n = min(len(video), min(self.frames, clip.mono().size // 640) - 5)   # as syncnet_python
        if n < 1:
            raise ValueError("clip shorter than SyncNet's 0.2 s window")
        audio = [self.net.forward_aud(torch.stack([cc[:, 4 * i:4 * i + 20] for i in range(a, min(a + 64, n))])[:, None])
                 for a in range(0, n, 64)]
        return offset_search(video[:n], torch.cat(audio), vshift)

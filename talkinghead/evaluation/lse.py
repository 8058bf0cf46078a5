"""LSE-D and LSE-C (Prajwal et al., Wav2Lip, ACM MM 2020), the lip-sync figures of every paper
here, computed as syncnet_python does with the user's SyncNet weights.

The face-box track is median-filtered over 13 frames before cropping, as syncnet_python's
`crop_video`. Each 5-frame window of 224x224 face crops and the matching 0.2 s of MFCC are embedded; for
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
MEDIAN_KERNEL = 13        # syncnet_python median-filters the box track (size, x, y) over 13 frames


def box_track(bbox: tuple[float, float, float, float]) -> tuple[float, float, float]:
    """(half-size, centre x, centre y) of a face box (x0, y0, x1, y1), as syncnet_python's dets."""
    x0, y0, x1, y1 = bbox
    return max(x1 - x0, y1 - y0) / 2, (x0 + x1) / 2, (y0 + y1) / 2


def median_window(track: np.ndarray, i: int, kernel: int = MEDIAN_KERNEL) -> np.ndarray:
    """(3,) median of `track` rows i - k//2 .. i + k//2, zero-padded past either end: row i of
    scipy.signal.medfilt(track[:, c], kernel) for each column c, as syncnet_python smooths."""
    half = kernel // 2
    window = np.zeros((kernel, track.shape[1]))
    lo, hi = max(0, i - half), min(len(track), i + half + 1)
    window[lo - (i - half): hi - (i - half)] = track[lo:hi]
    return np.median(window, axis=0)


def syncnet_crop_at(frame: np.ndarray, bs: float, mx: float, my: float) -> np.ndarray:
    """(224, 224, 3) BGR uint8 crop around a (smoothed) track point, framed as syncnet_python's
    `crop_video`: bs * (1 + margin) either side of the centre horizontally; from bs above the
    centre to bs * (1 + 2 margin) below it (the mouth sits in the lower half)."""
    import cv2

    pad = int(bs * (1 + 2 * CROP_MARGIN)) + 1
    img = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT,
                             value=(PAD_VALUE,) * 3)
    mx, my = mx + pad, my + pad
    top, bottom = int(my - bs), int(my + bs * (1 + 2 * CROP_MARGIN))
    left, right = int(mx - bs * (1 + CROP_MARGIN)), int(mx + bs * (1 + CROP_MARGIN))
    crop = img[top:bottom, left:right]
    return cv2.resize(crop, (224, 224))[:, :, ::-1]


def syncnet_crop(frame: np.ndarray, bbox: tuple[float, float, float, float]) -> np.ndarray:
    """The crop of one unsmoothed face box (see `syncnet_crop_at`)."""
    return syncnet_crop_at(frame, *box_track(bbox))


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
    against the audio. The box track starts at the first face (frames before it get a neutral grey
    crop), holds the last box where the face is lost, and is median-filtered as syncnet_python's,
    so each crop waits for the boxes of the next MEDIAN_KERNEL // 2 frames."""

    def __init__(self, net, batch: int = 16) -> None:
        self.net, self.batch = net, batch
        self._crops: list[np.ndarray] = []
        self._feats: list[torch.Tensor] = []
        self._track: list[tuple[float, float, float]] = []     # (half-size, x, y) per tracked frame
        self._held: list[np.ndarray] = []                       # tracked frames not yet cropped
        self.frames = 0

    def add(self, frame: np.ndarray, face: FaceAnalysis | None) -> None:
        if face is not None or self._track:
            self._track.append(box_track(face.bbox) if face is not None else self._track[-1])
            self._held.append(frame)
            if len(self._held) > MEDIAN_KERNEL // 2:
                self._crop_held()
        else:                                # no face yet: a neutral grey crop
            self._crops.append(np.full((224, 224, 3), PAD_VALUE, np.uint8))
        self.frames += 1
        if len(self._crops) >= self.batch + 4:
            self._embed(len(self._crops) - 4)

    def _crop_held(self) -> None:
        """Crop the oldest held frame with the median-filtered track point of its frame."""
        i = len(self._track) - len(self._held)
        lo = max(0, i - MEDIAN_KERNEL // 2)
        bs, mx, my = median_window(np.asarray(self._track[lo:i + MEDIAN_KERNEL // 2 + 1]), i - lo)
        self._crops.append(syncnet_crop_at(self._held.pop(0), bs, mx, my))

    @torch.no_grad()
    def _embed(self, windows: int) -> None:
        stack = torch.from_numpy(np.stack(self._crops)).float().permute(3, 0, 1, 2)   # (3, F, 224, 224)
        clips = torch.stack([stack[:, i:i + 5] for i in range(windows)])          # (B, 3, 5, 224, 224)
        self._feats.append(self.net.forward_lip(clips))
        self._crops = self._crops[windows:]

    @torch.no_grad()
    def flush(self) -> None:
        """Crop the frames still waiting for the track's end (zero-padded, as medfilt) and embed
        every complete 5-frame window."""
        while self._held:
            self._crop_held()
        if len(self._crops) >= 5:
            self._embed(len(self._crops) - 4)

    @torch.no_grad()
    def score(self, clip: AudioClip, fps: float = 25.0, vshift: int = 15) -> SyncResult:
        if abs(fps - 25.0) > 0.01:
            raise ValueError("SyncNet expects 25 fps video")
        self.flush()
        video = torch.cat(self._feats) if self._feats else torch.zeros(0, 1024)
        cc = torch.from_numpy(mfcc(clip))                                            # (13, M)
        n = min(len(video), min(self.frames, clip.mono().size // 640) - 5)   # as syncnet_python
        if n < 1:
            raise ValueError("clip shorter than SyncNet's 0.2 s window")
        audio = [self.net.forward_aud(torch.stack([cc[:, 4 * i:4 * i + 20] for i in range(a, min(a + 64, n))])[:, None])
                 for a in range(0, n, 64)]
        return offset_search(video[:n], torch.cat(audio), vshift)

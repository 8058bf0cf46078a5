"""SyncNet (Chung & Zisserman, "Out of time: automated lip sync in the wild", ACCV-W 2016), the
network behind LSE-C / LSE-D as used by Wav2Lip, SadTalker, DAWN, FD2Talk and Hallo2.

Two streams embed 0.2 s of audio and of video into a shared 1024-d space:
* audio: 13 MFCC x 20 steps (100 Hz) -> 2D conv stack -> fc;
* video: 5 face-crop frames of 224x224 (BGR, 0..255, as OpenCV reads them) -> 3D conv stack -> fc.
Layer order and `nn.Sequential` indices follow the public `syncnet_v2.model` so its state dict
loads as is (`netcnnaud.*`, `netfcaud.*`, `netcnnlip.*`, `netfclip.*`).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_stack(spec: list, conv, bn, pool) -> nn.Sequential:
    """spec items: ("c", cin, cout, kernel, stride, padding) | ("p", kernel, stride, padding).

    Every conv is followed by BN and ReLU, so indices match the published Sequential."""
    layers: list[nn.Module] = []
    for item in spec:
        if item[0] == "c":
            _, cin, cout, k, s, p = item
            layers += [conv(cin, cout, kernel_size=k, stride=s, padding=p), bn(cout), nn.ReLU(inplace=True)]
        else:
            _, k, s, p = item
            layers.append(pool(kernel_size=k, stride=s, padding=p))
    return nn.Sequential(*layers)


AUDIO_SPEC = [
    ("c", 1, 64, 3, 1, 1), ("p", (1, 1), (1, 1), 0),
    ("c", 64, 192, 3, 1, 1), ("p", (3, 3), (1, 2), 0),
    ("c", 192, 384, 3, 1, 1), ("c", 384, 256, 3, 1, 1), ("c", 256, 256, 3, 1, 1), ("p", (3, 3), (2, 2), 0),
    ("c", 256, 512, (5, 4), 1, 0),
]
VIDEO_SPEC = [
    ("c", 3, 96, (5, 7, 7), (1, 2, 2), 0), ("p", (1, 3, 3), (1, 2, 2), 0),
    ("c", 96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), ("p", (1, 3, 3), (1, 2, 2), (0, 1, 1)),
    ("c", 256, 256, (1, 3, 3), 1, (0, 1, 1)), ("c", 256, 256, (1, 3, 3), 1, (0, 1, 1)),
    ("c", 256, 256, (1, 3, 3), 1, (0, 1, 1)), ("p", (1, 3, 3), (1, 2, 2), 0),
    ("c", 256, 512, (1, 6, 6), 1, 0),
]


def _head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))


class SyncNet(nn.Module):
    AUDIO_STEPS = 20     # MFCC frames per window (0.2 s at 100 Hz)
    VIDEO_FRAMES = 5     # video frames per window (0.2 s at 25 fps)
    CROP = 224

    def __init__(self, dim: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = _conv_stack(AUDIO_SPEC, nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)
        self.netfcaud = _head(dim)
        self.netfclip = _head(dim)
        self.netcnnlip = _conv_stack(VIDEO_SPEC, nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) MFCC -> (B, dim)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))        # (B, 512, 1, 1) -> (B, 512)

    def forward_lip(self, clip: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, 224, 224) BGR 0..255 -> (B, dim)."""
        return self.netfclip(self.netcnnlip(clip).flatten(1))        # (B, 512, 1, 1, 1) -> (B, 512)


def load_syncnet(path) -> SyncNet:
    from talkinghead.evaluation.nets.weights import load_weights

    return load_weights(SyncNet(), path, "SyncNet (syncnet_v2.model)")

"""I3D (Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017), the Kinetics-400
video network behind FVD (Unterthiner et al. 2018), as DAWN reports FVD16 and FVD32.

Inflated Inception-v1 with TensorFlow 'same' padding. Module names follow the PyTorch port's
state dict (pytorch-i3d `rgb_imagenet.pt`: Conv3d_1a_7x7.conv3d/bn, Mixed_3b.b0 ... b3b,
logits.conv3d). Input: (B, 3, T, 224, 224) RGB in [-1, 1]; FVD features are the 400 Kinetics
logits averaged over time, as in the original FVD.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _same_pad(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    """TensorFlow 'SAME' padding for a (B, C, T, H, W) input."""
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class Unit3D(nn.Module):
    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1),
                 bn: bool = True, relu: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=0.001, momentum=0.01) if bn else None

    def forward(self, x):
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel, stride) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class Mixed(nn.Module):
    """Inception module: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | maxpool -> 1x1."""

    def __init__(self, cin: int, c: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a = Unit3D(cin, c[1])
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a = Unit3D(cin, c[3])
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, c[5])

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3b(self.b3a(x))], 1)


MIXED = {  # name: (in channels, branch widths)
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)), "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)), "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)), "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)), "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        for name in ("Mixed_3b", "Mixed_3c"):
            self.add_module(name, Mixed(*MIXED[name]))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            self.add_module(name, Mixed(*MIXED[name]))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        for name in ("Mixed_5b", "Mixed_5c"):
            self.add_module(name, Mixed(*MIXED[name]))
        self.logits = Unit3D(1024, num_classes, bn=False, relu=False, bias=True)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T >= 9, 224, 224) in [-1, 1] -> (B, num_classes) logits averaged over time."""
        x = video
        for module in list(self.children())[:-1]:
            x = module(x)                                   # -> (B, 1024, ceil(T/8), 7, 7)
        kt = min(2, x.shape[2])
        x = F.avg_pool3d(x, (kt, 7, 7), stride=1)           # (B, 1024, T', 1, 1)
        return self.logits(x).mean((2, 3, 4))


def load_i3d(path) -> InceptionI3d:
    from talkinghead.evaluation.nets.weights import load_weights

    return load_weights(InceptionI3d(), path, "I3D (pytorch-i3d rgb_imagenet.pt)")


"""LPIPS (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric", CVPR 2018), AlexNet variant v0.1, as reported by DiffTalk and FD2Talk.

Two weight files, as published: the AlexNet backbone (torchvision `alexnet-owt-7be5be79.pth`,
keys `features.N.*`) and the LPIPS linear heads (`lpips/weights/v0.1/alex.pth`, keys
`linK.model.1.weight`). Pass both; they are merged.
"""

from __future__ import annotations

import torch
from torch import nn

CHANNELS = (64, 192, 384, 256, 256)
SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))      # relu1 .. relu5 of alexnet.features
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class _Lin(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(0.0), nn.Conv2d(cin, 1, 1, bias=False))


class LPIPS(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, 1, 1), nn.ReLU())
        for i, c in enumerate(CHANNELS):
            self.add_module(f"lin{i}", _Lin(c))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        taps = []
        for a, b in SLICES:
            x = self.features[a:b](x)
            taps.append(x / (x.norm(dim=1, keepdim=True) + 1e-10))     # unit length per position
        return taps

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [-1, 1] each -> (B,) distance (0 for identical images)."""
        total = 0.0
        for i, (fa, fb) in enumerate(zip(self._taps(a), self._taps(b))):
            lin = getattr(self, f"lin{i}").model
            total = total + lin((fa - fb) ** 2).mean((1, 2, 3))
        return total


def load_lpips(paths) -> LPIPS:
    from talkinghead.evaluation.nets.weights import load_weights

    return load_weights(LPIPS(), paths, "LPIPS-alex (AlexNet features + v0.1 linear heads)")

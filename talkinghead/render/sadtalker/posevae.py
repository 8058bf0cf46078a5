"""SadTalker's PoseVAE as released (sadtalker.txt, Sec. 3.3; `audio2pose` in the checkpoint): a
conditional VAE over the residual head motion Delta rho (angles 3 + translation 3) of 32-frame
clips, conditioned on Wav2Lip audio embeddings, the first frame's pose rho_0 and a learned bias
per style id (46 VoxCeleb speakers). At inference only the decoder runs: z ~ N(0, I) plus the
style's bias, with rho_0 and the clip's audio, through an MLP and a small residual U-Net over the
(32, 6) motion. Keys follow the official `audio2pose.*` (`netG.encoder.*`, `netG.decoder.*`,
`audio_encoder.audio_encoder.*`; the training-only discriminator `netD_motion.*` is not built).

(motion/sadtalker.py holds the project's own PoseVAE, trained on our corpus with our features.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from talkinghead.render.sadtalker.expnet import MEL_STEP, wav2lip_audio_encoder


@dataclass(frozen=True)
class PoseVAEConfig:
    """auido2pose.yaml's MODEL.CVAE + DATASET.NUM_CLASSES."""

    audio_in: int = 512
    audio_out: int = 6
    seq_len: int = 32
    latent: int = 64
    encoder_layers: tuple[int, ...] = (192, 128)
    decoder_layers: tuple[int, ...] = (128, 192)
    num_classes: int = 46


class ResidualConv(nn.Module):
    def __init__(self, cin: int, cout: int, stride, padding: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 3, stride=stride, padding=padding),
            nn.BatchNorm2d(cout), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.conv_skip = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x) + self.conv_skip(x)


class Upsample(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(cin, cout, kernel_size=(2, 1), stride=(2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)


class ResUnet(nn.Module):
    """(B, 1, T, 6) -> (B, 1, T, 6) in (0, 1); halves and restores T three times."""

    def __init__(self, filters: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        f = filters
        self.input_layer = nn.Sequential(nn.Conv2d(1, f[0], 3, padding=1), nn.BatchNorm2d(f[0]), nn.ReLU(),
                                         nn.Conv2d(f[0], f[0], 3, padding=1))
        self.input_skip = nn.Sequential(nn.Conv2d(1, f[0], 3, padding=1))
        self.residual_conv_1 = ResidualConv(f[0], f[1], (2, 1), 1)
        self.residual_conv_2 = ResidualConv(f[1], f[2], (2, 1), 1)
        self.bridge = ResidualConv(f[2], f[3], (2, 1), 1)
        self.upsample_1, self.up_residual_conv1 = Upsample(f[3], f[3]), ResidualConv(f[3] + f[2], f[2], 1, 1)
        self.upsample_2, self.up_residual_conv2 = Upsample(f[2], f[2]), ResidualConv(f[2] + f[1], f[1], 1, 1)
        self.upsample_3, self.up_residual_conv3 = Upsample(f[1], f[1]), ResidualConv(f[1] + f[0], f[0], 1, 1)
        self.output_layer = nn.Sequential(nn.Conv2d(f[0], 1, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.input_layer(x) + self.input_skip(x)
        x2 = self.residual_conv_1(x1)
        x3 = self.residual_conv_2(x2)
        x = self.up_residual_conv1(torch.cat([self.upsample_1(self.bridge(x3)), x3], 1))
        x = self.up_residual_conv2(torch.cat([self.upsample_2(x), x2], 1))
        x = self.up_residual_conv3(torch.cat([self.upsample_3(x), x1], 1))
        return self.output_layer(x)


def _mlp(sizes: list[int], last: nn.Module | None) -> nn.Sequential:
    mlp = nn.Sequential()
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mlp.add_module(f"L{i}", nn.Linear(a, b))
        if i + 2 < len(sizes) or last is None:
            mlp.add_module(f"A{i}", nn.ReLU())
        else:
            mlp.add_module("sigmoid", last)
    return mlp


class PoseEncoder(nn.Module):
    """Training side of the CVAE (built so the released keys load strictly)."""

    def __init__(self, c: PoseVAEConfig) -> None:
        super().__init__()
        self.resunet = ResUnet()
        first = c.encoder_layers[0] + c.latent + c.seq_len * c.audio_out + 6
        self.MLP = _mlp([first, *c.encoder_layers[1:]], None)
        self.linear_means = nn.Linear(c.encoder_layers[-1], c.latent)
        self.linear_logvar = nn.Linear(c.encoder_layers[-1], c.latent)
        self.linear_audio = nn.Linear(c.audio_in, c.audio_out)
        self.classbias = nn.Parameter(torch.randn(c.num_classes, c.latent))


class PoseDecoder(nn.Module):
    """z (B, Z), style ids (B,), rho_0 (B, 6), audio embeddings (B, T, 512) -> Delta rho (B, T, 6)."""

    def __init__(self, c: PoseVAEConfig) -> None:
        super().__init__()
        self.resunet = ResUnet()
        self.MLP = _mlp([c.latent + c.seq_len * c.audio_out + 6, *c.decoder_layers], nn.Sigmoid())
        self.pose_linear = nn.Linear(6, 6)
        self.linear_audio = nn.Linear(c.audio_in, c.audio_out)
        self.classbias = nn.Parameter(torch.randn(c.num_classes, c.latent))
        self.seq_len = c.seq_len

    def forward(self, z: torch.Tensor, style: torch.Tensor, ref: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        a = self.linear_audio(audio).reshape(b, -1)                       # (B, T * 6)
        x = self.MLP(torch.cat([ref, z + self.classbias[style], a], -1)).reshape(b, self.seq_len, -1)
        return self.pose_linear(self.resunet(x[:, None])[:, 0])           # (B, T, 6)


class CVAE(nn.Module):
    def __init__(self, c: PoseVAEConfig) -> None:
        super().__init__()
        self.encoder, self.decoder = PoseEncoder(c), PoseDecoder(c)


class AudioEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = wav2lip_audio_encoder()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """(B, T, 1, 80, 16) -> (B, T, 512)."""
        b, t = mels.shape[:2]
        return self.audio_encoder(mels.reshape(b * t, 1, 80, MEL_STEP)).view(b, t, -1)


class PoseVAE(nn.Module):
    """The released audio2pose: `generate` head pose for a whole clip, 32 frames at a time."""

    def __init__(self, config: PoseVAEConfig = PoseVAEConfig()) -> None:
        super().__init__()
        self.config = config
        self.audio_encoder = AudioEncoder()
        self.netG = CVAE(config)

    @torch.no_grad()
    def generate(self, mels: torch.Tensor, ref: torch.Tensor, style: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """mel windows (1, T, 1, 80, 16) of every frame, rho_0 (1, 6) -> pose (1, T, 6): frame 0
        is rho_0; the rest is decoded per 32 frames (the last clip is the final 32 frames' audio,
        padded at its start when shorter, of which the remainder is kept), as SadTalker's
        `Audio2Pose.test`. z is drawn from `generator` (the global RNG when None)."""
        return self.generate_from(lambda a, b: mels[:, a:b], mels.shape[1], ref, style, generator)

    @torch.no_grad()
    def generate_from(self, windows, frames: int, ref: torch.Tensor, style: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """`generate` with the mel windows of frames a..b-1 given by `windows(a, b)` ((1, b - a,
        1, 80, 16)), so that a long clip's windows are built 32 frames at a time."""
        from talkinghead.errors import InputError

        n, s = frames - 1, self.config.seq_len                           # frame 0 is the reference
        if not 0 <= style < self.config.num_classes:
            raise InputError(f"SadTalker's pose style must be 0..{self.config.num_classes - 1}, got {style}")
        style_t = torch.tensor([style], device=ref.device)
        parts = [torch.zeros(1, 1, 6, dtype=ref.dtype, device=ref.device)]

        def clip(audio: torch.Tensor) -> torch.Tensor:
            z = torch.randn(1, self.config.latent, generator=generator).to(ref.device)
            emb = self.audio_encoder(audio)
            if emb.shape[1] != s:
                emb = torch.cat([emb[:, :1].repeat(1, s - emb.shape[1], 1), emb], 1)
            return self.netG.decoder(z, style_t, ref, emb)

        for i in range(n // s):
            parts.append(clip(windows(1 + i * s, 1 + (i + 1) * s)))
        if n % s:
            parts.append(clip(windows(max(1, frames - s), frames))[:, -(n % s):])
        return ref[:, None] + torch.cat(parts, 1)


POSE_FILE = "auido2pose_00140-model.pth"      # the older split layout's PoseVAE (sic)


def load_posevae(directory, size: int = 256) -> PoseVAE:
    """The released PoseVAE from a checkpoint folder: `audio2pose.*` of the safetensors file, or
    the older `auido2pose_00140-model.pth` ('model'). Strict, except that the training-only
    discriminator (`netD_motion.*`) is skipped."""
    from pathlib import Path

    from talkinghead.errors import InputError
    from talkinghead.render.sadtalker.checkpoint import load_strict, read_safetensors, read_torch, safetensors_name

    root = Path(directory)
    st, split = root / safetensors_name(size), root / POSE_FILE
    if st.is_file():
        path, state = st, read_safetensors(st)["audio2pose"]
    elif split.is_file():
        path, state = split, read_torch(split, "model")
    else:
        raise InputError(f"{root}: needs {st.name} or {POSE_FILE} for SadTalker's PoseVAE")
    state = {k: v for k, v in state.items() if not k.startswith("netD_motion.")}
    return load_strict(PoseVAE(), state, f"{path} (audio2pose)").eval()

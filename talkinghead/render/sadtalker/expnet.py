"""SadTalker's ExpNet as released (sadtalker.txt, Sec. 3.2; `audio2exp` in the checkpoint):
Wav2Lip's audio encoder over each frame's 0.2 s mel window (80 x 16), concatenated with the
reference expression beta_0 (64) and the blink control z_blink (1), mapped linearly to the
frame's 64 expression coefficients. Keys follow the official `audio2exp.*`.

Each frame's window starts 2 frames before it (`mel_windows`), so any length of audio is encoded
in fixed-size chunks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MEL_STEP = 16          # mel frames (80 Hz) per window


class ConvBlock(nn.Module):
    """Wav2Lip's Conv2d: conv, batch norm, optional residual, optional ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride, padding: int,
                 residual: bool = False) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        return self.act(out + x if self.residual else out)


def wav2lip_audio_encoder() -> nn.Sequential:
    """(N, 1, 80, 16) mel window -> (N, 512, 1, 1)."""
    spec = [(1, 32, 1, 1, False), (32, 32, 1, 1, True), (32, 32, 1, 1, True),
            (32, 64, (3, 1), 1, False), (64, 64, 1, 1, True), (64, 64, 1, 1, True),
            (64, 128, 3, 1, False), (128, 128, 1, 1, True), (128, 128, 1, 1, True),
            (128, 256, (3, 2), 1, False), (256, 256, 1, 1, True), (256, 512, 1, 0, False)]
    layers = [ConvBlock(cin, cout, 3, stride, pad, res) for cin, cout, stride, pad, res in spec]
    return nn.Sequential(*layers, ConvBlock(512, 512, 1, 1, 0))


class ExpNet(nn.Module):
    """mel windows (B, T, 1, 80, 16), reference expression (B, T, 64), blink (B, T) ->
    expression coefficients (B, T, 64)."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = wav2lip_audio_encoder()
        self.mapping1 = nn.Linear(512 + 64 + 1, 64)

    def forward(self, mels: torch.Tensor, ref: torch.Tensor, blink: torch.Tensor) -> torch.Tensor:
        b, t = ref.shape[:2]
        audio = self.audio_encoder(mels.reshape(b * t, 1, 80, MEL_STEP)).view(b * t, -1)  # (BT, 512)
        x = torch.cat([audio, ref.reshape(b * t, -1), blink.reshape(b * t, 1)], dim=1)
        return self.mapping1(x).view(b, t, -1)


def mel_windows(mel: np.ndarray, frames: int | np.ndarray, fps: float = 25.0) -> np.ndarray:
    """(F, 80) mel at 80 Hz -> (T, 80, 16) windows of the given video frames (or of frames
    0..frames-1): frame i's window starts at int(80 * (i - 2) / fps), indices clamped to the
    spectrogram (SadTalker's `indiv_mels`)."""
    idx = np.arange(frames) if np.isscalar(frames) else np.asarray(frames)
    starts = (80.0 * ((idx - 2) / float(fps))).astype(int)
    rows = np.clip(starts[:, None] + np.arange(MEL_STEP)[None], 0, len(mel) - 1)   # (T, 16)
    return np.ascontiguousarray(mel[rows].transpose(0, 2, 1))                      # (T, 80, 16)

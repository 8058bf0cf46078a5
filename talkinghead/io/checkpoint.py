"""Checkpoints: safetensors weights + a JSON config, never pickle.

`save_model(dir, model, config)` writes model.safetensors and config.json; `load_model(dir,
build)` rebuilds the model from the config and loads the weights strictly; `load_arrays(dir)`
reads the weights as numpy arrays (inference without torch). Optimizer state is
flattened to tensors (safetensors) plus its scalar structure (JSON) for resuming training.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from talkinghead.errors import InputError

if TYPE_CHECKING:  # torch is imported where it is used: reading a config needs none of it
    import torch


def _to_json(config: Any) -> dict:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


def save_model(directory: str | Path, model: torch.nn.Module, config: Any, **extra: Any) -> Path:
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = d / "model.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.replace(d / "model.safetensors")
    (d / "config.json").write_text(json.dumps({"config": _to_json(config), **extra}, indent=2))
    return d


def read_config(directory: str | Path) -> dict:
    path = Path(directory) / "config.json"
    if not path.exists():
        raise InputError(f"{directory}: not a checkpoint (no config.json)")
    return json.loads(path.read_text())


def config_from(config_cls, fields: dict):
    """config_cls from a checkpoint's config fields: unknown keys (model name, feature kind, ...)
    are ignored; JSON lists become tuples where the field is a tuple."""
    known = {f.name: f for f in dataclasses.fields(config_cls)}
    values = {k: (tuple(v) if isinstance(v, list) and isinstance(getattr(config_cls, k, None), tuple) else v)
              for k, v in fields.items() if k in known}
    return config_cls(**values)


def load_weights(directory: str | Path, model: torch.nn.Module) -> torch.nn.Module:
    from safetensors.torch import load_file

    path = Path(directory) / "model.safetensors"
    if not path.exists():
        raise InputError(f"{directory}: no model.safetensors")
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as e:
        raise InputError(f"{directory}: weights do not match the config ({str(e).splitlines()[0]})")
    return model


def load_arrays(directory: str | Path) -> dict:
    """model.safetensors as float32 numpy arrays, by the torch modules' key names."""
    import numpy as np
    from safetensors.numpy import load_file

    path = Path(directory) / "model.safetensors"
    if not path.exists():
        raise InputError(f"{directory}: no model.safetensors")
    return {k: v.astype(np.float32) for k, v in load_file(str(path)).items()}


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    import torch

    sd = optimizer.state_dict()
    tensors, scalars = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars["state"].setdefault(str(idx), {})[k] = v
    return tensors, scalars


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           scalars: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    for idx, st in scalars["state"].items():
        state.setdefault(int(idx), {}).update(st)
    optimizer.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})

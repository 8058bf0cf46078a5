"""Reading a user's network weights (metric networks, perceptual losses) without running code.

Safetensors files are read directly. PyTorch files (.pth/.pt/.model, as published for SyncNet,
ArcFace, pytorch-fid, pytorch-i3d and LPIPS) go through torch's restricted `weights_only`
unpickler, which only rebuilds tensors and plain containers and refuses any other global, so a
malicious file fails to load instead of executing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from talkinghead.errors import InputError

_NESTED = ("state_dict", "model", "net", "params")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """{name: tensor} from a safetensors or a (restricted) PyTorch weight file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weight file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
            raise InputError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, zip errors, ...
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: not a plain weight file; only tensors are read ({first[:120]})") from None
    for key in _NESTED:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path}: holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(model: torch.nn.Module, paths: str | Path | list, what: str) -> torch.nn.Module:
    """Load one or more weight files strictly into `model` (eval mode); one-line error on mismatch."""
    state: dict[str, torch.Tensor] = {}
    for p in paths if isinstance(paths, (list, tuple)) else [paths]:
        state.update(read_state_dict(p))
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        bad = (missing or wrong)[0]
        raise InputError(f"{paths}: not {what} weights ({len(missing)} missing and {len(wrong)} "
                         f"mis-shaped tensors, e.g. {bad!r})")
    model.load_state_dict({k: state.get(k, own[k]) for k in own}, strict=True)
    if unexpected:  # e.g. a classifier head we do not use
        import logging

        logging.getLogger("talkinghead").info("%s: %d unused tensors", what, len(unexpected))
    return model.eval()

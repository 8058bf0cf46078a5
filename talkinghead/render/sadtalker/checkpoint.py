"""Reading SadTalker's released checkpoint folder (sadtalker.txt; the official `checkpoints/`).

Two layouts are understood:
  * current: `SadTalker_V0.0.2_256.safetensors` (or `_512`) holding `kp_extractor.*`,
    `generator.*`, `audio2exp.*`, `audio2pose.*` and `face_3drecon.*`, plus
    `mapping_00229-model.pth.tar` (crop mode, 70 coefficients) or `mapping_00109-model.pth.tar`
    (still/full mode, 73);
  * older split files: `facevid2vid_00189-model.pth.tar` (`generator`, `kp_detector`),
    `epoch_20.pth` (`net_recon`), `auido2exp_00300-model.pth` (`model`) and the mapping files.
PyTorch files are read only through torch's restricted `weights_only` unpickler. Every module is
loaded strictly; a missing, unexpected or mis-shaped key is a one-line InputError naming it.
(`audio2pose.*`, the PoseVAE, is read by posevae.load_posevae; `generate` takes pose from the
motion model.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from talkinghead.errors import InputError

MAPPING_FILES = {False: "mapping_00229-model.pth.tar", True: "mapping_00109-model.pth.tar"}
SPLIT_FILES = {"generator": ("facevid2vid_00189-model.pth.tar", "generator"),
               "kp_extractor": ("facevid2vid_00189-model.pth.tar", "kp_detector"),
               "face_3drecon": ("epoch_20.pth", "net_recon"),
               "audio2exp": ("auido2exp_00300-model.pth", "model")}
SAFETENSORS_GROUPS = ("kp_extractor", "generator", "audio2exp", "audio2pose", "face_3drecon")


def safetensors_name(size: int) -> str:
    return f"SadTalker_V0.0.2_{size}.safetensors"


def read_torch(path: Path, key: str) -> dict[str, torch.Tensor]:
    """checkpoint[key] of a PyTorch file, through the restricted unpickler."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling refusals, zip errors, ...
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise InputError(f"{path}: not a plain weight file; only tensors are read ({first[:120]})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get(key), dict):
        raise InputError(f"{path}: no '{key}' state dict in this file")
    return {k.removeprefix("module."): v for k, v in obj[key].items()}


def read_safetensors(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{group: {key: tensor}} of a SadTalker safetensors file, split by the first key part."""
    from safetensors.torch import load_file

    try:
        flat = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise InputError(f"{path}: not a readable safetensors file ({e})") from None
    groups: dict[str, dict[str, torch.Tensor]] = {g: {} for g in SAFETENSORS_GROUPS}
    for k, v in flat.items():
        group, _, rest = k.partition(".")
        if group not in groups:
            raise InputError(f"{path}: unexpected key {k!r} (not a SadTalker checkpoint?)")
        groups[group][rest] = v
    return groups


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """Load `state` into `module`; one-line InputError naming the first bad key."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    for keys, what in ((missing, "missing key"), (unexpected, "unexpected key"), (wrong, "mis-shaped key")):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            extra = f" {tuple(state[keys[0]].shape)} != {tuple(own[keys[0]].shape)}" if keys is wrong else ""
            raise InputError(f"{where}: {what} {keys[0]!r}{extra}{more}")
    module.load_state_dict({k: state.get(k, own[k]) for k in own}, strict=True)
    return module.eval()


@dataclass
class CheckpointFiles:
    """Where each module's weights come from: {module: (file, prefix or key)}."""

    sources: dict[str, tuple[Path, str]]
    mapping: Path


def find_checkpoints(directory: str | Path, size: int = 256, still: bool = False) -> CheckpointFiles:
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"{root}: SadTalker checkpoint folder not found")
    mapping = root / MAPPING_FILES[still]
    if not mapping.is_file():
        raise InputError(f"{root}: needs {mapping.name} (SadTalker's MappingNet for "
                         f"{'still' if still else 'crop'} mode)")
    st = root / safetensors_name(size)
    if st.is_file():
        return CheckpointFiles({m: (st, m) for m in SPLIT_FILES}, mapping)
    if size == 256 and all((root / f).is_file() for f, _ in SPLIT_FILES.values()):
        return CheckpointFiles({m: (root / f, key) for m, (f, key) in SPLIT_FILES.items()}, mapping)
    raise InputError(f"{root}: needs {st.name} (or, at 256, the older split files "
                     f"{', '.join(sorted({f for f, _ in SPLIT_FILES.values()}))})")


def load_modules(files: CheckpointFiles, modules: dict[str, nn.Module], mapping: nn.Module) -> None:
    """Fill `modules` ({"generator": ..., "kp_extractor": ..., ...}) and the MappingNet in place."""
    cache: dict[Path, dict[str, dict[str, torch.Tensor]]] = {}
    for name, module in modules.items():
        path, key = files.sources[name]
        if path.suffix == ".safetensors":
            if path not in cache:
                cache[path] = read_safetensors(path)
            state = cache[path][key]
        else:
            state = read_torch(path, key)
        load_strict(module, state, f"{path} ({name})")
    load_strict(mapping, read_torch(files.mapping, "mapping"), f"{files.mapping} (mapping)")

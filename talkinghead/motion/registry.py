"""Motion-model checkpoints: name -> class and config, loading from a checkpoint directory.

A checkpoint directory holds model.safetensors and config.json whose "config" has the model's
name ("model"), its audio feature kind ("feature") and the constructor's config fields.
The torch model classes are imported on first use (`MODELS`, `load_checkpoint`), so `shipped`
and the numpy FD2Talk path (`fd2talk_numpy.py`) never import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from talkinghead.errors import InputError
from talkinghead.io.checkpoint import config_from, load_weights, read_config

if TYPE_CHECKING:
    import torch

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def _models() -> dict:
    """name -> (model class, config class)."""
    from talkinghead.motion.fd2talk import DiTConfig, MotionDiT
    from talkinghead.motion.pbnet import PBNet, PBNetConfig
    from talkinghead.motion.sadtalker import ExpNet, ExpNetConfig, PoseVAE, PoseVAEConfig
    from talkinghead.motion.sync_expert import SyncExpert, SyncExpertConfig

    return {
        "sync_expert": (SyncExpert, SyncExpertConfig),
        "fd2talk_expression": (MotionDiT, DiTConfig),
        "fd2talk_pose": (MotionDiT, DiTConfig),
        "sadtalker_expnet": (ExpNet, ExpNetConfig),
        "sadtalker_posevae": (PoseVAE, PoseVAEConfig),
        "dawn_pbnet": (PBNet, PBNetConfig),
    }


def __getattr__(name: str):
    if name == "MODELS":  # module attribute built on first access (PEP 562)
        return _models()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(name: str, fields: dict) -> torch.nn.Module:
    cls, config_cls = _models()[name]
    return cls(config_from(config_cls, fields))


def load_checkpoint(directory: str | Path) -> torch.nn.Module:
    """Rebuild a motion model from its config.json and load its safetensors (strict)."""
    fields = read_config(directory)["config"]
    name = fields.get("model")
    if name not in _models():
        raise InputError(f"{directory}: unknown model {name!r}")
    model = build_model(name, fields)
    model.feature = fields.get("feature", "whisper")
    return load_weights(directory, model).float().eval()


def shipped(name: str) -> Path:
    """Directory of a model's shipped weights inside the package."""
    path = WEIGHTS_DIR / name
    if not (path / "model.safetensors").exists():
        raise InputError(f"no shipped weights for {name} (train them: talkinghead train motion "
                         f"--model {name} --config configs/motion/{name}.json)")
    return path

"""Motion-model checkpoints: name -> class and config, loading from a checkpoint directory.

A checkpoint directory holds model.safetensors and config.json whose "config" has the model's
name ("model"), its audio feature kind ("feature") and the constructor's config fields.
"""

from __future__ import annotations

from pathlib import Path

import torch

from talkinghead.errors import InputError
from talkinghead.io.checkpoint import config_from, load_weights, read_config
from talkinghead.motion.fd2talk import DiTConfig, MotionDiT
from talkinghead.motion.pbnet import PBNet, PBNetConfig
from talkinghead.motion.sadtalker import ExpNet, ExpNetConfig, PoseVAE, PoseVAEConfig
from talkinghead.motion.sync_expert import SyncExpert, SyncExpertConfig

MODELS = {
    "sync_expert": (SyncExpert, SyncExpertConfig),
    "fd2talk_expression": (MotionDiT, DiTConfig),
    "fd2talk_pose": (MotionDiT, DiTConfig),
    "sadtalker_expnet": (ExpNet, ExpNetConfig),
    "sadtalker_posevae": (PoseVAE, PoseVAEConfig),
    "dawn_pbnet": (PBNet, PBNetConfig),
}
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def build_model(name: str, fields: dict) -> torch.nn.Module:
    cls, config_cls = MODELS[name]
    return cls(config_from(config_cls, fields))


def load_checkpoint(directory: str | Path) -> torch.nn.Module:
    """Rebuild a motion model from its config.json and load its safetensors (strict)."""
    fields = read_config(directory)["config"]
    name = fields.get("model")
    if name not in MODELS:
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

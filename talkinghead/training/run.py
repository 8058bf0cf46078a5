"""`talkinghead train motion`: read a JSON config, build the task, run the shared loop.

Config file: {"task": {MotionTaskConfig fields}, "train": {TrainConfig fields}}; command-line
values (corpus, output, steps, debug) override it.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from talkinghead.errors import InputError
from talkinghead.training.loop import TrainConfig, TrainResult, train
from talkinghead.training.motion_tasks import MotionTaskConfig, build_task


def dataclass_from(cls, values: dict, where: str):
    """cls(**values), with a one-line error naming unknown keys."""
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise InputError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    return cls(**values)


def read_json_config(path: str | Path | None) -> dict:
    """A training config file's JSON ({} without a path); an unreadable file is a one-line error."""
    if not path:
        return {}
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read config {path}: {e}")


def load_config(path: str | Path | None) -> tuple[MotionTaskConfig, TrainConfig]:
    raw = read_json_config(path)
    return (dataclass_from(MotionTaskConfig, raw.get("task", {}), f"{path} task"),
            dataclass_from(TrainConfig, raw.get("train", {}), f"{path} train"))


def override(train_cfg: TrainConfig, steps: int | None, max_minutes: float | None) -> None:
    """Command-line step count and time limit over the config's."""
    if steps is not None:
        train_cfg.steps = steps
        train_cfg.eval_every = min(train_cfg.eval_every, steps)
        train_cfg.save_every = min(train_cfg.save_every, steps)
    if max_minutes is not None:
        train_cfg.max_minutes = max_minutes


def train_motion(model: str, config: str | Path | None, corpus: str | None, output: str | Path,
                 steps: int | None = None, debug: bool | None = None, expert: str | None = None,
                 max_minutes: float | None = None, resume: bool = True,
                 progress: bool = True) -> TrainResult:
    task_cfg, train_cfg = load_config(config)
    if corpus:
        task_cfg.corpus = corpus
    if debug is not None:
        task_cfg.debug = debug
    if expert is not None:
        task_cfg.expert = expert
    override(train_cfg, steps, max_minutes)
    task = build_task(model, task_cfg, train_cfg.batch_size)
    return train(task, train_cfg, output, resume=resume, progress=progress)


def ship(run_dir: str | Path, name: str, dest: str | Path | None = None) -> Path:
    """Copy a run's EMA weights (as float16 safetensors) and config into the package."""
    import shutil

    from safetensors.torch import load_file, save_file

    from talkinghead.motion.registry import WEIGHTS_DIR

    out = Path(dest) if dest else WEIGHTS_DIR / name
    out.mkdir(parents=True, exist_ok=True)
    state = load_file(str(Path(run_dir) / "model.safetensors"))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()},
              str(out / "model.safetensors"))
    shutil.copyfile(Path(run_dir) / "config.json", out / "config.json")
    log = Path(run_dir) / "log.jsonl"
    if log.exists():  # the validation curve travels with the weights
        shutil.copyfile(log, out / "log.jsonl")
    return out

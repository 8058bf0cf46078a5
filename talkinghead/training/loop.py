"""The shared training loop: accelerate (one device or many), EMA, checkpoints with resume,
JSONL logging, validation and a progress bar. Every model plugs in a `Task`.

A task says how to draw a training batch, how to compute the loss (and logs) of a batch, which
batches are its validation set, and what config to store with the weights. The loop owns the
rest. Checkpoints are directories: model.safetensors (EMA weights) + config.json, and for
resuming train_state.safetensors (raw weights, optimizer tensors) + train_state.json.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from talkinghead.io.checkpoint import optimizer_from_tensors, optimizer_to_tensors, save_model


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    eval_every: int = 200
    save_every: int = 500
    log_every: int = 50
    seed: int = 0
    max_minutes: float = 0.0       # > 0: stop (and save) after this wall time
    max_cpu_minutes: float = 0.0   # > 0: stop (and save) after this much process CPU time, a
    #                                budget that does not depend on what else loads the machine
    mixed_precision: str = "no"    # accelerate's setting: "no", "fp16", "bf16"


def _out_of_time(config: TrainConfig, start: float, cpu_start: float) -> bool:
    """Whether the wall-time or CPU-time budget (either, where set) is spent."""
    wall = config.max_minutes and time.perf_counter() - start > 60 * config.max_minutes
    cpu = config.max_cpu_minutes and time.process_time() - cpu_start > 60 * config.max_cpu_minutes
    return bool(wall or cpu)


class Task(Protocol):
    model: torch.nn.Module

    def train_batch(self, step: int, generator: torch.Generator) -> Any: ...
    def loss(self, model: torch.nn.Module, batch: Any, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]: ...
    def val_batches(self) -> list[Any]: ...
    def checkpoint_config(self) -> dict: ...


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    history: list[dict] = field(default_factory=list)   # {"step", "val_loss", ...}
    seconds: float = 0.0


class EMA:
    """Exponential moving average of a model's parameters and buffers (warm-up as in timm)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for e, p in zip(self.model.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(d).add_(p.detach(), alpha=1 - d)
            else:
                e.copy_(p)


@torch.no_grad()
def evaluate(task: Task, model: torch.nn.Module) -> dict[str, float]:
    model.eval()
    g = torch.Generator().manual_seed(1234)  # the same noise every evaluation
    sums: dict[str, float] = {}
    batches = task.val_batches()
    for batch in batches:
        loss, logs = task.loss(model, batch, g)
        for k, v in {"loss": loss.item(), **logs}.items():
            sums[k] = sums.get(k, 0.0) + v
    model.train()
    return {f"val_{k}": v / max(len(batches), 1) for k, v in sums.items()}


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _save_state(out: Path, model, ema: EMA, optimizer, step: int, history: list, task: Task,
                cfg: TrainConfig) -> None:
    from safetensors.torch import save_file

    save_model(out, ema.model, task.checkpoint_config(), step=step, train=asdict(cfg))
    tensors, scalars = optimizer_to_tensors(optimizer)
    raw = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    raw.update({f"optim.{k}": v for k, v in tensors.items()})
    tmp = out / "train_state.safetensors.tmp"
    save_file(raw, str(tmp))
    tmp.replace(out / "train_state.safetensors")
    (out / "train_state.json").write_text(json.dumps({"step": step, "optimizer": scalars,
                                                      "history": history}))


def _load_state(out: Path, model, ema: EMA, optimizer) -> tuple[int, list]:
    from safetensors.torch import load_file

    meta = json.loads((out / "train_state.json").read_text())
    raw = load_file(str(out / "train_state.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in raw.items() if k.startswith("model.")})
    optimizer_from_tensors(optimizer, {k[6:]: v for k, v in raw.items() if k.startswith("optim.")},
                           meta["optimizer"])
    ema.model.load_state_dict(load_file(str(out / "model.safetensors")))
    return int(meta["step"]), list(meta["history"])


def train(task: Task, config: TrainConfig, out_dir: str | Path, resume: bool = True,
          progress: bool = True) -> TrainResult:
    """Train task.model for config.steps; checkpoints and logs go to out_dir."""
    from accelerate import Accelerator
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              mixed_precision=config.mixed_precision)
    torch.manual_seed(config.seed)
    model = task.model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    ema = EMA(model, config.ema_decay)
    step, history = 0, []
    if resume and (out / "train_state.json").exists():
        step, history = _load_state(out, model, ema, optimizer)
    model, optimizer = accelerator.prepare(model, optimizer)
    ema.model.to(accelerator.device)
    generator = torch.Generator().manual_seed(config.seed + step)
    log = open(out / "log.jsonl", "a")
    start, cpu_start = time.perf_counter(), time.process_time()
    bar = tqdm(total=config.steps, initial=step, desc=out.name, unit="step", disable=not progress)
    if step == 0:  # the untrained model's validation loss starts every curve
        history.append({"step": 0, **evaluate(task, ema.model)})
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(history[-1]) + "\n")
    model.train()
    while step < config.steps:
        batch = task.train_batch(step, generator)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, config)
        with accelerator.autocast():
            loss, logs = task.loss(model, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if config.grad_clip:
            accelerator.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        ema.update(accelerator.unwrap_model(model), step)
        step += 1
        bar.update(1)
        record: dict[str, Any] = {}
        if step % config.log_every == 0:
            record = {"step": step, "loss": loss.item(), **logs}
        if step % config.eval_every == 0 or step == config.steps:
            record = {"step": step, "loss": loss.item(), **logs, **evaluate(task, ema.model)}
            history.append(record)
            bar.set_postfix(val=f"{record['val_loss']:.4f}")
        if record and accelerator.is_main_process:
            log.write(json.dumps(record) + "\n")
            log.flush()
        out_of_time = _out_of_time(config, start, cpu_start)
        if accelerator.is_main_process and (step % config.save_every == 0 or step == config.steps
                                            or out_of_time):
            _save_state(out, accelerator.unwrap_model(model), ema, optimizer, step, history,
                        task, config)
        if out_of_time:
            break
    bar.close()
    log.close()
    return TrainResult(out, step, history, time.perf_counter() - start)

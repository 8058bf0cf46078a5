"""Training the prompt-conditioned expression model (Hallo2's textual prompts, second stage).

Hallo2 (`../shared/papers/hallo2_appendix.txt`, A.2) trains text-prompt control in its second
stage. Here: windows of the speech-motion corpus get an expression style on top of their
speech-driven motion (none, a smile, or surprise: raised inner brows with a dropped jaw; the
TTS corpus has no spontaneous expressions, so they are added as the corpus adds everything
else), then a caption derived from the window's own expression statistics
(`text/captions.py`), embedded by MiniLM. The model starts from the FD2Talk expression weights
(`init`) and keeps FD2Talk's loss (x0 diffusion + lip expert); the text is dropped for
`text_dropout` of the windows.

`talkinghead train prompt --config configs/prompt/fd2talk_prompt.json -o DIR` runs it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from talkinghead.errors import InputError
from talkinghead.motion.fd2talk import MotionDiT
from talkinghead.motion.prompt import PROMPT_MODEL, PromptMotionDiT, from_expression_model, renormalise
from talkinghead.text.captions import (BROW, CLASSES, JAW, PHRASES, SMILE, CaptionRules, caption_table,
                                      window_stats)
from talkinghead.training.loop import TrainConfig, TrainResult, train
from talkinghead.training.motion_data import MotionBatch
from talkinghead.training.motion_tasks import FD2TalkTask, MotionTaskConfig


@dataclass
class PromptTaskConfig(MotionTaskConfig):
    init: str = "talkinghead/weights/fd2talk_expression"   # start from ("" = from scratch)
    style_probs: tuple[float, float, float] = (0.34, 0.33, 0.33)   # none, smile, surprise
    smile: tuple[float, float] = (0.3, 0.75)      # added mouthSmileLeft/Right
    brow: tuple[float, float] = (0.35, 0.85)      # added browInnerUp (surprise)
    jaw: tuple[float, float] = (0.08, 0.2)        # added jawOpen (surprise)
    caption_quantile: float = 0.98
    stats_windows: int = 2000                     # corpus windows that set the caption rules
    text_dropout: float = 0.2


@dataclass
class PromptBatch:
    motion: MotionBatch
    text: torch.Tensor       # (B, 384) caption embeddings
    label: torch.Tensor      # (B,) caption class (index into CLASSES)
    style: torch.Tensor      # (B,) the style that was added (0 none, 1 smile, 2 surprise)


def add_expression(expression: torch.Tensor, style: np.ndarray, rng: np.random.Generator,
                   cfg: PromptTaskConfig) -> torch.Tensor:
    """expression (B, T, 20) + a per-window smile (style 1) or surprise (style 2), with a slow
    +-15% sway so the offset is not perfectly flat; clipped to [0, 1]."""
    out = expression.clone()
    b, t, _ = out.shape
    phase = rng.uniform(0, 2 * np.pi, b)[:, None]
    freq = rng.uniform(0.05, 0.25, b)[:, None]                                       # Hz
    sway = torch.from_numpy(1 + 0.15 * np.sin(2 * np.pi * freq * np.arange(t)[None] / 25.0 + phase)).float()
    for i in range(b):
        if style[i] == 1:
            out[i, :, list(SMILE)] += (rng.uniform(*cfg.smile) * sway[i])[:, None]
        elif style[i] == 2:
            out[i, :, BROW] += rng.uniform(*cfg.brow) * sway[i]
            out[i, :, JAW] += rng.uniform(*cfg.jaw) * sway[i]
    return out.clamp(0.0, 1.0)


class PromptTask(FD2TalkTask):
    """FD2Talk's expression task with captions and a PromptMotionDiT."""

    name = PROMPT_MODEL

    def __init__(self, cfg: PromptTaskConfig, batch_size: int) -> None:
        super().__init__(cfg, batch_size, "expression")
        self.name = PROMPT_MODEL
        self.model = self._initial_model()
        rng = np.random.default_rng(0)
        plain = self.train_set.sample(cfg.stats_windows, cfg.window, rng)
        self.rules = CaptionRules.from_corpus(window_stats(plain.expression.numpy(), plain.mask.numpy()),
                                              cfg.caption_quantile)
        from talkinghead.text.minilm import shared_encoder

        texts, labels = caption_table()
        self.texts, self.text_labels = texts, labels
        self.text_table = shared_encoder()(texts)                                     # (N, 384)
        self._val = [self._captioned(b, np.random.default_rng(1000 + k)) for k, b in enumerate(self._val)]
        # the added expressions lie far outside the speech corpus's range on smile and brow: the
        # normalisation follows the styled windows (folded into the weights: same function)
        styled = self._captioned(plain, rng).motion
        frames = styled.expression[styled.mask]                                       # (N, 20)
        renormalise(self.model, frames.mean(0), frames.std(0) + 1e-3)

    def _initial_model(self) -> PromptMotionDiT:
        cfg = self.cfg
        if cfg.init:
            from talkinghead.motion.registry import load_checkpoint

            base = load_checkpoint(cfg.init)
            if not isinstance(base, MotionDiT) or base.config.channels != 20:
                raise InputError(f"{cfg.init}: not an FD2Talk expression model")
        else:
            base = self.model                                      # fresh, with the corpus's stats
        return from_expression_model(base, text_dropout=cfg.text_dropout).train()

    def _captioned(self, batch: MotionBatch, rng: np.random.Generator) -> PromptBatch:
        style = rng.choice(3, len(batch.style), p=np.asarray(self.cfg.style_probs) / sum(self.cfg.style_probs))
        expression = add_expression(batch.expression, style, rng, self.cfg)
        motion = MotionBatch(batch.audio, expression, batch.pose, batch.pose_start, batch.mask,
                             batch.style, batch.blink_rate)
        label = self.rules.classify(window_stats(expression.numpy(), batch.mask.numpy()))
        pick = [int(rng.choice(np.flatnonzero(self.text_labels == k))) for k in label]
        return PromptBatch(motion, self.text_table[pick], torch.from_numpy(label), torch.from_numpy(style))

    def train_batch(self, step: int, generator: torch.Generator) -> PromptBatch:
        rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=generator)))
        return self._captioned(self.train_set.sample(self.batch_size, self.cfg.window, rng), rng)

    def loss(self, model, batch: PromptBatch, generator):
        drop = torch.rand(len(batch.text), generator=generator) < self.cfg.text_dropout
        text = torch.where(drop[:, None], torch.full_like(batch.text, float("nan")), batch.text)
        return super().loss(_WithText(model, text), batch.motion, generator)

    def checkpoint_config(self) -> dict:
        return {**super().checkpoint_config(), "caption_rules": asdict(self.rules),
                "captions": {c: list(PHRASES[c]) for c in CLASSES}}


class _WithText:
    """The model with its text condition bound, shaped like a MotionDiT for FD2Talk's loss."""

    def __init__(self, model, text: torch.Tensor) -> None:
        self.model, self.text = model, text
        self.module = getattr(model, "module", model)

    def __call__(self, x, t, audio, style=None, blink_rate=None):
        return self.model(x, t, audio, style, blink_rate, self.text)

    def __getattr__(self, name):
        return getattr(self.module, name)


def load_prompt_config(path: str | Path | None) -> tuple[PromptTaskConfig, TrainConfig]:
    from talkinghead.training.run import dataclass_from, read_json_config

    raw = read_json_config(path)
    task = dataclass_from(PromptTaskConfig, raw.get("task", {}), f"{path} task")
    for name in ("style_probs", "smile", "brow", "jaw"):
        setattr(task, name, tuple(getattr(task, name)))
    return task, dataclass_from(TrainConfig, raw.get("train", {}), f"{path} train")


def train_prompt(config: str | Path | None, corpus: str | None, output: str | Path,
                 steps: int | None = None, max_minutes: float | None = None, init: str | None = None,
                 resume: bool = True, progress: bool = True) -> TrainResult:
    """`talkinghead train prompt`: config file, command-line overrides, the shared loop."""
    from talkinghead.training.run import override

    task_cfg, train_cfg = load_prompt_config(config)
    if corpus:
        task_cfg.corpus = corpus
    if init is not None:
        task_cfg.init = init
    override(train_cfg, steps, max_minutes)
    if not task_cfg.corpus or not Path(task_cfg.corpus).is_dir():
        raise InputError(f"corpus directory {task_cfg.corpus!r} not found (talkinghead corpus build)")
    return train(PromptTask(task_cfg, train_cfg.batch_size), train_cfg, output, resume=resume,
                 progress=progress)


"""Prompt-conditioned expression model: FD2Talk's expression transformer steered by text.

Hallo2 (`../shared/papers/hallo2_appendix.txt`, A.1, A.2) adds textual embeddings c_text to the
motion conditions so a prompt modulates facial expression, trained in its second stage. Here
the prompt's sentence embedding (MiniLM, `talkinghead/text/minilm.py`, 384-d) is projected by
an MLP into the transformer's global condition, which modulates every block through adaLN
(scale and shift of the normalised activations: FiLM). The projection's last layer starts at
zero, so a model initialised from the shipped FD2Talk expression weights starts out exactly as
that model and learns only what the prompt adds. The text embedding is dropped (zeroed, with a
"no text" flag) for a share of the training windows, so the model also runs without a prompt,
and sampling can use classifier-free guidance on the prompt (Ho & Salimans 2022).

Departure: Hallo2 applies c_text by cross-attention inside its video UNet; our motion model is
driven by blendshape sequences, so the prompt steers the Motion (expression), and every
renderer shows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from talkinghead.diffusion.samplers import SAMPLERS
from talkinghead.diffusion.schedule import Schedule
from talkinghead.errors import InputError
from talkinghead.motion.fd2talk import DiTConfig, MotionDiT
from talkinghead.motion.generate import FD2TalkMotion, MotionControls
from talkinghead.types import Motion

PROMPT_MODEL = "fd2talk_prompt"


@dataclass
class PromptDiTConfig(DiTConfig):
    text_dim: int = 384           # MiniLM sentence embedding
    text_dropout: float = 0.2     # share of training windows without text (classifier-free)
    # the text MLP's output is multiplied by this constant: the zero-initialised path then moves
    # `text_gain` times faster than the pretrained weights under one learning rate
    text_gain: float = 10.0


class PromptMotionDiT(MotionDiT):
    """MotionDiT whose global condition also carries a sentence embedding (B, 384)."""

    def __init__(self, config: PromptDiTConfig = PromptDiTConfig()) -> None:
        super().__init__(config)
        c = config
        self.text = nn.Sequential(nn.Linear(c.text_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        nn.init.zeros_(self.text[-1].weight)
        nn.init.zeros_(self.text[-1].bias)

    def text_condition(self, text: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B, D) contribution of the text; None or a NaN row = no text (zero)."""
        if text is None:
            return torch.zeros(batch, self.config.dim, device=self.mean.device)
        given = ~torch.isnan(text).any(-1, keepdim=True)                               # (B, 1)
        return self.text(torch.nan_to_num(text).float()) * (given * self.config.text_gain)

    def forward(self, x: torch.Tensor, t: torch.Tensor, audio: torch.Tensor,
                style: torch.Tensor | None = None, blink_rate: torch.Tensor | None = None,
                text: torch.Tensor | None = None) -> torch.Tensor:
        cond = self.condition(t, style, blink_rate) + self.text_condition(text, x.shape[0])  # (B, D)
        return self.denoise(x, audio, cond)

    @torch.no_grad()
    def sample_prompted(self, audio: torch.Tensor, text: torch.Tensor | None, steps: int = 10,
                        generator: torch.Generator | None = None, blink_rate: torch.Tensor | None = None,
                        guidance: float = 1.0, sampler: str = "ddim") -> torch.Tensor:
        """audio (B, T, A), text (B, 384) -> expression (B, T, C) in data units.
        guidance w: x0 = x0(no text) + w (x0(text) - x0(no text)); 1 = plain conditional."""
        schedule = Schedule.cosine(self.config.train_steps)
        noise = torch.randn(audio.shape[0], audio.shape[1], self.config.channels,
                            generator=generator, device=audio.device)

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            cond = self(x_t, t, audio, None, blink_rate, text)
            if text is None or guidance == 1.0:
                return cond
            uncond = self(x_t, t, audio, None, blink_rate, None)
            return uncond + guidance * (cond - uncond)

        return self.denormalise(SAMPLERS[sampler](denoise, noise, schedule, steps))


def from_expression_model(base: MotionDiT, **overrides) -> PromptMotionDiT:
    """A prompt model that starts as `base` (its weights copied; the text MLP's output is zero)."""
    from dataclasses import asdict

    model = PromptMotionDiT(PromptDiTConfig(**{**asdict(base.config), **overrides}))
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    if unexpected or any(not k.startswith("text.") for k in missing):
        raise InputError(f"expression model does not fit the prompt model: {missing} {unexpected}")
    model.feature = getattr(base, "feature", "whisper")
    return model


@torch.no_grad()
def renormalise(model: MotionDiT, mean: torch.Tensor, std: torch.Tensor) -> MotionDiT:
    """Change the model's channel normalisation to (mean, std) and fold the change into its
    input and output layers, so the network's map from data to data is unchanged
    (x_old = x_new * s_n / s_o + (m_n - m_o) / s_o; y_new = (y_old * s_o + m_o - m_n) / s_n)."""
    m_o, s_o = model.mean.clone(), model.std.clone()
    m_n, s_n = mean.to(m_o), std.to(s_o)
    w_in = model.inp.weight.clone()                                                    # (D, C)
    model.inp.weight.mul_(s_n / s_o)
    model.inp.bias.add_(w_in @ ((m_n - m_o) / s_o))
    model.out.weight.mul_((s_o / s_n)[:, None])                                        # (C, D)
    model.out.bias.copy_((model.out.bias * s_o + m_o - m_n) / s_n)
    model.mean.copy_(m_n)
    model.std.copy_(s_n)
    return model


def load_prompt_model(directory: str | Path | None = None) -> PromptMotionDiT:
    """The prompt model from a checkpoint folder (config.json + model.safetensors), or the shipped one."""
    from talkinghead.io.checkpoint import config_from, load_weights, read_config
    from talkinghead.motion.registry import WEIGHTS_DIR

    directory = Path(directory) if directory else WEIGHTS_DIR / PROMPT_MODEL
    if not (directory / "model.safetensors").exists():
        raise InputError(f"no prompt model at {directory} (train one: talkinghead train prompt "
                         f"--config configs/prompt/fd2talk_prompt.json)")
    fields = read_config(directory)["config"]
    if fields.get("model") != PROMPT_MODEL:
        raise InputError(f"{directory}: not a prompt model ({fields.get('model')!r})")
    model = PromptMotionDiT(config_from(PromptDiTConfig, fields))
    model.feature = fields.get("feature", "whisper")
    return load_weights(directory, model).float().eval()


MAX_PROMPT_CHARS = 500


def check_prompt(prompt: str) -> str:
    """A usable prompt, or a one-line error."""
    text = " ".join(str(prompt).split())
    if not text:
        raise InputError("--prompt is empty; describe the expression, e.g. --prompt \"smiling\"")
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError(f"--prompt is {len(text)} characters long; keep it under {MAX_PROMPT_CHARS}")
    return text


class _Prompted:
    """The prompt model with its prompt bound, sampled like FD2Talk's expression model: whole
    (`sample`) or as a MotionDiT denoiser (`__call__`, the guided x0) for the chunked stream."""

    def __init__(self, model: PromptMotionDiT, text: torch.Tensor, guidance: float) -> None:
        self.model, self.text, self.guidance = model, text, guidance
        self.feature, self.config = model.feature, model.config
        self.denormalise = model.denormalise

    def sample(self, audio: torch.Tensor, steps: int = 10, generator: torch.Generator | None = None,
               blink_rate: torch.Tensor | None = None, sampler: str = "ddim") -> torch.Tensor:
        text = self.text.expand(audio.shape[0], -1)
        return self.model.sample_prompted(audio, text, steps, generator, blink_rate, self.guidance, sampler)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, audio: torch.Tensor, style: torch.Tensor | None = None,
                 blink_rate: torch.Tensor | None = None) -> torch.Tensor:
        """The x0 estimate that `sample_prompted`'s sampler takes at each step (guided)."""
        cond = self.model(x_t, t, audio, None, blink_rate, self.text.expand(x_t.shape[0], -1))
        if self.guidance == 1.0:
            return cond
        uncond = self.model(x_t, t, audio, None, blink_rate, None)
        return uncond + self.guidance * (cond - uncond)


class PromptMotion(FD2TalkMotion):
    """FD2Talk's motion (pose model unchanged) with the expression from the prompt model."""

    def __init__(self, prompt: str, prompt_dir: str | Path | None = None, guidance: float = 1.0,
                 pose_dir: str | Path | None = None) -> None:
        from talkinghead.motion.registry import load_checkpoint, shipped
        from talkinghead.text.minilm import shared_encoder

        self.prompt = check_prompt(prompt)
        model = load_prompt_model(prompt_dir)
        self.expression = _Prompted(model, shared_encoder()(self.prompt), guidance)   # text (1, 384)
        self.pose = load_checkpoint(pose_dir or shipped("fd2talk_pose"))
        self.feature = model.feature

    def stream(self, chunks: Iterable[np.ndarray], total: int, fps: float,
               controls: MotionControls) -> Iterator[Motion]:
        """Chunk by chunk as FD2Talk's motion (first frames before the clip's last features): the
        prompt is one global condition, so the local-attention argument of `FD2TalkMotion.stream`
        holds and the chunks equal the whole clip's sampling up to rounding (shipped model, 20 s
        of real speech, guidance 1 and 2: max difference 7.9e-6; tested on a debug model)."""
        plain = FD2TalkMotion.__new__(FD2TalkMotion)          # its stream, over the prompted expression
        plain.expression, plain.pose, plain.feature = self.expression, self.pose, self.feature
        yield from FD2TalkMotion.stream(plain, chunks, total, fps, controls)


def prompted_motion(motion_model: str, prompt: str, prompt_dir: str | Path | None = None,
                    guidance: float = 1.0) -> PromptMotion:
    """`generate --prompt`: only FD2Talk's motion has a prompt model."""
    if motion_model != "fd2talk":
        raise InputError(f"--prompt works with --motion-model fd2talk, not {motion_model}")
    if not 0.0 <= guidance <= 10.0:
        raise InputError(f"--prompt-guidance must be in 0..10, got {guidance}")
    return PromptMotion(prompt, prompt_dir, guidance)


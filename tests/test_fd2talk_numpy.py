"""FD2Talk's numpy inference path (`motion/fd2talk_numpy.py`, `diffusion/numpy_samplers.py`,
`diffusion/torch_rng.py`) held to the torch modules it replaces on `generate`'s path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from talkinghead.diffusion.torch_rng import TorchGenerator
from talkinghead.motion.fd2talk import MotionDiT
from talkinghead.motion.fd2talk_numpy import DiTConfig, NumpyMotionDiT, band_attention
from talkinghead.motion.generate import FD2TalkMotion, MotionControls
from talkinghead.nets.np_ops import attention
from talkinghead.types import Motion


def _random_dit(**kw) -> tuple[MotionDiT, NumpyMotionDiT]:
    """A debug MotionDiT with every weight random (adaLN-Zero's zeros too) and its numpy twin."""
    config = DiTConfig.debug(audio_dim=24, **kw)
    model = MotionDiT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
        model.mean.normal_()
        model.std.uniform_(0.5, 2.0)
    return model, NumpyMotionDiT(config, {k: v.numpy() for k, v in model.state_dict().items()})


@pytest.mark.parametrize("kw", [{}, {"num_styles": 8}, {"blink_rate": True},
                                {"channels": 3, "window": 5, "align_k": 2}])
@pytest.mark.parametrize("t", [5, 40, 150])     # one product, and blocks of queries (T > 48)
def test_numpy_dit_equals_the_torch_module(kw, t):
    torch.manual_seed(t)
    model, twin = _random_dit(**kw)
    x, audio = torch.randn(2, t, model.config.channels), torch.randn(2, t, 24)
    steps = torch.tensor([999, 3])
    cases = [(None, None)]
    if kw.get("num_styles"):
        cases.append((torch.tensor([1, 8]), None))                 # 8 = none
    if kw.get("blink_rate"):
        cases.append((None, torch.tensor([0.5, float("nan")])))    # NaN = none given
    for style, rate in cases:
        with torch.no_grad():
            ref = model(x, steps, audio, style, rate).numpy()
        got = twin(x.numpy(), steps.numpy(), audio.numpy(), None if style is None else style.numpy(),
                   None if rate is None else rate.numpy())
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("window", [3, 25])
def test_band_attention_is_masked_attention(window):
    rng = np.random.default_rng(window)
    q, k, v = (rng.standard_normal((1, 2, 150, 8)).astype(np.float32) for _ in range(3))
    i = np.arange(150)
    mask = np.where(np.abs(i[:, None] - i[None]) <= window, 0, -1e30).astype(np.float32)
    ref = attention(q * np.float32(np.sqrt(8)), k, v, mask)        # attention scales by 1/sqrt(d)
    np.testing.assert_allclose(band_attention(q, k, v, window), ref, rtol=1e-5, atol=1e-5)
    k2 = k.copy()
    k2[:, :, 100] += 5.0                                           # a key outside query 60's band
    assert np.array_equal(band_attention(q, k2, v, window)[:, :, 60], band_attention(q, k, v, window)[:, :, 60])


def test_tanh_gelu_in_row_blocks_equals_torchs():
    from talkinghead.motion.fd2talk_numpy import gelu_tanh_
    from talkinghead.motion.layers import TanhGELU

    x = np.random.default_rng(0).standard_normal((3, 130, 40)).astype(np.float32) * 4
    x[0, 0, :3] = (-60.0, 0.0, 60.0)                              # exp overflow: -0, 0, x
    with torch.no_grad():
        ref = TanhGELU()(torch.from_numpy(x.copy())).numpy()
    for rows in (64, 7, 1000):                                    # a short last block, one block
        np.testing.assert_allclose(gelu_tanh_(x.copy(), rows), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 7, 12345, 2 ** 33 + 5])
def test_randn_draws_torchs_values_in_torchs_order(seed):
    g, ours = torch.Generator().manual_seed(seed), TorchGenerator(seed)
    # every size 1..40 in turn (the small double path keeps its cached sine across calls),
    # then shapes as FD2TalkMotion draws them, and a large one
    for shape in [(n,) for n in range(1, 41)] + [(1, 100, 20), (1, 100, 3), (1, 3, 1), (16384,)]:
        ref = torch.randn(*shape, generator=g).numpy()
        got = ours.randn(*shape)
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def sample_features(speech_path):
    from talkinghead.audio.features import get_extractor
    from talkinghead.pipelines.generate import load_speech

    return get_extractor("whisper")(load_speech(speech_path), 25.0)


@pytest.fixture(scope="module")
def fd2talk_pair():
    return FD2TalkMotion(backend="torch"), FD2TalkMotion()


def _diff(a: Motion, b: Motion) -> tuple[float, float]:
    return float(np.abs(a.blendshapes - b.blendshapes).max()), float(np.abs(a.rotation - b.rotation).max())


@pytest.mark.parametrize("controls", [MotionControls(seed=0),
                                      MotionControls(seed=3, pose_style=2, blink_rate=0.5),
                                      MotionControls(seed=1, steps=6, sampler="dpmpp_2m")])
def test_shipped_models_sample_as_torch_does(sample_features, fd2talk_pair, controls):
    """The shipped checkpoints on the bundled speech's Whisper features: whole clip (4 s) and
    streamed (the features tiled to 12 s, in chunks of 40 rows: the first chunk, then the rest)."""
    reference, ours = fd2talk_pair
    d_call = _diff(reference(sample_features, controls), ours(sample_features, controls))
    values = np.tile(sample_features.values, (3, 1))                                # (300, 512)
    t = len(values)
    parts = {name: list(m.stream((values[i:i + 40] for i in range(0, t, 40)), t, 25.0, controls))
             for name, m in (("torch", reference), ("numpy", ours))}
    assert [len(p) for p in parts["numpy"]] == [len(p) for p in parts["torch"]] and len(parts["numpy"]) >= 2
    d_stream = _diff(Motion.concatenate(parts["torch"]), Motion.concatenate(parts["numpy"]))
    print(f"numpy vs torch, {controls}: call {d_call[0]:.2g} blendshape / {d_call[1]:.2g} deg, "
          f"stream {d_stream[0]:.2g} / {d_stream[1]:.2g}")
    assert max(d_call[0], d_stream[0]) < 1e-4 and max(d_call[1], d_stream[1]) < 1e-3


def _debug_numpy_fd2talk() -> FD2TalkMotion:
    torch.manual_seed(0)
    m = FD2TalkMotion.__new__(FD2TalkMotion)
    m.expression = _random_dit(channels=20, blink_rate=True)[1]
    m.pose = _random_dit(channels=3, num_styles=8)[1]
    m.feature = "whisper"
    return m


@pytest.mark.parametrize("margin, close", [(100, True), (0, False)])
def test_numpy_stream_equals_the_whole_clip_sampling(monkeypatch, margin, close):
    """As tests/test_speed_paths.py's torch test: chunks with CHUNK_MARGIN frames of context equal
    the whole clip's sampling; without the margin the chunks show (the test can fail)."""
    import talkinghead.motion.generate as G
    from talkinghead.audio.features import AudioFeatures

    monkeypatch.setattr(G, "CHUNK_MARGIN", margin)
    model, t = _debug_numpy_fd2talk(), 860
    feats = np.random.default_rng(1).standard_normal((t, 24)).astype(np.float32)
    controls = MotionControls(seed=2, steps=3, pose_style=3, blink_rate=0.4)
    whole = model(AudioFeatures(feats, 25.0, "whisper"), controls)
    parts = list(model.stream((feats[i:i + 200] for i in range(0, t, 200)), t, 25.0, controls))
    assert len(parts) >= 2 and len(parts[0]) == 200 - margin and sum(map(len, parts)) == t
    assert (max(_diff(Motion.concatenate(parts), whole)) < 1e-4) == close
    once = list(model.stream([feats[:150]], 150, 25.0, controls))           # all at once: whole
    ref = model(AudioFeatures(feats[:150], 25.0, "whisper"), controls)
    assert len(once) == 1 and np.array_equal(once[0].blendshapes, ref.blendshapes)


def test_fd2talk_loads_and_samples_without_torch():
    code = ("import sys, numpy as np\n"
            "from talkinghead.audio.features import AudioFeatures\n"
            "from talkinghead.motion.generate import MotionControls, get_motion_model\n"
            "m = get_motion_model('fd2talk')\n"
            "v = np.random.default_rng(0).standard_normal((130, 512)).astype(np.float32)\n"
            "c = MotionControls(seed=1, pose_style=2, blink_rate=0.3)\n"
            "whole = m(AudioFeatures(v, 25.0, 'whisper'), c)\n"
            "parts = list(m.stream((v[i:i + 50] for i in range(0, 130, 50)), 130, 25.0, c))\n"
            "print(len(whole), sum(map(len, parts)), 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["130", "130", "False"], out.stdout + out.stderr


def test_numpy_checkpoint_that_does_not_match_its_config_is_a_clear_error(tmp_path):
    import shutil

    from talkinghead.errors import InputError
    from talkinghead.motion.registry import shipped

    for name in ("config.json", "model.safetensors"):
        shutil.copy(shipped("fd2talk_expression") / name, tmp_path / name)
    text = (tmp_path / "config.json").read_text()
    for depth in (5, 3):              # a block missing, a block left over
        (tmp_path / "config.json").write_text(text.replace('"depth": 4', f'"depth": {depth}'))
        with pytest.raises(InputError, match="do not match"):
            NumpyMotionDiT.from_checkpoint(tmp_path)

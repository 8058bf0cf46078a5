"""The numpy Whisper path (log-mel + encoder) against the torch reference, and its import promise."""

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from talkinghead.audio.features import WhisperExtractor, _mel_filters, whisper_mel
from talkinghead.audio.whisper import build_audio_encoder, ctranslate2_to_hf, encode_window, load_encoder
from talkinghead.audio.whisper_numpy import (EncoderConfig, NumpyAudioEncoder, ctranslate2_names,
                                             load_numpy_encoder)
from talkinghead.errors import TalkingHeadError
from talkinghead.io.audio import read_audio

pytestmark = pytest.mark.usefixtures("one_thread_module")   # tests/conftest.py: one torch thread

TINY = dict(d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32,
            num_mel_bins=80, max_source_positions=20)


def _torch_mel(samples: np.ndarray, dtype=torch.float32) -> np.ndarray:
    """Whisper's log-mel as torch computes it (torch.stft: centred, reflect-padded, periodic Hann)."""
    x = torch.from_numpy(np.asarray(samples, np.float32)).to(dtype)
    spec = torch.stft(x, 400, 160, window=torch.hann_window(400, dtype=dtype), return_complex=True)
    power = spec[:, :-1].abs() ** 2                                       # (201, F)
    filters = torch.from_numpy(_mel_filters(400, 80, 0.0, 8000.0)).to(dtype)
    log = torch.log10(torch.clamp(filters.T @ power, min=1e-10))
    log = torch.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).numpy()


def _numpy_state(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def speech(speech_path) -> np.ndarray:
    return read_audio(speech_path).mono()


@pytest.fixture(scope="module")
def encoders():
    return load_encoder(), load_numpy_encoder()


def test_debug_encoder_equals_torch():
    torch.manual_seed(0)
    reference = build_audio_encoder(**TINY)
    for p in reference.parameters():                      # LN weights and biases away from 1 and 0
        torch.nn.init.normal_(p, std=0.5)
    encoder = NumpyAudioEncoder(_numpy_state(reference), EncoderConfig(**TINY))
    mel = torch.randn(2, 80, 40)
    with torch.no_grad():
        for window in (mel, mel[..., :13], mel[..., :2]):  # the positional table cut; an odd length
            want = encode_window(reference, window).numpy()
            got = encoder(window.numpy())
            assert got.shape == want.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max())
            np.testing.assert_allclose(encoder(window[1].numpy()), want[1], atol=2e-5 * np.abs(want).max())


def test_strict_load_and_bad_windows():
    state = _numpy_state(build_audio_encoder(**TINY))
    config = EncoderConfig(**TINY)
    for broken in ({k: v for k, v in state.items() if k != "layers.1.fc2.bias"},
                   {**state, "layers.0.self_attn.k_proj.bias": np.zeros(16, np.float32)},
                   {**state, "conv1.weight": state["conv1.weight"][:, :40]}):
        with pytest.raises(TalkingHeadError, match="do not match"):
            NumpyAudioEncoder(broken, config)
    encoder = NumpyAudioEncoder(state, config)
    with pytest.raises(ValueError, match="log-mel"):
        encoder(np.zeros((40, 12), np.float32))
    with pytest.raises(ValueError, match="over the encoder"):
        encoder(np.zeros((80, 42), np.float32))             # 21 frames, the table holds 20


def test_numpy_name_map_writes_the_torch_file(tmp_path):
    """The cache written by safetensors.numpy is the file safetensors.torch wrote (an existing
    cache still loads, a new one is the same bytes)."""
    from safetensors.numpy import save_file as save_numpy
    from safetensors.torch import save_file as save_torch

    var = {"conv1/weight": np.ones((4, 80, 3)), "conv1/bias": np.arange(4.0),
           "conv2/weight": np.ones((4, 4, 3)), "conv2/bias": np.zeros(4),
           "position_encodings/encodings": np.ones((6, 4)), "layer_norm/gamma": np.ones(4),
           "layer_norm/beta": np.zeros(4)}
    p = "layer_0/"
    var.update({p + "self_attention/linear_0/weight": np.arange(48.0).reshape(12, 4),
                p + "self_attention/linear_0/bias": np.arange(12.0)})
    for name in ("self_attention/linear_1", "ffn/linear_0", "ffn/linear_1"):
        var[p + name + "/weight"], var[p + name + "/bias"] = np.ones((4, 4)), np.ones(4)
    for name in ("self_attention/layer_norm", "ffn/layer_norm"):
        var[p + name + "/gamma"], var[p + name + "/beta"] = np.ones(4), np.zeros(4)
    var = {k: np.asarray(v, np.float32) for k, v in var.items()}
    names = ctranslate2_names(var)
    qkv = var[p + "self_attention/linear_0/weight"]
    assert np.array_equal(names["layers.0.self_attn.k_proj.weight"], qkv[4:8])
    assert "layers.0.self_attn.k_proj.bias" not in names
    save_numpy(names, str(tmp_path / "numpy.safetensors"))
    save_torch(ctranslate2_to_hf(var), str(tmp_path / "torch.safetensors"))
    assert (tmp_path / "numpy.safetensors").read_bytes() == (tmp_path / "torch.safetensors").read_bytes()


def test_mel_equals_torch_within_float32_rounding(speech):
    x = np.concatenate([speech, np.random.default_rng(0).standard_normal(1234).astype(np.float32) * 0.1])
    got = whisper_mel(x)
    want = _torch_mel(x)
    exact = _torch_mel(x, torch.float64)
    assert got.shape == want.shape == (80, len(x) // 160) and got.dtype == np.float32
    err_numpy, err_torch = np.abs(got - exact).max(), np.abs(want - exact).max()
    print(f"mel: max |numpy - torch| {np.abs(got - want).max():.2e}; from float64: numpy {err_numpy:.2e}, "
          f"torch {err_torch:.2e}")
    assert np.abs(got - want).max() < 1e-4 and err_numpy <= 2 * err_torch + 1e-6


def test_real_encoder_equals_torch_on_speech(speech, encoders):
    """The sample's first window (4 s): both float32 encoders against torch in float64."""
    torch_encoder, numpy_encoder = encoders
    mel = whisper_mel(speech)                                             # (80, 400)
    got = numpy_encoder(mel)
    with torch.inference_mode():
        want = encode_window(torch_encoder, torch.from_numpy(mel)[None])[0].numpy()
        reference = copy.deepcopy(torch_encoder).double()
        exact = encode_window(reference, torch.from_numpy(mel).double()[None])[0].numpy()
    scale = np.abs(exact).max()
    diff, err_numpy, err_torch = (np.abs(a - b).max() for a, b in ((got, want), (got, exact), (want, exact)))
    print(f"Whisper-base, sample window: max |numpy - torch| {diff:.2e} ({diff / scale:.1e} of max "
          f"{scale:.1f}); from float64: numpy {err_numpy:.2e}, torch {err_torch:.2e}")
    assert got.shape == (200, 512)
    assert diff < 1e-4 * scale and err_numpy < 1e-4 * scale


def test_extractor_numpy_equals_torch(speech_path, encoders):
    clip = read_audio(speech_path)
    via_numpy = WhisperExtractor(encoders[1])(clip, 25).values
    via_torch = WhisperExtractor(encoders[0])(clip, 25).values
    scale = np.abs(via_torch).max()
    print(f"WhisperExtractor on the sample: max |numpy - torch| {np.abs(via_numpy - via_torch).max():.2e} "
          f"of max {scale:.1f}")
    assert via_numpy.shape == via_torch.shape == (100, 512)
    assert np.abs(via_numpy - via_torch).max() < 1e-4 * scale


def test_whisper_and_mel_features_never_import_torch(speech_path):
    code = ("import sys; from talkinghead.audio.features import get_extractor; "
            "from talkinghead.io.audio import read_audio; "
            f"clip = read_audio({str(speech_path)!r}); ex = get_extractor('whisper'); "
            "values = ex(clip, 25).values; chunks = list(ex.chunks(clip, 25)); "
            "assert values.shape == (100, 512) and sum(map(len, chunks)) == 100; "
            "assert get_extractor('mel')(clip, 25).values.shape == (100, 320); "
            "print(*sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    assert out.stdout.strip() == ""


def test_mapped_weights_equal_safetensors_load(tmp_path):
    from safetensors.numpy import load_file, save_file

    from talkinghead.audio.whisper_numpy import cached_weights, map_safetensors

    path = cached_weights()
    mapped, loaded = map_safetensors(path), load_file(str(path))
    assert mapped.keys() == loaded.keys()
    assert all(np.array_equal(mapped[k], loaded[k]) and mapped[k].dtype == np.float32 for k in loaded)
    other = {"a": np.arange(6, dtype=np.float16).reshape(2, 3), "b": np.ones(3, np.float32)}
    save_file(other, str(tmp_path / "half.safetensors"))                  # not all float32: load_file
    back = map_safetensors(tmp_path / "half.safetensors")
    assert back["a"].dtype == np.float16 and np.array_equal(back["a"], other["a"])


def test_a_truncated_weight_file_is_a_clear_error(tmp_path):
    from talkinghead.audio.whisper_numpy import cached_weights, map_safetensors

    broken = tmp_path / "cut.safetensors"
    with open(cached_weights(), "rb") as f:
        broken.write_bytes(f.read(20000))                                  # the header and a little
    with pytest.raises(TalkingHeadError, match="delete it"):
        map_safetensors(broken)
    (tmp_path / "junk.safetensors").write_bytes(b"\x05\0\0\0\0\0\0\0{junk")
    with pytest.raises(TalkingHeadError, match="not a readable safetensors"):
        map_safetensors(tmp_path / "junk.safetensors")


def test_the_cache_is_built_from_the_packages_without_torch(tmp_path):
    """`cached_weights()` in a fresh cache folder: parsed from the CTranslate2 packages and
    written with safetensors.numpy, torch never imported; the same bytes as the cache in use."""
    from talkinghead.audio.whisper_numpy import cached_weights

    code = ("import sys; from talkinghead.audio.whisper_numpy import cached_weights; "
            "print(cached_weights(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "TALKINGHEAD_CACHE": str(tmp_path), "OPENBLAS_NUM_THREADS": "1"})
    path, torch_loaded = out.stdout.split()
    assert path == str(tmp_path / "whisper-base-encoder.safetensors") and torch_loaded == "False"
    assert (tmp_path / "whisper-base-encoder.safetensors").read_bytes() == cached_weights().read_bytes()

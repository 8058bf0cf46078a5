"""Audio features: Wav2Lip mel, Whisper-base (real weights), user wav2vec2/HuBERT loaders."""

import json
import struct

import numpy as np
import pytest
import torch

from talkinghead.audio.features import (MelExtractor, WhisperExtractor, Wav2Vec2Extractor,
                                        get_extractor, num_frames, wav2lip_mel, whisper_mel, windowed)
from talkinghead.audio.whisper import (build_encoder, ctranslate2_to_hf, encode_window, load_encoder,
                                       read_ctranslate2)
from talkinghead.errors import InputError
from talkinghead.io.audio import read_audio
from talkinghead.types import AudioClip

pytestmark = pytest.mark.usefixtures("one_thread_module")   # tests/conftest.py: one torch thread, measured faster


def _tone(seconds: float, hz: float = 220.0) -> AudioClip:
    t = np.arange(int(seconds * 16000)) / 16000
    return AudioClip((0.5 * np.sin(2 * np.pi * hz * t))[None].astype(np.float32), 16000)


def test_wav2lip_mel_settings():
    mel = wav2lip_mel(_tone(1.0).mono())
    assert mel.shape == (81, 80)                       # hop 200 at 16 kHz, centred frames
    assert mel.min() >= -4 and mel.max() <= 4
    band = np.argmax(mel[40])                          # a 220 Hz tone lights a low band
    assert band < 15


def test_wav2lip_mel_equals_torch_stft():
    """The numpy STFT frames as torch.stft(center=True, reflect) did (the former code, kept here
    as the reference)."""
    from talkinghead.audio.features import _mel_filters

    x = np.concatenate([_tone(1.3).mono(), np.random.default_rng(0).standard_normal(777).astype(np.float32)])
    pre = np.append(x[:1], x[1:] - 0.97 * x[:-1])
    spec = torch.stft(torch.from_numpy(pre), 800, 200, 800, torch.hann_window(800), center=True,
                      return_complex=True).abs()                                   # (401, F)
    db = 20 * torch.log10(torch.clamp(torch.from_numpy(_mel_filters(800, 80, 55.0, 7600.0)).T @ spec,
                                      min=1e-5)) - 20.0
    want = torch.clamp(8.0 * (db + 100.0) / 100.0 - 4.0, -4.0, 4.0).T.numpy()
    got = wav2lip_mel(x)
    assert got.shape == want.shape == (len(x) // 200 + 1, 80) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-4


def test_frames_per_video_frame():
    assert num_frames(16000, 25) == 25 and num_frames(16001, 25) == 26
    f = MelExtractor()(_tone(2.0), 25)
    assert f.values.shape == (50, 320) and f.fps == 25 and f.kind == "mel"


def test_windowed_encoding_matches_whole_encoding_for_a_local_encoder():
    x = np.random.default_rng(0).normal(size=16000 * 7 + 123).astype(np.float32)
    enc = lambda s: np.abs(s[: len(s) // 320 * 320]).reshape(-1, 320).mean(1, keepdims=True)  # 50 Hz
    whole = enc(x)
    parts = windowed(enc, x, 50.0, 2.0, 0.5)
    assert abs(len(parts) - len(whole)) <= 1
    n = min(len(parts), len(whole))
    assert np.allclose(parts[:n], whole[:n])


def _ct2_blob(variables: dict) -> bytes:
    def string(s: str) -> bytes:
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b
    out = struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<I", 3)
    out += struct.pack("<I", len(variables))
    for name, arr in variables.items():
        arr = np.asarray(arr, np.float32)
        out += string(name) + struct.pack("<B", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape)
        out += struct.pack("<BI", 0, arr.nbytes) + arr.tobytes()
    return out


def test_ctranslate2_reader_and_name_mapping_load_strictly():
    enc = build_encoder(d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32,
                        max_source_positions=20)
    sd = enc.state_dict()
    v = {"encoder/conv1/weight": sd["conv1.weight"], "encoder/conv1/bias": sd["conv1.bias"],
         "encoder/conv2/weight": sd["conv2.weight"], "encoder/conv2/bias": sd["conv2.bias"],
         "encoder/position_encodings/encodings": sd["embed_positions.weight"],
         "encoder/layer_norm/gamma": sd["layer_norm.weight"], "encoder/layer_norm/beta": sd["layer_norm.bias"],
         "decoder/ignored": np.zeros(3)}
    for i in range(2):
        h, p = f"layers.{i}.", f"encoder/layer_{i}/"
        q, k, vv = (sd[h + f"self_attn.{n}_proj.weight"] for n in "qkv")
        v[p + "self_attention/linear_0/weight"] = torch.cat([q, k, vv])
        v[p + "self_attention/linear_0/bias"] = torch.cat([sd[h + "self_attn.q_proj.bias"], torch.zeros(16),
                                                           sd[h + "self_attn.v_proj.bias"]])
        for ct, hf in (("self_attention/linear_1", "self_attn.out_proj"), ("ffn/linear_0", "fc1"),
                       ("ffn/linear_1", "fc2")):
            v[p + ct + "/weight"], v[p + ct + "/bias"] = sd[h + hf + ".weight"], sd[h + hf + ".bias"]
        for ct, hf in (("self_attention/layer_norm", "self_attn_layer_norm"), ("ffn/layer_norm", "final_layer_norm")):
            v[p + ct + "/gamma"], v[p + ct + "/beta"] = sd[h + hf + ".weight"], sd[h + hf + ".bias"]
    parsed = read_ctranslate2(_ct2_blob({k: t.numpy() if torch.is_tensor(t) else t for k, t in v.items()}))
    assert "ignored" not in " ".join(parsed)
    fresh = build_encoder(d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32,
                          max_source_positions=20)
    fresh.load_state_dict(ctranslate2_to_hf(parsed), strict=True)
    mel = torch.randn(1, 80, 40)
    with torch.no_grad():
        assert torch.allclose(encode_window(fresh, mel), enc(mel).last_hidden_state, atol=1e-5)


@pytest.fixture(scope="module")
def whisper():
    return WhisperExtractor()


def test_whisper_base_real_weights(whisper, speech_path):
    clip = read_audio(speech_path)
    f = whisper(clip, 25)
    assert f.values.shape == (100, 512) and np.isfinite(f.values).all()
    # the plain-torch encoder (and its cut positional table) is transformers' WhisperEncoder's
    # own computation for a full 30 s window, with the same weights
    x = np.tile(clip.mono(), 8)[:480000]
    lite = load_encoder()
    reference = build_encoder()
    reference.load_state_dict(lite.state_dict(), strict=True)
    with torch.no_grad():
        mel = torch.from_numpy(whisper_mel(x))[None]
        assert torch.allclose(encode_window(lite, mel), reference(mel).last_hidden_state, atol=1e-5)
    # speech and silence give different features; a repeat gives the same
    silent = whisper(AudioClip(np.zeros((1, 64000), np.float32), 16000), 25).values
    assert np.abs(f.values - silent).mean() > 0.1
    assert np.array_equal(f.values, whisper(clip, 25).values)


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert"])
def test_user_speech_checkpoint_loads_with_real_architecture(kind, tmp_path):
    from safetensors.torch import save_file
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    config_cls, model_cls = {"wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
                             "hubert": (HubertConfig, HubertModel)}[kind]
    config = config_cls()                                  # the base architecture (12 layers, 768)
    torch.manual_seed(0)
    model = model_cls(config)
    save_file({f"{kind}.{k}": v.contiguous() for k, v in model.state_dict().items()},
              str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    ex = get_extractor(kind, tmp_path)
    f = ex(_tone(1.5), 25)
    assert f.values.shape == (38, 768) and f.kind == kind


def test_speech_checkpoint_errors(tmp_path):
    with pytest.raises(InputError, match="speech-checkpoint"):
        get_extractor("wav2vec2")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(InputError, match="safetensors"):
        Wav2Vec2Extractor(tmp_path)
    with pytest.raises(InputError, match="unknown audio features"):
        get_extractor("deepspeech")

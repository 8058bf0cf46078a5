"""Speech-motion corpus: TTS phone timings, coarticulated visemes, blinks, prosodic head motion."""

import json
import shutil

import numpy as np
import pytest

from talkinghead.data.prosody import BlinkConfig, blink_curve, head_pose, pitch_energy
from talkinghead.data.tts import Phone
from talkinghead.data.visemes import MOUTH_CHANNELS, opening_track, viseme_track

needs_tts = pytest.mark.skipif(not (shutil.which("flite") and shutil.which("festival")),
                               reason="flite/festival not installed (apt-get install flite festival ...)")
JAW, PUCKER = MOUTH_CHANNELS.index("jawOpen"), MOUTH_CHANNELS.index("mouthPucker")


def _phones(spec):
    out, t = [], 0.0
    for name, dur in spec:
        out.append(Phone(name, t, t + dur))
        t += dur
    return out


def test_bilabial_closes_the_mouth_between_open_vowels():
    phones = _phones([("sil", 0.2), ("aa", 0.2), ("m", 0.08), ("aa", 0.2), ("sil", 0.2)])
    jaw = opening_track(phones, 22)
    closure = int(0.44 * 25)                       # centre of the m
    assert jaw[closure] < 0.4 * jaw[int(0.3 * 25)]


def test_long_pause_returns_to_rest_and_short_phones_blend():
    phones = _phones([("aa", 0.2), ("sil", 0.6), ("aa", 0.2)])
    jaw = opening_track(phones, 25)
    assert jaw[int(0.5 * 25)] < 0.03 and jaw[int(0.1 * 25)] > 0.4


def test_coarticulation_rounds_a_consonant_before_a_rounded_vowel():
    before_uw = viseme_track(_phones([("s", 0.08), ("uw", 0.2)]), 8)[1, PUCKER]
    before_iy = viseme_track(_phones([("s", 0.08), ("iy", 0.2)]), 8)[1, PUCKER]
    assert before_uw > before_iy + 0.1


def test_blinks_have_the_asked_rate_and_durations():
    rng = np.random.default_rng(0)
    n = 25 * 600
    curve = blink_curve(n, np.zeros(n, bool), rng, BlinkConfig(rate=0.3))
    starts = np.flatnonzero(np.diff((curve > 0.5).astype(int)) == 1)
    assert 0.2 < len(starts) / 600 < 0.4
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], curve > 0.05, [0]]).astype(int))))[::2]
    assert 2 <= np.median(runs) <= 10                   # 80-400 ms at 25 fps


def test_head_pose_starts_at_zero_and_moves_on_accents():
    rng = np.random.default_rng(1)
    t = np.arange(16000 * 6) / 16000
    f0_hz = 120 + 40 * (np.sin(2 * np.pi * 0.7 * t) > 0.6)
    speech = (0.3 * np.sin(2 * np.pi * np.cumsum(f0_hz) / 16000)).astype(np.float32)
    f0, energy = pitch_energy(speech, 150)
    assert (f0 > 0).mean() > 0.8                        # a voiced signal is found voiced
    assert np.exp(f0[f0 > 0]).min() > 100 and np.exp(f0[f0 > 0]).max() < 180
    pose = head_pose(f0, energy, np.ones(150, bool), 1, rng)
    assert np.allclose(pose[0], 0) and 0.5 < pose.std(0).max() < 10


@needs_tts
def test_tts_voices_report_phone_timings():
    from talkinghead.data.tts import ALL_VOICES

    for voice in (ALL_VOICES[0], ALL_VOICES[5]):      # one flite, one festival voice
        utt = voice.speak("My pet bumblebee.")
        names = [p.name for p in utt.phones]
        assert {"m", "b"} <= set(names) and names[0] == "sil"
        assert all(p.end > p.start for p in utt.phones)
        assert abs(utt.phones[-1].end - utt.duration) < 0.15


@needs_tts
def test_build_tiny_corpus_holds_out_a_voice(tmp_path):
    from talkinghead.data.corpus import CorpusConfig, build_corpus
    from talkinghead.training.motion_data import MotionCorpus

    cfg = CorpusConfig(hours=0.01, val_fraction=0.3, features=("mel",), nonspeech_prob=0.2,
                       voices=("flite:slt", "flite:awb", "flite:rms"))
    manifest = build_corpus(tmp_path, cfg, progress=False)
    assert manifest["splits"]["train"]["speech_seconds"] > 10
    assert json.loads((tmp_path / "manifest.json").read_text())["feature_dims"] == {"mel": 320}
    for split in ("train", "val"):
        with np.load(tmp_path / f"{split}-000.npz") as z:
            voices = set(z["voice"].tolist())
            assert len(z["expression"]) == len(z["features_mel"]) == z["offsets"][-1]
            assert z["expression"].shape[1] == 20 and z["pose"].shape[1] == 3
        assert (("flite:rms" in voices) or ("nonspeech:flite:rms" in voices)) == (split == "val")
    data = MotionCorpus(tmp_path, "train", "mel")
    batch = data.sample(4, 50, np.random.default_rng(0))
    assert batch.audio.shape == (4, 50, 320) and batch.pose[:, 0].abs().max() == 0


@needs_tts
@pytest.mark.usefixtures("one_thread")       # tests/conftest.py: a debug-size model, tiny batches
def test_training_on_a_tiny_tts_corpus_lowers_loss_on_the_held_out_voice(tmp_path):
    from talkinghead.data.corpus import CorpusConfig, build_corpus
    from talkinghead.training.run import train_motion

    cfg = CorpusConfig(hours=0.02, val_fraction=0.3, features=("mel",), seed=1,
                       voices=("flite:slt", "flite:awb", "flite:kal16", "flite:rms"))
    build_corpus(tmp_path / "corpus", cfg, progress=False)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"task": {"feature": "mel", "window": 50, "debug": True, "val_batches": 2},
                                  "train": {"steps": 80, "batch_size": 8, "eval_every": 40, "warmup": 5}}))
    r = train_motion("fd2talk_expression", config, str(tmp_path / "corpus"), tmp_path / "run", progress=False)
    assert r.history[-1]["val_loss"] < 0.85 * r.history[0]["val_loss"]

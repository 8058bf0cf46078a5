"""Live mode (#15): streaming API, bounded look-ahead, the WebSocket page in headless Chromium."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.motion.generate import MotionControls


def debug_models(seed: int = 0, audio_dim: int = 320):
    """FD2Talk's two DiTs, debug size (2 layers, 16 wide), every weight random (adaLN-Zero's
    zero gates too, so self-attention carries information along time)."""
    from talkinghead.motion.fd2talk import DiTConfig, MotionDiT

    torch.manual_seed(seed)
    expr = MotionDiT(DiTConfig.debug(channels=20, audio_dim=audio_dim, blink_rate=True))
    pose = MotionDiT(DiTConfig.debug(channels=3, audio_dim=audio_dim, num_styles=8))
    for model in (expr, pose):
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.3)
        model.eval()
    return expr, pose


def speech(seconds: float) -> np.ndarray:
    from talkinghead.assets import SAMPLE_DIR
    from talkinghead.io.audio import read_audio

    return read_audio(SAMPLE_DIR / "speech.wav").mono()[: int(seconds * 16000)]


def stream_motion(samples, chunk_s=0.02, config=None, steps=2):
    from talkinghead.audio.features import MelExtractor
    from talkinghead.motion.streaming import StreamWindow
    from talkinghead.pipelines.stream import StreamConfig, chunked, fd2talk_stream
    from talkinghead.types import Motion

    config = config or StreamConfig(window=StreamWindow(context=8, hop=2, lookahead=3))
    expr, pose = debug_models()
    stream = fd2talk_stream(config, MotionControls(seed=3, steps=steps), expr, pose, MelExtractor())
    hops = [m for c in chunked(samples, chunk_s) for m in stream.push(c)] + stream.finish()
    return Motion.concatenate(hops), hops


def test_stream_motion_is_one_frame_per_40ms_in_hops_and_independent_of_chunking():
    x = speech(1.3)
    motion, hops = stream_motion(x, 0.02)
    assert len(motion) == 33 and motion.relative                 # ceil(1.3 s * 25)
    assert [len(h) for h in hops] == [2] * 16 + [1]
    again, _ = stream_motion(x, 0.037)                            # other chunk sizes, same frames
    np.testing.assert_array_equal(motion.blendshapes, again.blendshapes)
    np.testing.assert_array_equal(motion.rotation, again.rotation)
    assert np.abs(motion.rotation[0]).max() == 0 and np.abs(motion.rotation).max() > 0


def test_a_change_in_the_audio_moves_only_frames_within_the_lookahead():
    from talkinghead.motion.streaming import StreamWindow

    x = speech(2.0)
    t = 25                                                        # frame of the change (1.0 s)
    y = x.copy()
    y[t * 640:] = np.random.default_rng(0).normal(0, 0.3, len(y) - t * 640)
    a, _ = stream_motion(x)
    b, _ = stream_motion(y)
    reach = StreamWindow(context=8, hop=2, lookahead=3).reach     # 4 frames
    diff = np.abs(a.blendshapes - b.blendshapes).max(1) + np.abs(a.rotation - b.rotation).max(1)
    changed = np.flatnonzero(diff > 0)
    assert len(changed) and changed[0] >= t - reach               # nothing before t - lookahead
    assert changed[0] <= t                                        # ... and the change does arrive


def test_shown_frames_are_pinned_in_the_next_window():
    """The known frames of a window come out exactly as they were shown (x0 replacement), so
    the motion carries across hops instead of restarting."""
    from talkinghead.motion.streaming import frame_noise, sample_window

    expr, _ = debug_models()
    audio = torch.randn(1, 12, 320)
    known = torch.randn(5, 20)
    out = sample_window(expr, audio, known, frame_noise(0, 0, 12, 20), steps=3)
    torch.testing.assert_close(out[:5], known)
    free = sample_window(expr, audio, known[:0], frame_noise(0, 0, 12, 20), steps=3)
    assert not torch.allclose(out[5:], free[5:])                  # the past conditions the future


@pytest.mark.slow
def test_stream_pipeline_yields_frames_with_their_audio(portrait_path):
    from talkinghead.audio.features import MelExtractor
    from talkinghead.motion.streaming import StreamWindow
    from talkinghead.pipelines.stream import StreamConfig, StreamPipeline, chunked

    expr, pose = debug_models()
    cfg = StreamConfig(crop_size=128, window=StreamWindow(context=8, hop=2, lookahead=3))
    pipe = StreamPipeline(cfg, expr, pose, MelExtractor())
    x = speech(0.5)
    outs = list(pipe(portrait_path, chunked(x, 0.03), MotionControls(steps=2)))
    assert [o.index for o in outs] == list(range(13))             # ceil(0.5 s * 25)
    frame, audio = outs[0]
    assert frame.shape == (128, 128, 3) and frame.dtype == np.uint8 and audio.shape == (640,)
    sent = np.concatenate([o.audio for o in outs])
    np.testing.assert_array_equal(sent[: len(x)], x)              # the audio, in order, padded
    assert not sent[len(x):].any()
    assert len({o.frame.tobytes() for o in outs}) > 1             # the face moves

"""Live mode (#15): streaming API, bounded look-ahead, the WebSocket page in headless Chromium."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.motion.generate import MotionControls


def debug_models(seed: int = 0, audio_dim: int = 320, backend: str = "torch"):
    """FD2Talk's two DiTs, debug size (2 layers, 16 wide), every weight random (adaLN-Zero's
    zero gates too, so self-attention carries information along time); torch modules or the
    same weights as `NumpyMotionDiT`s (live's default)."""
    from talkinghead.motion.fd2talk import DiTConfig, MotionDiT

    torch.manual_seed(seed)
    expr = MotionDiT(DiTConfig.debug(channels=20, audio_dim=audio_dim, blink_rate=True))
    pose = MotionDiT(DiTConfig.debug(channels=3, audio_dim=audio_dim, num_styles=8))
    for model in (expr, pose):
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.3)
        model.eval()
    return (numpy_model(expr), numpy_model(pose)) if backend == "numpy" else (expr, pose)


def numpy_model(model):
    from talkinghead.motion.fd2talk_numpy import NumpyMotionDiT

    return NumpyMotionDiT(model.config, {k: v.numpy() for k, v in model.state_dict().items()})


def speech(seconds: float) -> np.ndarray:
    from talkinghead.assets import SAMPLE_DIR
    from talkinghead.io.audio import read_audio

    return read_audio(SAMPLE_DIR / "speech.wav").mono()[: int(seconds * 16000)]


def stream_motion(samples, chunk_s=0.02, config=None, steps=2, streams=None, backend="numpy"):
    from talkinghead.audio.features import MelExtractor
    from talkinghead.motion.streaming import StreamWindow
    from talkinghead.pipelines.stream import StreamConfig, chunked, fd2talk_stream
    from talkinghead.pipelines.stream import single_threaded
    from talkinghead.types import Motion

    config = config or StreamConfig(window=StreamWindow(context=8, hop=2, lookahead=3))
    expr, pose = debug_models(backend=backend)
    stream = fd2talk_stream(config, MotionControls(seed=3, steps=steps), expr, pose, MelExtractor())
    if streams is not None:
        streams.append(stream)
    with single_threaded():            # tiny operations: thread hand-offs cost more than they save
        hops = [m for c in chunked(samples, chunk_s) for m in stream.push(c)] + stream.finish()
    return Motion.concatenate(hops), hops


def test_stream_motion_is_one_frame_per_40ms_in_hops_and_independent_of_chunking():
    from talkinghead.motion.streaming import StreamWindow
    from talkinghead.pipelines.stream import StreamConfig

    x = speech(1.3)
    streams = []
    short = StreamConfig(window=StreamWindow(context=8, hop=2, lookahead=3), features_s=0.5, gate_s=0.5)
    motion, hops = stream_motion(x, 0.02, short, streams=streams)
    assert len(motion) == 33 and motion.relative                 # ceil(1.3 s * 25)
    assert [len(h) for h in hops] == [2] * 16 + [1]
    s = streams[0]                                                # memory: a bounded audio buffer
    assert len(s.buf) <= s.keep < len(x) and s.buf_start > 0 and s.model.known == 8
    again, _ = stream_motion(x, 0.037, short)                     # other chunk sizes, same frames
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


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_shown_frames_are_pinned_in_the_next_window(backend):
    """The known frames of a window come out exactly as they were shown (x0 replacement), so
    the motion carries across hops instead of restarting."""
    from talkinghead.motion.streaming import frame_noise, sample_window

    from talkinghead.pipelines.stream import single_threaded

    expr, _ = debug_models(backend=backend)
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((1, 12, 320)).astype(np.float32)
    known = rng.standard_normal((5, 20)).astype(np.float32)
    with single_threaded():
        out = sample_window(expr, audio, known, frame_noise(0, 0, 12, 20), steps=3)
        free = sample_window(expr, audio, known[:0], frame_noise(0, 0, 12, 20), steps=3)
    out, free = np.asarray(out), np.asarray(free)                 # numpy in, numpy out; or tensors
    np.testing.assert_array_equal(out[:5], known)
    assert np.abs(out[5:] - free[5:]).max() > 1e-3                # the past conditions the future


def test_frame_noise_is_torchs_draw_per_frame_without_torch():
    """Noise of absolute frame f = torch.randn(C) from a generator seeded seed * 1_000_003 + f:
    torch's float Box-Muller (20 expression channels, to 1-2 ulp) and its double one (3 pose
    channels, exactly); equal to TorchGenerator's draw bit for bit; batched over seeds."""
    from talkinghead.diffusion.torch_rng import TorchGenerator
    from talkinghead.motion.streaming import frame_noise, torch_frame_noise

    for c in (20, 3, 16, 1):
        for seed in (0, 7, 2 ** 33 + 5):                          # above 2^32: torch keeps 32 bits
            x = frame_noise(seed, 4, 30, c)
            assert x.shape == (26, c) and x.dtype == np.float32
            np.testing.assert_allclose(x, torch_frame_noise(seed, 4, 30, c).numpy(), rtol=0, atol=5e-7)
            if c < 16:
                np.testing.assert_array_equal(x, torch_frame_noise(seed, 4, 30, c).numpy())
            np.testing.assert_array_equal(x[3], TorchGenerator(seed * 1_000_003 + 7).randn(c))
    both = frame_noise([2, 9], 10, 14, 20)                       # (B, T, C)
    np.testing.assert_array_equal(both[1], frame_noise(9, 10, 14, 20))
    np.testing.assert_array_equal(frame_noise(2, 0, 14, 20)[10:], both[0])   # per frame, not per call
    assert frame_noise(1, 5, 5, 3).shape == (0, 3) and frame_noise([1, 2], 5, 5, 20).shape == (2, 0, 20)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_numpy_stream_equals_the_torch_stream(sampler):
    """The same weights as NumpyMotionDiTs and as torch modules, hop after hop (the known frames
    pinned, batched seeds with a blink rate and none (NaN), a pose style, a pose gain): the same
    stream to float32 rounding; and the offline sampling `calibrate_alive` compares it with."""
    from talkinghead.motion.streaming import StreamingFD2Talk, StreamWindow, sample_offline
    from talkinghead.pipelines.stream import single_threaded

    models = {b: debug_models(backend=b) for b in ("numpy", "torch")}
    feats = np.random.default_rng(1).standard_normal((30, 320)).astype(np.float32)
    w = StreamWindow(context=6, hop=2, lookahead=3)
    kw = dict(seed=[4, 5], steps=3, sampler=sampler, pose_style=2, blink_rate=[0.3, None], pose_gain=1.5)
    streams = {b: StreamingFD2Talk(*m, w, **kw) for b, m in models.items()}
    with single_threaded():
        for first in range(0, 24, 2):
            a = feats[first - streams["numpy"].known:first + 5]
            (e, p), (e1, p1) = (s.step(a, first, 2) for s in streams.values())
            assert e.shape == (2, 2, 20) and p.shape == (2, 2, 3) and e.dtype == np.float32
            np.testing.assert_allclose(e, e1, rtol=0, atol=2e-5 * max(1, np.abs(e1).max()))
            np.testing.assert_allclose(p, p1, rtol=0, atol=2e-5 * max(1, np.abs(p1).max()))
        off = {b: sample_offline(*m, feats, 3, 2, sampler, 0.5, 1) for b, m in models.items()}
    for x, y in zip(off["numpy"], off["torch"]):
        assert x.shape[:2] == (3, 30)
        np.testing.assert_allclose(x, y, rtol=0, atol=2e-5 * max(1, np.abs(y).max()))
    with pytest.raises(ValueError, match="both be numpy or both torch"):
        StreamingFD2Talk(models["numpy"][0], models["torch"][1], w)


@pytest.mark.slow
def test_live_motion_on_the_shipped_models_matches_torch_and_never_imports_it():
    """Shipped checkpoints on the sample speech's Whisper features, 3 steps per 3-frame hop:
    numpy vs torch streams (measured: 8e-7 in blendshapes, 3e-6 deg). Then `talkinghead
    live`'s own path in a fresh process (the pipeline, its liveliness calibration, a LiveStream
    fed 1 s of the sample in real time): every frame out, and no torch in sys.modules."""
    import os
    import subprocess
    import sys
    import textwrap

    from talkinghead.audio.features import get_extractor
    from talkinghead.motion.fd2talk_numpy import NumpyMotionDiT
    from talkinghead.motion.registry import load_checkpoint, shipped
    from talkinghead.motion.streaming import StreamingFD2Talk, StreamWindow
    from talkinghead.pipelines.stream import hops_from_features, single_threaded

    names = ("fd2talk_expression", "fd2talk_pose")
    models = ([NumpyMotionDiT.from_checkpoint(shipped(n)) for n in names], [load_checkpoint(shipped(n)) for n in names])
    x = speech(2.0)
    with single_threaded():
        feats = get_extractor("whisper").frames(x, 25.0, len(x) // 640)
        hops = hops_from_features(feats, StreamWindow())
        out = []
        for m in models:
            s = StreamingFD2Talk(*m, StreamWindow(), seed=[0, 1], steps=3, blink_rate=[0.7, None], pose_style=1)
            parts = [s.step(h.features, h.first, h.emit) for h in hops]
            out.append([np.concatenate([p[i] for p in parts], 1) for i in (0, 1)])    # (2, 50, C)
    d = [float(np.abs(a - b).max()) for a, b in zip(*out)]
    print(f"numpy vs torch live motion: {d[0]:.1e} blendshapes, {d[1]:.1e} deg")
    assert out[0][0].shape == (2, 50, 20) and d[0] < 1e-5 and d[1] < 1e-4

    script = textwrap.dedent("""
        import asyncio, sys
        from talkinghead.assets import SAMPLE_DIR
        from talkinghead.io.audio import read_audio
        from talkinghead.motion.generate import MotionControls
        from talkinghead.pipelines.stream import StreamConfig, StreamPipeline
        from talkinghead.serve.live import LiveService, LiveSettings, feed_realtime

        cfg = StreamConfig(crop_size=128, alive_seconds=1.0, alive_seeds=1, alive_conditions=(0.5, 1.5))
        service = LiveService(LiveSettings(str(SAMPLE_DIR / "portrait.jpg"), controls=MotionControls(steps=2)),
                              StreamPipeline(cfg))
        stream = service.stream()

        async def run():
            feeder = asyncio.create_task(feed_realtime(stream, read_audio(SAMPLE_DIR / "speech.wav").mono()[:16000]))
            n = [m async for m in stream.frames()]
            await feeder
            return len(n)

        print(asyncio.run(run()), "torch" in sys.modules, service.pipeline.calibration(MotionControls(steps=2)))
    """)
    env = {**os.environ, "TALKINGHEAD_ALIVE_CACHE": "off", "OMP_NUM_THREADS": "1"}  # calibrated here
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    frames, torch_loaded, calibration = res.stdout.strip().splitlines()[-1].split(" ", 2)
    assert (frames, torch_loaded) == ("25", "False"), res.stdout
    assert calibration.startswith("AliveCalibration(blink_rate="), calibration


@pytest.mark.slow
def test_stream_pipeline_yields_frames_with_their_audio(portrait_path):
    from talkinghead.audio.features import MelExtractor
    from talkinghead.motion.streaming import StreamWindow
    from talkinghead.pipelines.stream import StreamConfig, StreamPipeline, chunked
    from talkinghead.pipelines.stream import single_threaded

    expr, pose = debug_models(backend="numpy")
    cfg = StreamConfig(crop_size=128, window=StreamWindow(context=8, hop=2, lookahead=3),
                       alive_seconds=2.0, alive_seeds=1)           # a short liveliness calibration
    pipe = StreamPipeline(cfg, expr, pose, MelExtractor())
    x = speech(0.5)
    with single_threaded():
        outs = list(pipe(portrait_path, chunked(x, 0.03), MotionControls(steps=2)))
    assert [o.index for o in outs] == list(range(13))             # ceil(0.5 s * 25)
    frame, audio = outs[0]
    assert frame.shape == (128, 128, 3) and frame.dtype == np.uint8 and audio.shape == (640,)
    sent = np.concatenate([o.audio for o in outs])
    np.testing.assert_array_equal(sent[: len(x)], x)              # the audio, in order, padded
    assert not sent[len(x):].any()
    assert len({o.frame.tobytes() for o in outs}) > 1             # the face moves


def test_fit_alive_matches_the_offline_blink_rate_and_pose_variance():
    from talkinghead.motion.streaming import fit_alive

    # streamed blinks/s rise with the condition: 0.15, 0.28, 0.5 at 0.5, 1, 1.5 (least squares:
    # 0.35 c - 0.04); offline blinks 0.3/s -> c = 0.971; pose variance 2.4 vs 1.5 -> gain 1.265
    cal = fit_alive(0.3, 2.4, (0.5, 1.0, 1.5), (0.15, 0.28, 0.5), 1.5)
    assert cal.blink_rate == pytest.approx((0.3 + 0.04) / 0.35, rel=1e-6)
    assert cal.pose_gain == pytest.approx(np.sqrt(2.4 / 1.5))
    assert fit_alive(9.0, 1.0, (0.5, 1.0, 1.5), (0.15, 0.28, 0.5), 1.0).blink_rate == 1.5   # clamped
    assert fit_alive(0.3, 1.0, (0.5, 1.0, 1.5), (0.3, 0.3, 0.2), 1.0).blink_rate is None      # no response


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_batched_streams_equal_single_streams(backend):
    from talkinghead.motion.streaming import StreamingFD2Talk, StreamWindow
    from talkinghead.pipelines.stream import single_threaded

    expr, pose = debug_models(backend=backend)
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((30, 320)).astype(np.float32)
    w = StreamWindow(context=6, hop=2, lookahead=3)
    one = [StreamingFD2Talk(expr, pose, w, s, 2, blink_rate=r, pose_gain=1.5) for s, r in ((4, 0.3), (5, None))]
    both = StreamingFD2Talk(expr, pose, w, [4, 5], 2, blink_rate=[0.3, None], pose_gain=1.5)
    with single_threaded():            # tiny operations, as in stream_motion
        for first in range(0, 24, 2):
            k = both.known
            a = feats[first - k:first + 5]
            e, p = both.step(a, first, 2)
            for i, m in enumerate(one):
                e1, p1 = m.step(a, first, 2)
                np.testing.assert_allclose(e[i], e1, atol=1e-5)
                np.testing.assert_allclose(p[i], p1, atol=1e-5)


@pytest.mark.slow
def test_calibrated_stream_blinks_and_moves_the_head_as_offline_sampling_does(monkeypatch):
    """Shipped FD2Talk models, on the same features (the real-speech set, looped to 40 s): the
    streamed sampler (3 steps per 3-frame hop) against the offline one (10 steps, whole clip),
    2 seeds each. Uncalibrated it blinks less; calibrated on the sample speech (`calibrate_alive`,
    not this audio) its blink count comes closer, within 25%, and its head-pose std within 20%."""
    from talkinghead.audio.features import get_extractor
    from talkinghead.evaluation.motion_stats import motion_stats
    from talkinghead.evaluation.testset import real_speech
    from talkinghead.motion.fd2talk_numpy import NumpyMotionDiT
    from talkinghead.motion.generate import to_motion
    from talkinghead.motion.registry import shipped
    from talkinghead.motion.streaming import StreamingFD2Talk, sample_offline
    from talkinghead.pipelines.stream import (StreamConfig, calibrate_alive, calibration_audio,
                                              hops_from_features, single_threaded)

    load = NumpyMotionDiT.from_checkpoint                          # live's models (no torch)
    expr, pose = load(shipped("fd2talk_expression")), load(shipped("fd2talk_pose"))
    ex = get_extractor(expr.feature)
    cfg, controls = StreamConfig(alive_seeds=2), MotionControls(steps=3)
    with monkeypatch.context() as m:   # only its audio is used: no pocketsphinx phones (4 CPU s)
        m.setattr("talkinghead.evaluation.lipsync.align_phones", lambda clip, text=None: [])
        x = np.resize(real_speech().clip.mono(), 40 * 16000)

    def stats(e, p):                              # blinks, pose std (deg) per seed
        s = [motion_stats(to_motion(e[i], p[i] - p[i, :1], 25.0)) for i in range(len(e))]
        return sum(m.blinks for m in s), float(np.mean([m.pose_std_deg for m in s]))

    def streamed(feats, cal):
        m = StreamingFD2Talk(expr, pose, cfg.window, [0, 1], 3, blink_rate=cal.blink_rate if cal else None,
                             pose_gain=cal.pose_gain if cal else 1.0)
        parts = [m.step(h.features, h.first, h.emit) for h in hops_from_features(feats, cfg.window)]
        return stats(*(np.concatenate([p[i] for p in parts], 1) for i in (0, 1)))

    with single_threaded():
        feats = ex.frames(x, 25.0, len(x) // 640)
        offline = stats(*sample_offline(expr, pose, feats, 2, 10))
        y = calibration_audio(cfg.alive_seconds)
        fy = ex.frames(y, 25.0, len(y) // 640)
        cal = calibrate_alive(cfg, controls, expr, pose, fy, hops_from_features(fy, cfg.window))
        plain, fixed = streamed(feats, None), streamed(feats, cal)
    # measured: offline 27 blinks, 1.73 deg; plain 21, 1.76; calibrated 31, 1.75 (on the same
    # features the pose gap is small: it comes from the stream's features, see docs/live.md)
    assert plain[0] < 0.85 * offline[0], (offline, plain)                 # the gap this closes
    assert abs(fixed[0] - offline[0]) < abs(plain[0] - offline[0]), (offline, plain, fixed, cal)
    assert abs(fixed[0] - offline[0]) <= 0.25 * offline[0], (offline, plain, fixed, cal)
    assert abs(fixed[1] - offline[1]) <= 0.2 * offline[1], (offline, plain, fixed, cal)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["file"])
def live_server(portrait_path, tmp_path, request):
    """The live app on a real uvicorn server (debug-size models, Wav2Lip mel features), fed a
    2-second file in real time. The 3 s jitter buffer lets even a machine loaded many times over
    finish every frame before it is due: this test is about pacing, transport and the page;
    latency is bench/bench_live.py's."""
    import threading

    import uvicorn

    from talkinghead.audio.features import MelExtractor
    from talkinghead.io.audio import write_wav
    from talkinghead.motion.streaming import StreamWindow
    from talkinghead.pipelines.stream import StreamConfig, StreamPipeline
    from talkinghead.serve.live import LiveService, LiveSettings, create_live_app
    from talkinghead.types import AudioClip

    wav = tmp_path / "speech.wav"
    write_wav(wav, AudioClip(speech(2.0)[None], 16000))
    expr, pose = debug_models(backend="numpy")
    pipe = StreamPipeline(StreamConfig(crop_size=128, window=StreamWindow(context=8, hop=5, lookahead=3),
                                       alive=False), expr, pose, MelExtractor())
    source = str(wav) if request.param == "file" else "mic"
    service = LiveService(LiveSettings(str(portrait_path), input=source, delay=3.0,
                                       controls=MotionControls(steps=1)), pipe)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_live_app(service), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    yield service, f"http://127.0.0.1:{port}", wav
    server.should_exit = True
    thread.join(10)


def run_page(url: str, service, *flags: str) -> dict:
    """Open the page in headless Chromium until it posts its figures; returns them."""
    import os
    import signal
    import subprocess

    from talkinghead.evaluation.report import chromium

    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium (apt-get install chromium-headless-shell)")
    proc = subprocess.Popen([browser, "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
                             "--autoplay-policy=no-user-gesture-required", *flags, url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert service.report_event.wait(60), "the page never reported"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)                         # the browser and its children
        proc.wait()
    return service.reports[0]


@pytest.mark.slow
def test_a_file_streams_through_the_websocket_into_headless_chromium_at_25_fps(live_server):
    service, url, _ = live_server
    page = run_page(f"{url}/live?auto=1&report=1", service)
    server = page["server"]
    assert page["indices"] == list(range(50)) and page["in_order"]    # 2 s at 25 fps, in order
    assert page["shown"] >= 49
    assert server["frames"] == server["expected_frames"] == 50
    if server["late_frames"]:            # the machine could not compute 2 s of frames in 5 s
        pytest.skip(f"too loaded to judge pacing: {server['late_frames']} of 50 frames late")
    arrivals = np.array(page["arrivals_ms"]) / 1000
    fps = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert 22 < fps < 28, (fps, server)                             # paced, not a burst
    assert np.diff(arrivals).max() < 0.2                            # no stall
    assert 2950 < server["latency_ms_median"] < 3100                # the jitter buffer


@pytest.mark.slow
@pytest.mark.parametrize("live_server", ["mic"], indirect=True)
def test_the_page_streams_its_microphone(live_server):
    """Chromium's fake capture device plays the wav as the microphone: the page's AudioWorklet
    sends it (16 kHz int16, 20 ms) for 2 s, then stops; every frame comes back in order."""
    service, url, wav = live_server
    page = run_page(f"{url}/live?auto=1&report=1&seconds=2", service, "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}")
    server = page["server"]
    assert 1.5 * 50 <= server["chunks"] <= 2.6 * 50                 # ~2 s of 20 ms chunks
    assert server["frames"] == server["expected_frames"] >= 35
    assert page["indices"] == list(range(server["frames"])) and page["in_order"]


def test_frame_messages_round_trip():
    from talkinghead.serve.live import decode_frame, encode_frame

    frame = np.full((16, 16, 3), 200, np.uint8)
    audio = np.linspace(-1, 1, 640, dtype=np.float32)
    index, back, jpeg = decode_frame(encode_frame(7, frame, audio))
    assert index == 7 and jpeg[:2] == b"\xff\xd8"
    np.testing.assert_allclose(back, audio, atol=1 / 32767)


def test_liveliness_calibration_is_kept_on_disk_per_model(tmp_path, monkeypatch):
    """A second pipeline with the same models reads the calibration instead of sampling it again
    (about 50 CPU s with the shipped models); other weights get their own."""
    import json

    from talkinghead.audio.features import MelExtractor
    from talkinghead.motion.streaming import StreamWindow
    from dataclasses import replace

    from talkinghead.pipelines.stream import StreamConfig, StreamPipeline, alive_cache_path, alive_key

    monkeypatch.setenv("TALKINGHEAD_CACHE", str(tmp_path))
    expr, pose = debug_models()
    cfg = StreamConfig(crop_size=128, window=StreamWindow(context=8, hop=2, lookahead=3),
                       alive_seconds=2.0, alive_seeds=1)
    controls = MotionControls(steps=2)
    first = StreamPipeline(cfg, expr, pose, MelExtractor()).calibration(controls)
    assert len(list((tmp_path / "live_alive").glob("*.json"))) == 1

    def fail(self, controls):
        raise AssertionError("sampled again")

    monkeypatch.setattr(StreamPipeline, "_calibrate", fail)
    second = StreamPipeline(cfg, expr, pose, MelExtractor()).calibration(controls)
    assert json.dumps(second.as_dict()) == json.dumps(first.as_dict())   # NaN-safe equality
    key = (controls.steps, controls.sampler, controls.pose_style, controls.blink_rate)
    other, _ = debug_models(seed=1)
    assert alive_key(cfg, key, other, pose, MelExtractor()) != \
        alive_key(cfg, key, expr, pose, MelExtractor())
    # settings after the motion (portrait size, still, scales) share it; the motion's do not
    same = alive_key(cfg, key, expr, pose, MelExtractor())
    assert alive_key(replace(cfg, crop_size=512, mode="full", still=True, pose_scale=0.5), key, expr, pose,
                     MelExtractor()) == same
    for changed in (dict(features_s=1.0), dict(alive_seeds=2), dict(window=StreamWindow(context=8, hop=3))):
        assert alive_key(replace(cfg, **changed), key, expr, pose, MelExtractor()) != same
    assert alive_key(cfg, (3,) + key[1:], expr, pose, MelExtractor()) != same
    # numpy models: keyed by their own arrays (stable, per weights, apart from the torch modules')
    (ne, npo), (ne1, _) = debug_models(backend="numpy"), debug_models(seed=1, backend="numpy")
    digest = alive_key(cfg, key, ne, npo, MelExtractor())
    assert digest == alive_key(cfg, key, *debug_models(backend="numpy"), MelExtractor())
    assert len({digest, alive_key(cfg, key, ne1, npo, MelExtractor()),
                alive_key(cfg, key, expr, pose, MelExtractor())}) == 3
    monkeypatch.setenv("TALKINGHEAD_ALIVE_CACHE", "off")
    assert alive_cache_path(digest) is None


def _default_live_key():
    """`alive_key` of `talkinghead live`'s defaults on the shipped models (recomputed here)."""
    from talkinghead.audio.features import get_extractor
    from talkinghead.motion.fd2talk_numpy import NumpyMotionDiT
    from talkinghead.motion.registry import shipped
    from talkinghead.pipelines.stream import StreamConfig, alive_key

    expr, pose = (NumpyMotionDiT.from_checkpoint(shipped(n)) for n in ("fd2talk_expression", "fd2talk_pose"))
    c = MotionControls(steps=3)                                      # `live --steps`'s default
    return alive_key(StreamConfig(), (c.steps, c.sampler, c.pose_style, c.blink_rate), expr, pose,
                     get_extractor(expr.feature)), (expr, pose)


def test_the_shipped_calibration_is_keyed_by_the_shipped_models_and_the_live_defaults():
    """talkinghead/weights/alive_calibration.json holds one calibration, under the key recomputed
    here from the shipped models' arrays (a retrained model or changed default fails this: rerun
    `python -m talkinghead.pipelines.stream --write-shipped-calibration`), made by that command."""
    import json

    from talkinghead.pipelines.stream import shipped_alive, shipped_alive_path

    digest, _ = _default_live_key()
    doc = json.loads(shipped_alive_path().read_text())
    assert list(doc["calibrations"]) == [digest]
    made = doc["calibrations"][digest]["made"]
    assert made["command"].endswith("--write-shipped-calibration") and len(made["git_commit"]) == 40
    assert made["cpu_s"] > 10                                        # measured, not written by hand
    cal = shipped_alive(digest)
    assert cal is not None and cal.conditions == (0.5, 1.0, 1.5)
    assert cal.blink_rate is None or 0.5 <= cal.blink_rate <= 1.5
    assert 0.5 < cal.pose_gain < 2 and cal.offline_pose_std > 0
    assert shipped_alive(digest[::-1]) is None


def test_non_default_live_settings_still_calibrate(tmp_path, monkeypatch):
    """Shipped models, other controls or settings: no shipped value, so the pipeline calibrates
    (here a stand-in for the 50 CPU s measurement) and caches it; the defaults do not."""
    from talkinghead.motion.streaming import AliveCalibration
    from talkinghead.pipelines.stream import StreamConfig, StreamPipeline

    monkeypatch.setenv("TALKINGHEAD_CACHE", str(tmp_path))
    _, (expr, pose) = _default_live_key()
    calls = []

    def calibrate(self, controls):
        calls.append(controls)
        return AliveCalibration(0.9, 1.1)

    monkeypatch.setattr(StreamPipeline, "_calibrate", calibrate)
    default = StreamPipeline(StreamConfig(), expr, pose)
    assert default.calibration(MotionControls(steps=3)).conditions == (0.5, 1.0, 1.5) and not calls
    assert default.calibration(MotionControls(steps=4)) == AliveCalibration(0.9, 1.1) and len(calls) == 1
    other = StreamPipeline(StreamConfig(features_s=1.0), expr, pose)
    assert other.calibration(MotionControls(steps=3)) == AliveCalibration(0.9, 1.1) and len(calls) == 2
    assert len(list((tmp_path / "live_alive").glob("*.json"))) == 2      # cached as before
    monkeypatch.setenv("TALKINGHEAD_ALIVE_CACHE", "off")                # off: always measured
    StreamPipeline(StreamConfig(), expr, pose).calibration(MotionControls(steps=3))
    assert len(calls) == 3


def test_the_shipped_calibration_writer_runs_the_real_calibration(tmp_path, monkeypatch):
    """The writer on a debug config: the real `calibrate_alive`, stored under the pipeline's key
    with how it was made; a pipeline then reads it without calibrating, other models do not."""
    import json

    from talkinghead.audio.features import MelExtractor
    from talkinghead.motion.streaming import StreamWindow
    from talkinghead.pipelines import stream

    monkeypatch.setenv("TALKINGHEAD_CACHE", str(tmp_path / "cache"))
    expr, pose = debug_models(backend="numpy")
    cfg = stream.StreamConfig(crop_size=128, window=StreamWindow(context=8, hop=2, lookahead=3),
                              alive_seconds=2.0, alive_seeds=1)
    controls, path = MotionControls(steps=2), tmp_path / "alive_calibration.json"
    doc = stream.write_shipped_alive(stream.StreamPipeline(cfg, expr, pose, MelExtractor()), controls,
                                     path, "test")
    (digest, entry), = doc["calibrations"].items()
    assert json.loads(path.read_text()) == json.loads(json.dumps(doc))
    assert entry["made"]["command"] == "test" and entry["made"]["cpu_s"] >= 0
    reference = stream.StreamPipeline(cfg, expr, pose, MelExtractor())._calibrate(controls)
    assert json.dumps(entry["calibration"]) == json.dumps(reference.as_dict())   # deterministic

    def fail(self, controls):
        raise AssertionError("calibrated despite the shipped value")

    monkeypatch.setattr(stream, "shipped_alive_path", lambda: path)
    monkeypatch.setattr(stream.StreamPipeline, "_calibrate", fail)
    got = stream.StreamPipeline(cfg, expr, pose, MelExtractor()).calibration(controls)
    assert json.dumps(got.as_dict()) == json.dumps(reference.as_dict())
    other, _ = debug_models(seed=1, backend="numpy")
    with pytest.raises(AssertionError, match="calibrated despite"):
        stream.StreamPipeline(cfg, other, pose, MelExtractor()).calibration(controls)


@pytest.mark.slow
def test_a_first_live_start_on_the_defaults_does_not_calibrate(tmp_path):
    """A fresh `talkinghead live` process, empty cache folder, default settings: the shipped
    calibration applies (calibrating raises here), the first hop renders, nothing is cached."""
    import os
    import subprocess
    import sys
    import textwrap

    from talkinghead.assets import SAMPLE_DIR

    script = textwrap.dedent("""
        import sys
        import uvicorn
        import talkinghead.serve.live as live
        from talkinghead.io.audio import read_audio
        from talkinghead.pipelines.stream import StreamPipeline, single_threaded

        def fail(self, controls):
            raise AssertionError("calibrated")

        StreamPipeline._calibrate = fail
        captured, make_app = [], live.create_live_app
        live.create_live_app = lambda service: (captured.append(service), make_app(service))[1]

        def first_frame(app, **kw):
            service = captured[0]
            cfg = service.pipeline.config
            x = read_audio(sys.argv[2]).mono()[:(cfg.window.hop + cfg.window.lookahead) * cfg.frame_samples]
            with single_threaded():
                frames = service.pipeline.session(service.state, service.settings.controls).push(x)
            print("frames", len(frames), service.pipeline.calibration(service.settings.controls).pose_gain)

        uvicorn.run = first_frame
        from talkinghead.cli import main
        main(["live", "--image", sys.argv[1], "--input", sys.argv[2]])
    """)
    env = {**os.environ, "TALKINGHEAD_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1", "GLOG_minloglevel": "2"}
    env.pop("TALKINGHEAD_ALIVE_CACHE", None)
    res = subprocess.run([sys.executable, "-c", script, str(SAMPLE_DIR / "portrait.jpg"),
                          str(SAMPLE_DIR / "speech.wav")], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    words = res.stdout.strip().splitlines()[-1].split()
    assert words[:2] == ["frames", "3"] and 0.5 < float(words[2]) < 2, res.stdout
    assert not list(tmp_path.rglob("*.json"))                        # nothing measured, nothing cached

"""The fast paths of issue #12 behave like the slow ones they replace: the threaded writer keeps
every frame in order and fails cleanly, the changed-rectangle YUV conversion equals a full one,
the plain-torch Whisper encoder and mel filters equal transformers', the generate path imports
neither transformers nor scipy.signal."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from talkinghead.errors import InputError
from talkinghead.io import video as V


def _frames(n: int, size: int = 96) -> list[np.ndarray]:
    """A still background with a moving bright square: frame i has its square at column 4 i."""
    yy, xx = np.mgrid[:size, :size]
    bg = np.stack([60 + xx // 2, 90 + yy // 3, 120 + (xx + yy) // 4], -1).astype(np.uint8)
    out = []
    for i in range(n):
        f = bg.copy()
        f[30:46, 4 * i:4 * i + 16] = 250
        out.append(f)
    return out


def _producer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "talkinghead-frames"]


def test_threaded_writer_keeps_every_frame_in_order(tmp_path):
    frames = _frames(12)
    out = tmp_path / "o.mp4"
    assert V.write_video(out, iter(frames), 25.0) == 12
    decoded = list(V.iter_frames(out))
    assert len(decoded) == 12
    for i, (a, b) in enumerate(zip(frames, decoded)):
        mse = np.mean((a.astype(np.float32) - b) ** 2)
        assert 10 * np.log10(255 ** 2 / mse) > 38, i
        cols = np.flatnonzero(b[38].mean(1) > 200)  # the square's columns in the decoded frame
        assert abs(cols.min() - 4 * i) <= 1, i
    assert not _producer_threads()


def test_a_reused_frame_buffer_is_still_encoded_frame_by_frame(tmp_path):
    """A producer that mutates one array must not be mistaken for an unchanged frame."""
    frames = _frames(6)
    buf = frames[0].copy()

    def reuse():
        for f in frames:
            buf[:] = f
            yield buf

    out = tmp_path / "o.mp4"
    V.write_video(out, reuse(), 25.0)
    decoded = list(V.iter_frames(out))
    for i, b in enumerate(decoded):
        assert abs(np.flatnonzero(b[38].mean(1) > 200).min() - 4 * i) <= 1


def test_producer_error_reaches_the_caller_and_leaves_no_file(tmp_path):
    def broken():
        yield from _frames(3)
        raise InputError("bad frame 3")

    out = tmp_path / "o.mp4"
    with pytest.raises(InputError, match="bad frame 3"):
        V.write_video(out, broken(), 25.0)
    assert not out.exists() and not list(tmp_path.iterdir())
    assert not _producer_threads()


def test_consumer_stop_closes_the_producer():
    closed = threading.Event()

    def endless():
        try:
            while True:
                yield np.zeros((4, 4, 3), np.uint8)
        finally:
            closed.set()

    source = V._Producer(endless(), depth=2)
    for i, _ in enumerate(source):
        if i == 5:
            break
    source.close()
    assert closed.is_set() and not source.thread.is_alive()


@pytest.mark.parametrize("size", [(96, 96), (64, 98)])
def test_changed_rectangle_yuv_equals_full_conversion(size):
    rng = np.random.default_rng(1)
    h, w = size
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    incremental = V._Yuv420()
    for k in range(8):
        frame = frame.copy()
        y, x = rng.integers(0, h - 9), rng.integers(0, w - 9)  # odd offsets and sizes too
        frame[y:y + rng.integers(1, 9), x:x + rng.integers(1, 9)] = rng.integers(0, 256, 3)
        planes = incremental(frame).copy()
        assert np.array_equal(planes, V._Yuv420()(frame)), k
    # against the BT.601 limited-range definition (luma of grey, chroma neutral)
    grey = np.full((4, 4, 3), 128, np.uint8)
    p = V._Yuv420()(grey)
    assert np.all(p[:4] == 126) and np.all(p[4:] == 128)


def test_plain_torch_whisper_encoder_equals_transformers():
    from talkinghead.audio.whisper import build_audio_encoder, build_encoder, encode_window

    tiny = dict(d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32,
                max_source_positions=20)
    reference = build_encoder(**tiny)
    lite = build_audio_encoder(**tiny)
    lite.load_state_dict(reference.state_dict(), strict=True)
    mel = torch.randn(2, 80, 40)
    with torch.no_grad():
        assert torch.allclose(lite(mel), reference(mel).last_hidden_state, atol=1e-6)
        assert torch.allclose(lite(mel[..., :14]), encode_window(reference, mel[..., :14]), atol=1e-6)


def test_mel_filters_equal_transformers():
    from transformers.audio_utils import mel_filter_bank

    from talkinghead.audio.features import _mel_filters

    for n_fft, lo, hi in ((800, 55.0, 7600.0), (400, 0.0, 8000.0)):
        ref = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=80,
                              min_frequency=lo, max_frequency=hi, sampling_rate=16000,
                              norm="slaney", mel_scale="slaney")
        assert np.allclose(_mel_filters(n_fft, 80, lo, hi), ref, atol=1e-7)


def test_tps_kernel_is_zero_at_the_centre():
    from talkinghead.render.tps import _kernel

    d2 = np.array([0.0, 1e-14, 0.25, 1.0, 4.0, -1e-9], np.float32)   # rounding: slightly < 0
    want = d2[2:5] * np.log(d2[2:5])
    k = _kernel(d2)
    assert np.isfinite(k).all() and abs(k[0]) < 1e-27 and abs(k[1]) < 1e-11 and abs(k[5]) < 1e-27
    assert np.allclose(k[2:5], want)


def test_tps_squared_distances_equal_the_direct_ones():
    from talkinghead.render.tps import _sq_dist

    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, (40, 2)), rng.uniform(0, 1, (30, 2))
    direct = ((a[:, None] - b[None]) ** 2).sum(-1)
    assert np.allclose(_sq_dist(a, b), direct, rtol=0, atol=1e-14)
    d = _sq_dist(a.astype(np.float32), b.astype(np.float32))
    assert d.dtype == np.float32 and np.allclose(d, direct, rtol=0, atol=1e-6)


def test_frames_drawn_in_the_active_box_equal_the_whole_box(portrait, portrait_face):
    """The renderer draws only where its warp can move pixels (and falls back to the whole
    region box when the mesh leaves that part): frames equal the whole box's, also after a
    head moved far and back."""
    from dataclasses import replace

    from talkinghead.render.geometric import GeometricRenderer, RenderConfig
    from talkinghead.types import BS, Motion

    r = GeometricRenderer(RenderConfig(seal_gain=2.5))
    part = r.prepare(portrait, portrait_face)
    x0, y0, x1, y1 = part.box
    assert part.active != (0, 0, x1 - x0, y1 - y0)        # the shortcut is taken on the sample
    xs, ys = np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32)
    whole = replace(part, active=(0, 0, x1 - x0, y1 - y0), base=np.stack(np.meshgrid(xs, ys), -1),
                    out=part.out.copy(), work=part.work.copy())
    for jaw, blink, yaw, tx in [(0.5, 0.0, 0.0, 0.0), (0.2, 1.0, 25.0, 6.0), (0.8, 0.3, 0.0, 0.0),
                                (0.0, 0.0, -30.0, -8.0), (0.4, 0.0, 5.0, 0.0)]:
        b = np.zeros((1, 52))
        b[0, BS["jawOpen"]], b[0, BS["eyeBlinkLeft"]], b[0, BS["eyeBlinkRight"]] = jaw, blink, blink
        m = Motion(b, np.array([[yaw, 0.0, 0.0]]), np.array([[tx, 0.0, 0.0]]), np.ones(1),
                   np.zeros((1, 2)), relative=True)
        assert np.array_equal(r.render(part, m), r.render(whole, m))


def test_mouth_similarity_in_closed_form_equals_umeyama():
    """The per-frame skull similarity (closed form, #12) equals Umeyama's SVD form, reflections
    of the point set included (where Umeyama's sign correction takes the rotation)."""
    from talkinghead.render.mouth import _similarity

    def umeyama(src, dst):
        ms, md = src.mean(0), dst.mean(0)
        a, b = src - ms, dst - md
        u, sv, vt = np.linalg.svd(b.T @ a)
        d = np.sign(np.linalg.det(u @ vt))
        rot = u @ np.diag([1.0, d]) @ vt
        s = float((sv * [1.0, d]).sum() / max((a ** 2).sum(), 1e-9))
        return lambda p: s * (p - ms) @ rot.T + md

    rng = np.random.default_rng(3)
    for k in range(40):
        src = rng.uniform(0, 100, (11, 2))
        t = np.radians(rng.uniform(-40, 40))
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) * rng.uniform(0.7, 1.3)
        dst = src @ rot.T + rng.uniform(-20, 20, 2) + rng.normal(0, 2.0 if k % 2 else 0.0, src.shape)
        if k % 4 == 3:
            dst[:, 0] *= -1                                     # mirrored: no proper fit exists
        p = rng.uniform(0, 100, (11, 2))
        assert np.allclose(_similarity(src, dst)(p), umeyama(src, dst)(p), rtol=0, atol=1e-9), k


def _composite_direct(frame, mf, tex, strength, style, anchor) -> None:
    """render/mouth.py's mouth composite before #12's sixth round, as the direct reference: the
    whole box around the lips from np.mgrid, np.clip, no crop to where alpha reaches."""
    import cv2

    from talkinghead.render.mouth import LIP_SHADE, _cavity
    from talkinghead.render.teeth import COLS, ROWS

    h, w = frame.shape[:2]
    corners = mf.origin + np.outer(np.array([0.0, 1.0]) * mf.width, mf.axis)
    pts = np.concatenate([corners + np.outer(mf.ub.min() * np.ones(2), mf.normal),
                          corners + np.outer(mf.lb.max() * np.ones(2), mf.normal)])
    x0, y0 = int(max(0, np.floor(pts[:, 0].min()) - 2)), int(max(0, np.floor(pts[:, 1].min()) - 2))
    x1, y1 = int(min(w, np.ceil(pts[:, 0].max()) + 3)), int(min(h, np.ceil(pts[:, 1].max()) + 3))
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xs - mf.origin[0], ys - mf.origin[1]
    a = (dx * mf.axis[0] + dy * mf.axis[1]) / mf.width
    b = dx * mf.normal[0] + dy * mf.normal[1]
    b_up, b_lo = mf.lines(a)
    inside = np.clip((np.minimum(b - b_up, b_lo - b) + 0.5) / style.edge, 0.0, 1.0) * (a > 0) * (a < 1)
    if not inside.any():
        return
    top = b_up if anchor is None else np.interp(a, *anchor)
    d, e = (b - top) / mf.width, (b_lo - b) / mf.width
    col = np.clip(a * COLS - 0.5, 0, COLS - 1)
    g = np.interp(col, np.arange(COLS), tex.gap)
    ext = np.interp(col, np.arange(COLS), tex.upper) if tex.upper is not None else 0.5 * g
    upper = d <= ext
    row_w = np.where(upper, np.maximum(d, 0.03), g - e)
    valid = (upper | (e <= g - ext)) & (row_w < ROWS / COLS)
    sample = cv2.remap(tex.tex, col.astype(np.float32), (row_w * COLS - 0.5).astype(np.float32),
                       cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    color = np.where(valid[..., None], sample, _cavity(a, e, g - ext, style))
    shade = (LIP_SHADE + (1 - LIP_SHADE) * np.clip((b - b_up) / mf.width / 0.03, 0, 1)) * (
        0.85 + 0.15 * np.clip(e / 0.03, 0, 1))
    alpha = (inside * strength)[..., None]
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(roi * (1 - alpha) + color * shade[..., None] * alpha + 0.5,
                                  0, 255).astype(np.uint8)


def test_mouth_painted_in_its_alpha_box_equals_the_direct_composite(monkeypatch, portrait,
                                                                   portrait_face):
    """The mouth composite (#12: broadcast offsets, in-place clamps, only the rows and columns
    its alpha reaches, the closed-form skull similarity) paints what the direct one painted, on
    the renderer's own meshes (jaw, lip raise, head turns), with the portrait's own teeth and
    with the plain band; at most 1 level apart (the similarity's rounding), almost all equal."""
    import talkinghead.render.mouth as M
    from talkinghead.render.geometric import GeometricRenderer
    from talkinghead.types import BS, Motion

    r = GeometricRenderer()
    state = r._prepare(portrait, portrait_face)
    styles = [state.mouth, M.mouth_style(portrait, portrait_face.landmarks, bank=False, own=False)]
    assert styles[0].own is not None and styles[1].own is None
    painted = 0
    for jaw, up, yaw, roll in [(0.3, 0.0, 0.0, 0.0), (0.8, 0.5, 20.0, 0.0), (0.05, 0.0, 0.0, 0.0),
                               (1.2, 0.2, -25.0, 10.0), (0.5, 1.0, 5.0, -8.0)]:
        b = np.zeros((1, 52))
        b[0, BS["jawOpen"]], b[0, BS["mouthUpperUpLeft"]], b[0, BS["mouthUpperUpRight"]] = jaw, up, up
        m = Motion(b, np.array([[yaw, 0.0, roll]]), np.zeros((1, 3)), np.ones(1), np.zeros((1, 2)),
                   relative=True)
        mesh, _ = r.dest_points(state, m)
        for style in styles:
            fast, direct = portrait.copy(), portrait.copy()
            M.paint_mouth(fast, mesh, state.mouth_gap, style)
            with monkeypatch.context() as mp:
                mp.setattr(M, "_composite", _composite_direct)
                M.paint_mouth(direct, mesh, state.mouth_gap, style)
            diff = np.abs(fast.astype(int) - direct)
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-4, (jaw, yaw, diff.max())
            painted += int((direct != portrait).any())
    assert painted >= 8                                   # the mouths were really painted


def test_generate_path_imports_neither_transformers_nor_scipy_signal():
    code = ("import sys; import talkinghead.pipelines.generate, talkinghead.audio.whisper; "
            "print(*sorted(m for m in ('transformers', 'scipy.signal') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_still_video_stays_still(tmp_path, portrait_path):
    """The encoder settings must not make a still picture drift as P-frames refine it."""
    import cv2

    from talkinghead.io.image import read_image

    frame = cv2.resize(read_image(portrait_path), (256, 256), interpolation=cv2.INTER_AREA)
    out = tmp_path / "still.mp4"
    V.write_video(out, (frame for _ in range(60)), 25.0)
    decoded = list(V.iter_frames(out))
    assert np.abs(decoded[0].astype(int) - decoded[-1]).mean() < 0.5


def test_feature_chunks_equal_the_whole_clip_features():
    """Whisper features per encoder window (what `generate` streams) are bit-identical to the
    whole clip's: windowed encoding, then frames at the video rate."""
    import torch

    from talkinghead.audio.features import WhisperExtractor, _to_fps, windowed
    from talkinghead.audio.whisper import build_audio_encoder

    torch.manual_seed(0)
    ex = WhisperExtractor(build_audio_encoder(d_model=16, encoder_layers=1, encoder_attention_heads=2,
                                              encoder_ffn_dim=32))
    x = np.random.default_rng(0).standard_normal(int(17.77 * 16000)).astype(np.float32) * 0.1
    for fps in (25.0, 30.0):
        t = int(np.ceil(len(x) / 16000 * fps - 1e-6))
        with torch.inference_mode():
            whole = _to_fps(windowed(ex.encode, x, 50.0, 8.0, 1.0), 50.0, fps, t)
        chunks = list(ex.frame_chunks(x, fps, t))
        assert len(chunks) == 3 and sum(map(len, chunks)) == t
        assert np.array_equal(np.concatenate(chunks), whole)


def _debug_fd2talk():
    """FD2TalkMotion over random debug transformers (modulation randomised too: adaLN-Zero
    starts every block as the identity, which would hide any seam)."""
    import torch

    from talkinghead.motion.fd2talk import DiTConfig, MotionDiT
    from talkinghead.motion.generate import FD2TalkMotion

    torch.manual_seed(0)
    m = FD2TalkMotion.__new__(FD2TalkMotion)
    m.expression = MotionDiT(DiTConfig.debug(channels=20, audio_dim=8, blink_rate=True)).eval()
    m.pose = MotionDiT(DiTConfig.debug(channels=3, audio_dim=8, num_styles=8)).eval()
    m.feature = "whisper"
    with torch.no_grad():
        for p in (*m.expression.parameters(), *m.pose.parameters()):
            p.normal_(0, 0.3)
    return m


@pytest.mark.parametrize("margin, close", [(100, True), (0, False)])
def test_motion_chunks_equal_the_whole_clip_sampling(monkeypatch, margin, close):
    """Motion sampled chunk by chunk with CHUNK_MARGIN frames of context equals sampling the
    whole clip at once; without the margin the chunks show (the test can fail)."""
    import talkinghead.motion.generate as G
    from talkinghead.audio.features import AudioFeatures
    from talkinghead.motion.generate import MotionControls
    from talkinghead.types import Motion

    from talkinghead.pipelines.generate import torch_threads

    monkeypatch.setattr(G, "CHUNK_MARGIN", margin)
    model, t = _debug_fd2talk(), 860
    feats = np.random.default_rng(1).standard_normal((t, 8)).astype(np.float32)
    controls = MotionControls(seed=2, steps=3, pose_style=3, blink_rate=0.4)
    with torch_threads(1):  # two threads of tiny ops spin against each other on a loaded machine
        whole = model(AudioFeatures(feats, 25.0, "whisper"), controls)
        parts = list(model.stream((feats[i:i + 200] for i in range(0, t, 200)), t, 25.0, controls))
    assert len(parts) >= 2 and len(parts[0]) == 200 - margin and sum(map(len, parts)) == t
    got = Motion.concatenate(parts)
    diff = max(np.abs(got.blendshapes - whole.blendshapes).max(), np.abs(got.rotation - whole.rotation).max())
    assert (diff < 1e-4) == close, diff
    once = list(model.stream([feats[:150]], 150, 25.0, controls))           # all at once: whole
    ref = model(AudioFeatures(feats[:150], 25.0, "whisper"), controls)
    assert len(once) == 1 and np.array_equal(once[0].blendshapes, ref.blendshapes)


@pytest.mark.slow
def test_models_loaded_without_random_init_are_identical():
    """`skip_init` (the pipeline's loads skip torch's random initialisation, which the strict
    loads overwrite) gives the same models, and other threads keep the real fillers."""
    import torch

    from talkinghead.audio.whisper import load_encoder
    from talkinghead.motion.generate import FD2TalkMotion
    from talkinghead.pipelines.generate import skip_init

    def tensors(m):
        return {**dict(m.named_parameters()), **dict(m.named_buffers())}

    # the torch models (the default ones are numpy: nothing to skip there, and no torch import)
    ref_model, ref_enc = FD2TalkMotion(backend="torch"), load_encoder()
    other = []

    def elsewhere():
        torch.manual_seed(0)
        other.append(torch.nn.Linear(4, 4).weight.detach().clone())

    with skip_init():
        model, enc = FD2TalkMotion(backend="torch"), load_encoder()
        t = threading.Thread(target=elsewhere)
        t.start()
        t.join()
        w = torch.nn.Linear(300, 300).weight      # this thread: left as allocated, not drawn
    torch.manual_seed(0)
    assert torch.equal(other[0], torch.nn.Linear(4, 4).weight)
    assert torch.nn.init.kaiming_uniform_.__module__ == "torch.nn.init"   # restored
    assert w.shape == (300, 300)
    for a, b in ((ref_model.expression, model.expression), (ref_model.pose, model.pose), (ref_enc, enc)):
        ta, tb = tensors(a), tensors(b)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    mel = torch.randn(1, 80, 200)
    with torch.no_grad():
        assert torch.equal(ref_enc(mel), enc(mel))


def test_face_model_loads_without_mediapipe_drawing_or_audio_modules():
    """The landmarker leaves matplotlib and sounddevice (mediapipe's drawing and audio tasks)
    unloaded, and those modules still load in full on first use."""
    code = ("import sys; from talkinghead.face.landmarker import FaceLandmarker; FaceLandmarker().close(); "
            "print(*sorted(m for m in ('matplotlib', 'sounddevice') if m in sys.modules)); "
            "import mediapipe as mp; print(mp.tasks.vision.drawing_utils.DrawingSpec.__name__, "
            "mp.tasks.audio.AudioClassifier.__name__, 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["", "DrawingSpec AudioClassifier True"], out.stdout


def test_cached_face_readings_equal_the_face_models_and_skip_it(tmp_path, monkeypatch, portrait_path):
    """CachedLandmarker: the first look runs the face model and stores its readings; the second
    returns the same arrays without loading it; a damaged entry is read again; "off" stores
    nothing."""
    from talkinghead.face.landmarker import CachedLandmarker, FaceLandmarker
    from talkinghead.io.image import read_image

    image = read_image(portrait_path)
    monkeypatch.setenv("TALKINGHEAD_FACE_CACHE", str(tmp_path / "faces"))
    with FaceLandmarker() as lm:
        ref = lm.detect(image)
    with CachedLandmarker() as lm:
        first = lm.detect(image)
        assert lm._task is not None
    files = list((tmp_path / "faces").glob("*.npz"))
    assert len(files) == 1 and len(ref) == len(first) == 1
    with CachedLandmarker() as lm:
        again = lm.detect(image)
        assert lm._task is None                      # the face model never loaded
        assert lm.detect(image[::-1].copy()) and lm._task is not None  # another image: a miss
    for a, b in ((ref[0], first[0]), (ref[0], again[0])):
        assert np.array_equal(a.landmarks, b.landmarks) and np.array_equal(a.blendshapes, b.blendshapes)
        assert np.array_equal(a.matrix, b.matrix) and a.image_size == b.image_size and a.num_faces == b.num_faces
    files[0].write_bytes(b"damaged")
    with CachedLandmarker() as lm:
        assert np.array_equal(lm.detect(image)[0].landmarks, ref[0].landmarks)
    monkeypatch.setenv("TALKINGHEAD_FACE_CACHE", "off")
    with CachedLandmarker() as lm:
        assert lm.directory is None and np.array_equal(lm.detect(image)[0].landmarks, ref[0].landmarks)
    blank = np.full((200, 200, 3), 127, np.uint8)    # no face: cached as none
    monkeypatch.setenv("TALKINGHEAD_FACE_CACHE", str(tmp_path / "faces"))
    with CachedLandmarker() as lm:
        assert lm.detect(blank) == []
    with CachedLandmarker() as lm:
        assert lm.detect(blank) == [] and lm._task is None


def test_speech_gate_filters_equal_scipy_and_import_no_scipy():
    """The speech gate's numpy filters equal scipy.ndimage's (exactly), and the gate no longer
    imports scipy.ndimage (0.25 CPU s of a cold start)."""
    from scipy.ndimage import maximum_filter1d, percentile_filter

    from talkinghead.motion.filters import _max_filter, _rank_filter

    rng = np.random.default_rng(0)
    for n in (1, 2, 50, 150, 1000):
        x = rng.normal(size=n).astype(np.float32)
        x[rng.random(n) < 0.2] = 1e3                          # the gate's "digital silence" rows
        loud = (rng.random(n) < 0.3).astype(np.float32)
        for size in (1, 3, 7, 101):
            assert np.array_equal(_rank_filter(x, 10, size, rows=37), percentile_filter(x, 10, size=size, mode="nearest"))
            assert np.array_equal(_max_filter(loud, size), maximum_filter1d(loud, size))
    code = ("import sys, numpy as np; from talkinghead.motion.filters import speech_gate; "
            "x = np.random.default_rng(0).normal(0, 0.1, 32000).astype(np.float32); x[8000:16000] *= 0.001; "
            "g = speech_gate(x, 50); assert 0 < g.mean() < 1, g; print('scipy.ndimage' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_first_chunk_samples_both_models_at_once_and_keeps_errors():
    from talkinghead.motion.generate import _both

    seen = []

    def sample(i):
        seen.append(threading.current_thread().name)
        return np.full(3, i)

    a, b = _both(sample, parallel=True)
    assert a.tolist() == [0, 0, 0] and b.tolist() == [1, 1, 1] and "talkinghead-pose" in seen

    def failing(i):
        if i == 1:
            raise InputError("pose failed")
        return np.zeros(1)

    with pytest.raises(InputError, match="pose failed"):
        _both(failing, parallel=True)
    assert not [t for t in threading.enumerate() if t.name == "talkinghead-pose"]

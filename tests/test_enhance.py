"""High-resolution enhancement (issue #19 part 3): Real-ESRGAN converted from ncnn equals the ncnn
runtime; the face enhancer's paste-back, stabiliser and streaming; generate --enhance; Hallo2's
VQ codebook predictor with temporal alignment trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.errors import TalkingHeadError

TINY = "realesr-animevideov3-x2"


def _image(size: int) -> np.ndarray:
    """A real photo crop (the astronaut's face), (size, size, 3) uint8."""
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut()[0:256, 128:384], (size, size), interpolation=cv2.INTER_AREA)


def _ncnn(name: str, image: np.ndarray) -> np.ndarray:
    """The ncnn runtime's output (CPU, float32 throughout) for RGB uint8 -> (3, H', W') in [0, 1]."""
    ncnn = pytest.importorskip("ncnn")
    from talkinghead.render.enhance.ncnn import source_files

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, flag, False)
    net.opt.num_threads = 1
    param, weights = source_files(name)
    net.load_param(str(param))
    net.load_model(str(weights))
    ex = net.create_extractor()
    data = np.ascontiguousarray(image.transpose(2, 0, 1), np.float32) / 255.0   # kept alive
    mat = ncnn.Mat(data)
    ex.input("data", mat)
    _, out = ex.extract("output")
    result = np.array(out).copy()
    del ex, net
    return result


def _torch(name: str, image: np.ndarray) -> np.ndarray:
    from talkinghead.render.enhance.ncnn import load_realesrgan

    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        return load_realesrgan(name)(x)[0].numpy()


@pytest.fixture(autouse=True)
def one_thread():
    """Small images and a tiny model: one torch thread is as fast, and two spin under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TALKINGHEAD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# -- (a) Real-ESRGAN from ncnn ------------------------------------------------------------------
def test_converted_srvgg_equals_ncnn_runtime(cache):
    for size in (24, 37):                       # odd size: the x2 model's bicubic resize at edges
        img = _image(size)
        ours, ref = _torch(TINY, img), _ncnn(TINY, img)
        assert ours.shape == ref.shape == (3, 2 * size, 2 * size)
        assert np.abs(ours - ref).max() < 1e-3
    files = list((cache / "realesrgan").glob("*.safetensors"))
    assert len(files) == 1 and TINY in files[0].name            # converted once, into the cache


@pytest.mark.slow
def test_converted_rrdbnet_equals_ncnn_runtime(cache):
    img = _image(16)                            # realesrgan-x4plus-anime: RRDBNet, 6 blocks
    ours, ref = _torch("realesrgan-x4plus-anime", img), _ncnn("realesrgan-x4plus-anime", img)
    assert ours.shape == ref.shape == (3, 64, 64)
    assert np.abs(ours - ref).max() < 1e-3


def test_converter_reads_the_graph_and_refuses_bad_files(cache):
    from talkinghead.render.enhance.ncnn import convert, load_realesrgan, source_files

    param, weights = source_files(TINY)
    config, state = convert(param.read_text(), weights.read_bytes())
    assert (config.arch, config.num_conv, config.upscale, config.out_scale) == ("srvgg", 16, 4, 2.0)
    assert state["body.0.weight"].shape == (64, 3, 3, 3) and state["body.1.weight"].shape == (64,)
    assert state["body.34.weight"].shape == (48, 64, 3, 3)     # 3 * 4 * 4 for the pixel shuffle
    with pytest.raises(TalkingHeadError, match="left over"):
        convert(param.read_text(), weights.read_bytes() + b"\0" * 8)
    with pytest.raises(TalkingHeadError, match="tag"):
        convert(param.read_text(), b"\1\2\3\4" + weights.read_bytes()[4:])
    with pytest.raises(TalkingHeadError, match="unknown Real-ESRGAN model"):
        load_realesrgan("gfpgan")
    x3 = convert(source_files("realesr-animevideov3-x3")[0].read_text(), weights.read_bytes())[0]
    assert x3.out_scale == 3.0


# -- (b) the face enhancer ----------------------------------------------------------------------
def _frames(n: int, moving: bool) -> list[np.ndarray]:
    """n frames 64x80: the photo, and (moving) a bright square sliding across its lower half."""
    base = np.zeros((64, 80, 3), np.uint8)
    base[:, 8:72] = _image(64)
    rng = np.random.default_rng(0)
    out = []
    for t in range(n):
        f = base.copy()
        f = np.clip(f.astype(np.int16) + rng.integers(-3, 4, f.shape), 0, 255).astype(np.uint8)  # noise
        if moving:
            f[44:56, 10 + 4 * t:22 + 4 * t] = 240
        out.append(f)
    return out


def test_face_enhancer_pastes_the_face_into_a_bicubic_frame(cache):
    import cv2

    from talkinghead.render.enhance.face import EnhanceConfig, FaceEnhancer

    frame = _frames(1, False)[0]
    enh = FaceEnhancer((30, 20, 50, 40), frame.shape[:2], EnhanceConfig(TINY, face_pad=0.25, stabilise=0))
    out = enh(frame)
    bic = cv2.resize(frame, (160, 128), interpolation=cv2.INTER_CUBIC)
    assert out.shape == (128, 160, 3) and out.dtype == np.uint8
    x0, y0, x1, y1 = enh.box
    assert (x0, y0, x1, y1) == (25, 15, 55, 45)
    outside = np.ones(out.shape[:2], bool)
    outside[2 * y0:2 * y1, 2 * x0:2 * x1] = False
    assert np.array_equal(out[outside], bic[outside])             # untouched outside the box
    inner = (slice(2 * y0 + 12, 2 * y1 - 12), slice(2 * x0 + 12, 2 * x1 - 12))
    sr = enh.upscale(frame[y0:y1, x0:x1])
    assert np.abs(out[inner].astype(np.float32) - sr[12:-12, 12:-12]).max() <= 1.0   # Real-ESRGAN inside
    assert np.abs(out[inner].astype(np.int16) - bic[inner]).mean() > 1.0              # and it differs
    edge = np.abs(out[2 * y0, 2 * x0:2 * x1].astype(np.int16) - bic[2 * y0, 2 * x0:2 * x1])
    assert edge.max() <= 2                                         # feathered to nothing at the edge


def test_stabiliser_cuts_flicker_in_static_regions_and_follows_motion(cache):
    from talkinghead.render.enhance.face import EnhanceConfig, FaceEnhancer

    frames = _frames(6, True)
    runs, faces = {}, None
    for stab in (0.0, 0.8):
        enh = FaceEnhancer((20, 10, 60, 54), frames[0].shape[:2], EnhanceConfig(TINY, stabilise=stab, face_pad=0.1))
        x0, y0, x1, y1 = enh.box
        faces = faces or [enh.upscale(f[y0:y1, x0:x1]) for f in frames]    # Real-ESRGAN once
        runs[stab] = [enh(f, face).astype(np.float32) for f, face in zip(frames, faces)]
    static = np.zeros((128, 160), bool)
    static[20:70, 40:120] = True                                   # the upper half never moves
    flick = {s: np.mean([np.abs(o[t] - o[t - 1])[static].mean() for t in range(1, 6)])
             for s, o in runs.items()}
    assert flick[0.8] < 0.8 * flick[0.0]
    square = (slice(2 * 44 + 4, 2 * 56 - 4), slice(2 * (10 + 20) + 4, 2 * (22 + 20) - 4))  # t = 5
    assert runs[0.8][5][square].mean() > 200                       # the moving square is not smeared


def test_enhance_frames_streams_and_maps_canvas_boxes(cache):
    from talkinghead.face.canvas import Canvas
    from talkinghead.render.enhance.face import EnhanceConfig, enhance_frames, output_box

    timings: dict[str, float] = {}
    out = list(enhance_frames(iter(_frames(3, False)), (20, 10, 60, 54), EnhanceConfig(TINY), timings))
    assert len(out) == 3 and out[0].shape == (128, 160, 3) and timings["enhance"] > 0
    assert list(enhance_frames(iter([]), (0, 0, 1, 1))) == []
    canvas = Canvas(np.zeros((400, 400, 3), np.uint8), (100, 50, 300, 250), (100, 100))
    assert output_box((10, 20, 30, 40), canvas) == (120, 90, 160, 130)


@pytest.mark.slow
def test_generate_enhance_doubles_the_output(tmp_path, portrait_path, speech_path, cache):
    from talkinghead.io.video import video_info
    from tests.conftest import run_cli

    from talkinghead.io.audio import read_audio, write_wav
    from talkinghead.types import AudioClip

    clip = read_audio(speech_path)
    speech = write_wav(tmp_path / "short.wav",           # 0.6 s: 15 frames
                       AudioClip(clip.samples[:, : int(0.6 * clip.sample_rate)], clip.sample_rate))
    out = tmp_path / "enh.mp4"
    r = run_cli("generate", "--image", portrait_path, "--audio", speech, "-o", out,
                "--crop", "--size", "128", "--enhance", TINY, "--quiet", timeout=600)
    assert r.returncode == 0, r.stderr
    info = video_info(out)
    assert (info.width, info.height, info.num_frames) == (256, 256, 15)
    r = run_cli("generate", "--image", portrait_path, "--audio", speech_path, "-o", tmp_path / "x.mp4",
                "--enhance", "gfpgan")
    assert r.returncode == 2 and "invalid choice" in r.stderr and not (tmp_path / "x.mp4").exists()


# -- (c) Hallo2's VQ codebook predictor with temporal alignment ----------------------------------
def test_vq_enhancer_shapes_and_temporal_alignment():
    from talkinghead.render.enhance.vq import VQEnhancer, debug_config

    torch.manual_seed(0)
    model = VQEnhancer(debug_config()).eval()
    lq = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    logits, feat = model.predict(lq)
    assert logits.shape == (2, 3, 16, 32) and feat.shape == (6, 16, 4, 4)
    assert model(lq).shape == lq.shape
    changed = lq.clone()
    changed[:, 2] = -changed[:, 2]                 # another third frame ...
    l2, _ = model.predict(changed)
    assert not torch.allclose(l2[:, 0], logits[:, 0])          # ... changes frame 0's codes (temporal attn)
    assert torch.allclose(model.predict(lq[:1])[0], logits[:1], atol=1e-5)  # clips stay apart
    with pytest.raises(ValueError, match="multiple of 4"):
        model.predict(torch.zeros(1, 2, 3, 18, 18))


@pytest.mark.slow
def test_vq_enhancer_training_lowers_the_loss(tmp_path):
    from talkinghead.render.enhance.vq import debug_config
    from talkinghead.training.enhance_tasks import VQEnhanceTask, VQTaskConfig
    from talkinghead.training.loop import TrainConfig, train

    rng = np.random.default_rng(0)
    photo = torch.from_numpy(_image(48)).permute(2, 0, 1).float() / 255.0
    clips = np.stack([np.stack([photo[:, y + t:y + t + 16, x:x + 16].numpy() for t in range(3)])
                      for y, x in rng.integers(0, 28, size=(12, 2))])             # (12, 3, 3, 16, 16)
    cfg = TrainConfig(steps=40, batch_size=4, lr=3e-3, warmup=5, eval_every=40, save_every=40,
                      log_every=40, ema_decay=0.0)
    vq = VQEnhanceTask(VQTaskConfig(stage="vq", size=16, frames=3), debug_config(), 4, clips)
    res = train(vq, cfg, tmp_path / "vq", progress=False)
    assert res.history[-1]["val_loss"] < 0.7 * res.history[0]["val_loss"]
    code = VQEnhanceTask(VQTaskConfig(stage="code", size=16, frames=3), debug_config(), 4, clips,
                         model=vq.model)
    res = train(code, cfg, tmp_path / "code", progress=False)
    assert res.history[-1]["val_ce"] < 0.8 * res.history[0]["val_ce"]
    assert (tmp_path / "code" / "model.safetensors").exists()

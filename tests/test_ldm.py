"""Latent diffusion renderers (render/ldm/): the VAE loader on a diffusers folder, DiffTalk's and
FD2Talk's conditioning paths pinned, chunking-independent sampling, training through the shared
loop on prepared shards (loss falls, resume), and `generate --renderer difftalk` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.render.ldm.difftalk import DiffTalkConfig, DiffTalkUNet, mask_mouth, outline_features
from talkinghead.render.ldm.fd2talk_render import FD2TalkRenderConfig, FD2TalkUNet

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(latent_channels=4, latent_size=8, channels=(16, 16), layers_per_block=1, heads=2, groups=8,
            cross_dim=16, cond_tokens=2, diffusion_steps=100)
MEL_DIM = 320                             # the "mel" extractor's width (what generate computes)


def write_shards(root: Path, videos: int = 2, frames: int = 80, size: int = 32, seed: int = 0) -> Path:
    """A prepared dataset (prepare's layout) of synthetic faces whose mouth opening follows the
    audio features: a face ellipse on a background, a dark mouth whose height is feature 0."""
    from talkinghead.data.prepare import FACE_BIT, LIP_BIT
    from talkinghead.types import Motion

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    names = []
    for k in range(videos):
        name = f"clip{k}"
        d = root / "shards" / name
        d.mkdir(parents=True)
        opening = np.clip(np.sin(np.arange(frames) / 3.0 + k) * 0.5 + 0.5, 0, 1)
        face = ((xx - 0.5) / 0.3) ** 2 + ((yy - 0.5) / 0.38) ** 2 < 1
        imgs, masks = [], []
        for o in opening:
            mouth = (np.abs(xx - 0.5) < 0.12) & (np.abs(yy - 0.72) < 0.02 + 0.06 * o)
            img = np.stack([0.3 + 0.4 * yy, 0.2 + 0.3 * xx, 0.5 + 0 * xx], -1)
            img[face] = (0.85, 0.65, 0.55 + 0.1 * k)
            img[mouth] = (0.2, 0.05, 0.05)
            imgs.append((img * 255).astype(np.uint8))
            masks.append(face.astype(np.uint8) * FACE_BIT | mouth.astype(np.uint8) * LIP_BIT)
        np.save(d / "frames.npy", np.stack(imgs))
        np.save(d / "masks.npy", np.stack(masks))
        feats = rng.normal(0, 0.1, (frames, MEL_DIM)).astype(np.float16)
        feats[:, 0] = opening
        np.save(d / "features.npy", feats)
        blend = np.zeros((frames, 52), np.float32)
        blend[:, 25] = opening                                   # jawOpen
        Motion(blend, rng.normal(0, 2, (frames, 3)), np.zeros((frames, 3)), np.full(frames, 0.3),
               np.full((frames, 2), 0.3)).save(d / "motion.npz")
        (d / "info.json").write_text(json.dumps({"features": "mel", "frames": frames, "size": size}))
        names.append(name)
    (root / "manifest.json").write_text(json.dumps({"shards": names, "config": {"expand": 1.6},
                                                    "videos": videos, "frames": videos * frames}))
    return root


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are 16 wide: a second torch thread buys nothing, and on a loaded machine its
    spin-waits cost far more CPU than the work (last session: 264 CPU s for this file at load
    4-9 with torch's 2 threads; 15 s with one). The suite's setting is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("ldm_data"))


def _difftalk(seed: int = 0, **kw) -> DiffTalkUNet:
    torch.manual_seed(seed)
    return DiffTalkUNet(DiffTalkConfig(**TINY, audio_dim=6, audio_window=2, audio_hidden=16,
                                       landmark_rays=8, landmark_hidden=16, **kw)).eval()


def _fd2talk(seed: int = 0, **kw) -> FD2TalkUNet:
    torch.manual_seed(seed)
    return FD2TalkUNet(FD2TalkRenderConfig(**TINY, **kw)).eval()


def _zero_cross_attention(model, first: bool) -> None:
    """Zero the output of every cross-attention's first (phi_1) or second (phi_2) attention."""
    from talkinghead.render.ldm.unet import SecondCrossAttention

    for name, m in model.unet.named_modules():
        if name.endswith("attn2"):
            target = m.to_out[0] if first else m.processor.to_out
            torch.nn.init.zeros_(target.weight)
            torch.nn.init.zeros_(target.bias)
            assert first or isinstance(m.processor, SecondCrossAttention)


@torch.no_grad()
def test_difftalk_conditioning_paths():
    m = _difftalk()
    g = torch.Generator().manual_seed(0)
    z, zm, zr = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    audio, outline = torch.randn(2, 5, 6, generator=g), torch.rand(2, 10, generator=g)
    t = torch.tensor([10, 60])
    base = m(z, t, zm, zr, audio, outline)
    assert base.shape == (2, 4, 8, 8)
    assert torch.equal(base, m(z, t, zm, zr, audio, outline))
    for changed in (m(z, t, zm, zr, audio + 1, outline), m(z, t, zm, zr + 1, audio, outline),
                    m(z, t, zm + 1, zr, audio, outline), m(z, t, zm, zr, audio, outline + 0.1)):
        assert (changed - base).abs().max() > 1e-4
    # sample 0's audio changes sample 0 only (no leak across the batch)
    a2 = audio.clone()
    a2[0] += 1
    out = m(z, t, zm, zr, a2, outline)
    assert (out[0] - base[0]).abs().max() > 1e-4 and torch.allclose(out[1], base[1], atol=1e-6)
    # audio and landmarks enter through the cross-attentions only; the references do not
    _zero_cross_attention(m, first=True)
    base = m(z, t, zm, zr, audio, outline)
    assert torch.allclose(m(z, t, zm, zr, audio + 1, outline + 0.1), base, atol=1e-6)
    assert (m(z, t, zm, zr + 1, audio, outline) - base).abs().max() > 1e-4


@torch.no_grad()
def test_condition_in_the_timestep_embedding():
    """cond_in_time: C_l (DiffTalk) and the motion (FD2Talk) also reach every ResNet block through
    the timestep embedding, so they still act with the cross-attentions silenced."""
    g = torch.Generator().manual_seed(0)
    z, zm, zr = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    audio, outline, t = torch.randn(2, 5, 6, generator=g), torch.rand(2, 10, generator=g), torch.tensor([10, 60])
    m = _difftalk(cond_in_time=True)
    assert m.unet.class_embedding is not None and _difftalk().unet.class_embedding is None
    _zero_cross_attention(m, first=True)
    base = m(z, t, zm, zr, audio, outline)
    assert (m(z, t, zm, zr, audio + 1, outline) - base).abs().max() > 1e-4
    assert (m(z, t, zm, zr, audio, outline + 0.1) - base).abs().max() > 1e-4
    f = _fd2talk(cond_in_time=True)
    _zero_cross_attention(f, first=True)
    motion = torch.randn(2, 58, generator=g)
    assert (f(z, t, zr, motion + 1) - f(z, t, zr, motion)).abs().max() > 1e-4


def test_mouth_weighted_loss():
    from talkinghead.render.ldm.difftalk import latent_box
    from talkinghead.render.ldm.unet import diffusion_loss

    box = latent_box(8, DiffTalkConfig.mouth_box)                      # (1, 1, 8, 8)
    noise, x0 = torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 8, 8)
    inside, outside = box.expand(2, 4, 8, 8).clone(), (1 - box).expand(2, 4, 8, 8).clone()
    w = 1 + 4 * box
    for err in (inside, outside):
        assert diffusion_loss(err, x0, noise, "eps") == pytest.approx(float((err ** 2).mean()))
    # same squared error in total: weighted, the mouth's counts more and the rest less; mean weight 1
    share = float(box.mean())                                          # 24 of 64 cells
    assert diffusion_loss(inside, x0, noise, "eps", w) == pytest.approx(share * 5 / (1 + 4 * share))
    assert diffusion_loss(outside, x0, noise, "eps", w) == pytest.approx((1 - share) / (1 + 4 * share))
    assert diffusion_loss(inside + outside, x0, noise, "eps", w) == pytest.approx(1.0)
    assert diffusion_loss(x0 + 1, x0 + 1, noise, "x0", w) == 0


def test_masked_frame_hides_the_mouth_only():
    box = DiffTalkConfig.mouth_box
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    inside, outside = x.clone(), x.clone()
    x0, y0, x1, y1 = (int(round(v * 32)) for v in box)
    inside[..., y0:y1, x0:x1] = torch.rand(3, y1 - y0, x1 - x0)
    outside[..., :y0, :] = 0.5
    assert torch.equal(mask_mouth(inside, box), mask_mouth(x, box))
    assert not torch.equal(mask_mouth(outside, box), mask_mouth(x, box))
    assert (mask_mouth(x, box)[..., y0:y1, x0:x1] == 0).all()
    # the landmark feature: an ellipse's outline, centred, wider than tall in x... and empty -> 0
    yy, xx = np.mgrid[:64, :64] / 64
    ell = ((xx - 0.5) / 0.3) ** 2 + ((yy - 0.5) / 0.4) ** 2 < 1
    f = outline_features(ell, 8)
    assert f.shape == (10,) and abs(f[0] - 0.5) < 0.02 and abs(f[1] - 0.5) < 0.02
    assert 0.25 < f[2:].min() and f[2:].max() < 0.42
    assert not outline_features(np.zeros((8, 8), bool), 8).any()
    # with the mouth box cut out, the jaw's drop (pixels inside the box) changes nothing
    jaw = ell.copy()
    jaw[int(0.93 * 64):int(0.95 * 64), 28:36] = True
    assert not np.array_equal(outline_features(jaw, 8), f)
    assert np.array_equal(outline_features(jaw, 8, box), outline_features(ell, 8, box))


@torch.no_grad()
def test_fd2talk_two_cross_attentions_pinned():
    m = _fd2talk()
    g = torch.Generator().manual_seed(0)
    z, zr = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    motion, t = torch.randn(2, 58, generator=g), torch.tensor([5, 80])
    base = m(z, t, zr, motion)
    assert base.shape == (2, 4, 8, 8)
    assert (m(z, t, zr, motion + 1) - base).abs().max() > 1e-4
    assert (m(z, t, zr + 1, motion) - base).abs().max() > 1e-4
    # the reference enters through phi_2 only: with phi_2 silenced it changes nothing
    m2 = _fd2talk()
    _zero_cross_attention(m2, first=False)
    b2 = m2(z, t, zr, motion)
    assert torch.allclose(m2(z, t, zr + 1, motion), b2, atol=1e-6)
    assert (m2(z, t, zr, motion + 1) - b2).abs().max() > 1e-4
    # the motion enters through phi_1 only
    m1 = _fd2talk()
    _zero_cross_attention(m1, first=True)
    b1 = m1(z, t, zr, motion)
    assert torch.allclose(m1(z, t, zr, motion + 1), b1, atol=1e-6)
    assert (m1(z, t, zr + 1, motion) - b1).abs().max() > 1e-4


@torch.no_grad()
def test_fd2talk_reference_decoder():
    """FD2Talk Sec. 3.4.2: the decoder's first layer reads [x; J_0]; it starts as the plain decoder."""
    from talkinghead.render.ldm.autoencoder import (VAEConfig, add_reference_input, build_vae, decode, encode,
                                                    has_reference_decoder)

    torch.manual_seed(0)
    vae = build_vae(VAEConfig(size=16, channels=(8, 8), groups=4, perceptual_weight=0)).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = encode(vae, x, 0.5)
    plain = decode(vae, z, 0.5)
    assert not has_reference_decoder(vae) and torch.equal(decode(vae, z, 0.5, z[:1]), plain)
    add_reference_input(vae)
    assert has_reference_decoder(vae) and vae.decoder.conv_in.in_channels == 8
    zr = torch.randn(1, 4, 8, 8)
    assert torch.allclose(decode(vae, z, 0.5, zr), plain, atol=1e-5)        # the same up to summation order
    vae.decoder.conv_in.weight[:, :4].normal_()
    assert (decode(vae, z, 0.5, zr) - decode(vae, z, 0.5, zr + 1)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="reference latent"):
        decode(vae, z, 0.5)


def test_vae_loader_reads_a_diffusers_folder(tmp_path):
    from diffusers import AutoencoderKL

    from talkinghead.errors import InputError
    from talkinghead.render.ldm.autoencoder import decode, downsampling, encode, load_vae

    torch.manual_seed(0)
    ref = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        sample_size=16).eval()
    ref.save_pretrained(tmp_path / "sdvae")
    assert (tmp_path / "sdvae" / "diffusion_pytorch_model.safetensors").exists()
    vae = load_vae(tmp_path / "sdvae")
    assert downsampling(vae) == 2 and vae.config.scaling_factor == pytest.approx(0.18215)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = encode(vae, x, 0.18215)
        assert z.shape == (1, 4, 8, 8)
        assert torch.allclose(z, ref.encode(x).latent_dist.mode() * 0.18215, atol=1e-6)
        assert decode(vae, z, 0.18215).shape == (1, 3, 16, 16)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{}")
    with pytest.raises(InputError, match="neither a diffusers"):
        load_vae(tmp_path / "junk")
    with pytest.raises(InputError, match="no such"):
        load_vae(tmp_path / "absent")


@pytest.fixture(scope="module")
def tiny_vae(shards) -> Path:
    """An untrained 2-block VAE checkpoint (f = 2) for the UNet tasks."""
    from talkinghead.io.checkpoint import save_model
    from talkinghead.render.ldm.autoencoder import VAEConfig, build_vae

    torch.manual_seed(0)
    vae_dir = shards.parent / "tiny_vae"
    vcfg = VAEConfig(size=32, channels=(16, 16), groups=8, perceptual_weight=0)
    save_model(vae_dir, build_vae(vcfg), {"model": "ldm_vae", **vcfg.__dict__})
    return vae_dir


@pytest.mark.slow
def test_unet_loss_falls(shards, tiny_vae):
    """A few optimizer steps on one batch of prepared frames lower the diffusion loss."""
    from talkinghead.training.ldm_tasks import UNetTask, UNetTaskConfig

    vae_dir = tiny_vae
    torch.manual_seed(0)
    for renderer, cfg in (("difftalk", DiffTalkConfig(**{**TINY, "audio_window": 2, "audio_hidden": 16,
                                                          "landmark_rays": 8, "landmark_hidden": 16})),
                          ("fd2talk-render", FD2TalkRenderConfig(**TINY))):
        task = UNetTask(renderer, UNetTaskConfig(data=str(shards), vae=str(vae_dir), ref_min_gap=10,
                                                 val_samples=4, size=16, mouth_weight=4), cfg, 4)
        assert task.model.config.latent_size == 8 and task.scale > 0
        batch = task.train_batch(0, torch.Generator().manual_seed(0))
        # the mouth's latent cells weigh 4: DiffTalk's box, FD2Talk's lips (dilated by a cell)
        w = task._mouth_weight(batch, torch.zeros(4, 4, 8, 8))
        assert set(w.unique().tolist()) == {1.0, 4.0}
        if renderer == "fd2talk-render":
            lips = torch.nn.functional.adaptive_max_pool2d(batch["lips"], 8) > 0
            assert w.shape == (4, 1, 8, 8) and (w[lips] == 4).all() and (w == 4).sum() > lips.sum()
        opt = torch.optim.Adam(task.model.parameters(), lr=2e-3)
        losses = []
        for _ in range(10):
            loss, _ = task.loss(task.model, batch, torch.Generator().manual_seed(1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.75 * losses[0], (renderer, losses)


def test_difftalk_training_inputs_hide_the_target(shards, tiny_vae):
    """masked_source "other": the reference and the masked frame (with its outline) are other
    frames than the target, at least ref_min_gap away, so the target's mouth reaches the UNet
    through its audio only; "target" (the paper's) masks the target itself."""
    from talkinghead.errors import InputError
    from talkinghead.training.ldm_tasks import UNetTask, UNetTaskConfig

    vae_dir = tiny_vae
    cfg = DiffTalkConfig(**{**TINY, "audio_window": 2, "audio_hidden": 16, "landmark_rays": 8, "landmark_hidden": 16})
    for source in ("other", "target"):
        task = UNetTask("difftalk", UNetTaskConfig(data=str(shards), vae=str(vae_dir), ref_min_gap=10, val_samples=4,
                                                   size=16, masked_source=source), cfg, 4)
        b = task.train_samples.draw(24, np.random.default_rng(3), task.cfg, task.model_cfg)
        i, r, m = b["index"].T
        assert ((i - r).abs() >= 10).all()
        assert ((i - m).abs() >= 10).all() if source == "other" else torch.equal(m, i)
        # the masked input is frame m's image with the mouth box blanked
        videos = task.train_samples.shards.videos
        for k in range(4):
            v = videos[int(b["video"][k])]
            image = task.train_samples._images(v, [int(m[k])])
            assert torch.equal(b["masked"][k:k + 1], mask_mouth(image, cfg.mouth_box))
            assert torch.equal(b["target"][k:k + 1], task.train_samples._images(v, [int(i[k])]))
    with pytest.raises(InputError, match="masked_source"):
        UNetTask("difftalk", UNetTaskConfig(data=str(shards), vae=str(vae_dir), masked_source="mouth"), cfg, 4)


def test_fd2talk_trains_on_driving_motion(tmp_path, tiny_vae):
    """task.motion "driving": FD2Talk's condition comes from each shard's driving.npz (cut or
    padded to the shard's frames), as differences target - reference; a shard without one, or an
    unknown kind, is a clear error."""
    from talkinghead.errors import InputError
    from talkinghead.render.ldm.fd2talk_render import motion_vectors
    from talkinghead.training.ldm_tasks import UNetTask, UNetTaskConfig
    from talkinghead.types import Motion

    data = write_shards(tmp_path, frames=60)
    cfg = lambda kind: UNetTaskConfig(data=str(data), vae=str(tiny_vae), val_samples=4, size=16,  # noqa: E731
                                      clip_length=20, motion=kind)
    with pytest.raises(InputError, match="driving.npz"):
        UNetTask("fd2talk-render", cfg("driving"), FD2TalkRenderConfig(**TINY), 4)
    with pytest.raises(InputError, match="task.motion"):
        UNetTask("fd2talk-render", cfg("guessed"), FD2TalkRenderConfig(**TINY), 4)
    n = 55                                                  # 5 frames short: the last row repeats
    blend = np.zeros((n, 52), np.float32)
    blend[:, 0] = 0.01 * np.arange(n)
    for d in (data / "shards").iterdir():
        Motion(blend, np.zeros((n, 3)), np.zeros((n, 3)), np.ones(n), np.ones((n, 2)), relative=True).save(d / "driving.npz")
    task = UNetTask("fd2talk-render", cfg("driving"), FD2TalkRenderConfig(**TINY), 4)
    for mv in task.train_samples.motion + task.val_samples.motion:
        assert mv.shape == (60, 58) and np.allclose(mv[:, 0], 0.01 * np.minimum(np.arange(60), n - 1))
        assert np.allclose(mv[:, 52:], 0)                   # not the measured pose (random there)
    b = task.train_samples.draw(32, np.random.default_rng(0), task.cfg, task.model_cfg)
    steps = b["motion"][:, 0].numpy() * 100                 # target - reference, in frames
    assert np.allclose(steps, steps.round(), atol=1e-3) and steps.min() >= 0 and steps.max() <= 19 + 1e-3
    assert steps.max() > 0 and np.allclose(b["motion"][:, 1:], 0)
    assert not np.allclose(motion_vectors(Motion.load(data / "shards/clip0/motion.npz"))[:, 52:], 0)


def _run(*args: str) -> None:
    from talkinghead.cli import main

    assert main(list(args)) == 0


@pytest.fixture(scope="module")
def checkpoint(shards, tmp_path_factory) -> Path:
    """Debug DiffTalk checkpoint through the CLI: `--stage vae`, then `--stage unet`."""
    out = tmp_path_factory.mktemp("difftalk_ckpt")
    _run("train", "difftalk", "--stage", "vae", "--config", str(ROOT / "configs/difftalk/vae.debug.json"),
         "--data", str(shards), "-o", str(out / "vae"), "-q")
    _run("train", "difftalk", "--stage", "unet", "--config", str(ROOT / "configs/difftalk/unet.debug.json"),
         "--data", str(shards), "--vae", str(out / "vae"), "-o", str(out / "unet"), "-q", "--steps", "2")
    return out


def test_training_checkpoints_and_resumes(checkpoint, shards):
    from safetensors.torch import load_file

    unet = checkpoint / "unet"
    cfg = json.loads((unet / "config.json").read_text())
    assert cfg["config"]["model"] == "difftalk" and cfg["config"]["feature"] == "mel"
    assert cfg["config"]["audio_dim"] == MEL_DIM and cfg["config"]["size"] == 16 and cfg["step"] == 2
    before = load_file(str(unet / "model.safetensors"))
    _run("train", "difftalk", "--stage", "unet", "--config", str(ROOT / "configs/difftalk/unet.debug.json"),
         "--data", str(shards), "--vae", str(checkpoint / "vae"), "-o", str(unet), "-q", "--steps", "4")
    state = json.loads((unet / "train_state.json").read_text())
    assert state["step"] == 4 and [h["step"] for h in state["history"]] == [0, 2, 4]
    after = load_file(str(unet / "model.safetensors"))
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    log = [json.loads(x) for x in (unet / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "val_loss" in r] == [0, 2, 4]


@pytest.mark.slow
def test_renderers_stream_chunk_independent_frames(checkpoint, shards, portrait, portrait_face, tmp_path):
    """The renderers through the interface: FD2Talk's frames (decoded by its reference decoder) do
    not depend on the chunk size and follow the Motion; DiffTalk's follow the audio and ignore the
    Motion."""
    from talkinghead.render.ldm.autoencoder import has_reference_decoder
    from talkinghead.render.base import RenderInputs, RenderOptions, get_renderer
    from talkinghead.render.ldm.fd2talk_render import FD2TalkUNet, FD2TalkRenderConfig
    from talkinghead.io.checkpoint import save_model
    from talkinghead.types import AudioClip, Motion

    n = 5
    rng = np.random.default_rng(0)
    motion = Motion(rng.normal(0, 0.2, (n, 52)), rng.normal(0, 3, (n, 3)), np.zeros((n, 3)), np.ones(n),
                    np.full((n, 2), 0.3), relative=True)
    other = Motion(motion.blendshapes + 0.5, motion.rotation, motion.translation, motion.scale, motion.ear,
                   relative=True)
    fd = tmp_path / "fd2talk"
    # FD2Talk's reference decoder, fine-tuned from the VAE through the CLI (Sec. 3.4.2)
    _run("train", "fd2talk-render", "--stage", "decoder", "--config", str(ROOT / "configs/difftalk/vae.debug.json"),
         "--data", str(shards), "--vae", str(checkpoint / "vae"), "-o", str(fd / "vae"), "-q", "--steps", "2")
    fields = json.loads((checkpoint / "unet" / "config.json").read_text())["config"]
    torch.manual_seed(0)
    cfg = FD2TalkRenderConfig(**TINY)
    save_model(fd / "unet", FD2TalkUNet(cfg), {**cfg.__dict__, "model": "fd2talk_render", "size": 16,
                                               "latent_scale": fields["latent_scale"], "feature": "mel"})
    opts = RenderOptions(mode="crop", crop_size=32, steps=2, checkpoints={"fd2talk": str(fd)})
    r = get_renderer("fd2talk", opts)
    assert has_reference_decoder(r.vae) and not has_reference_decoder(get_renderer(
        "difftalk", RenderOptions(checkpoints={"difftalk": str(checkpoint)})).vae)
    state = r.prepare(portrait, portrait_face)
    frames = lambda m, chunk: (setattr(r, "chunk", chunk), np.stack(list(r.frames(state, m, RenderInputs()))))[1]  # noqa: E731
    a, b = frames(motion, 2), frames(motion, 5)
    assert a.shape == (n, 32, 32, 3) and np.array_equal(a, b)
    assert np.abs(frames(other, 5).astype(int) - b).max() > 0
    # DiffTalk: the audio drives it; the Motion does not
    d = get_renderer("difftalk", RenderOptions(mode="crop", crop_size=32, steps=2,
                                              checkpoints={"difftalk": str(checkpoint)}))
    dstate = d.prepare(portrait, portrait_face)
    wave = np.sin(np.arange(16000) / 16000 * 2 * np.pi * 220).astype(np.float32) * 0.3
    speech, silence = AudioClip(wave[None], 16000), AudioClip(np.zeros_like(wave)[None], 16000)
    out = lambda m, clip: np.stack(list(d.frames(dstate, m, RenderInputs(clip=clip))))  # noqa: E731
    base = out(motion, speech)
    assert base.shape == (n, 32, 32, 3)
    assert np.array_equal(out(other, speech), base)
    assert np.abs(out(motion, silence).astype(int) - base).max() > 0
    # masked z_T: only the mouth box's latent cells are generated, the rest is the portrait's
    z = next(d.latents(dstate, motion, np.random.default_rng(0).random((n, 320), np.float32), 0))
    keep = 1 - dstate.extra["mouth"]
    assert 0 < keep.mean() < 1 and torch.equal(z * keep, dstate.z * keep)
    assert not torch.equal(z, dstate.z)
    # and the frame shown keeps the portrait's pixels outside the (feathered) mouth box
    img = np.random.default_rng(1).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    shown, alpha = d.compose(dstate, img), dstate.extra["alpha"].numpy()[..., 0]
    portrait = ((dstate.crop[0].permute(1, 2, 0).numpy() + 1) * 127.5 + 0.5).clip(0, 255).astype(np.uint8)
    assert (alpha == 0).any() and (alpha == 1).any()
    assert np.array_equal(shown[alpha == 0], portrait[alpha == 0]) and np.array_equal(shown[alpha == 1], img[alpha == 1])


@pytest.mark.slow
def test_generate_cli_renderer_difftalk(checkpoint, portrait_path, speech_path, tmp_path, capsys):
    from talkinghead.cli import main
    from talkinghead.io.video import video_info

    out = tmp_path / "out.mp4"
    _run("generate", "--image", str(portrait_path), "--audio", str(speech_path), "-o", str(out),
         "--renderer", "difftalk", "--renderer-checkpoint", str(checkpoint), "--render-steps", "2", "-q")
    info = video_info(out)
    assert info.num_frames == 100 and info.has_audio
    # no checkpoint: one line, exit 2, no output
    bad = tmp_path / "bad.mp4"
    assert main(["generate", "--image", str(portrait_path), "--audio", str(speech_path), "-o", str(bad),
                 "--renderer", "difftalk", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--renderer-checkpoint" in err[0] and not bad.exists()

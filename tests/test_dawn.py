"""DAWN's renderer (one architecture, the released one): dataset preparation, equivalence with the
official code, linear-time sampling, the released files' layout, training through the shared loop on
prepared shards (the CPU-sized model is a config of the same classes), and `generate --renderer dawn`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def talking_folder(tmp_path_factory, portrait_path, speech_path, carphone_path) -> Path:
    """Two generated talking clips in nested folders, a corrupt file and a clip without audio."""
    from talkinghead.motion.generate import MotionControls
    from talkinghead.pipelines.generate import GeneratePipeline

    src = tmp_path_factory.mktemp("videos")
    (src / "a" / "b").mkdir(parents=True)
    pipe = GeneratePipeline()
    pipe(portrait_path, speech_path, src / "a" / "one.mp4", MotionControls(seed=0), progress=False)
    pipe(portrait_path, speech_path, src / "a" / "b" / "two.mov", MotionControls(seed=1), progress=False)
    (src / "broken.mp4").write_bytes(b"\x00\x01" * 500)
    shutil.copy(carphone_path, src / "silent.mp4")          # real video, no audio track
    return src


@pytest.fixture(scope="module")
def dataset(talking_folder, tmp_path_factory) -> Path:
    from talkinghead.data.prepare import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("data")
    prepare(talking_folder, out, PrepareConfig(size=32, features="mel"), workers=2, progress=False)
    return out


def test_prepare_writes_shards_and_skips_bad_videos(dataset, talking_folder):
    from talkinghead.data.prepare import FACE_BIT, LIP_BIT, PrepareConfig, prepare

    m = json.loads((dataset / "manifest.json").read_text())
    assert m["videos"] == 2 and m["frames"] == 200
    assert "not a readable video file" in m["skipped"][str(talking_folder / "broken.mp4")]
    assert m["skipped"][str(talking_folder / "silent.mp4")] == "no audio track"
    shard = dataset / "shards" / m["shards"][0]
    frames, masks = np.load(shard / "frames.npy"), np.load(shard / "masks.npy")
    assert frames.shape == (100, 32, 32, 3) and frames.dtype == np.uint8
    assert masks.shape == (100, 32, 32)
    face, lips = (masks & FACE_BIT) > 0, (masks & LIP_BIT) > 0
    assert 0.15 < face.mean() < 0.8 and 0 < lips.mean() < face.mean()
    ys = np.nonzero(lips[0])[0]
    assert ys.mean() > 16                                    # the lips are in the lower half
    assert np.load(shard / "features.npy").shape == (100, 320)
    assert np.load(shard / "audio.npy").shape == (64000,)
    # a rerun resumes: nothing is prepared again
    lines = (dataset / "prepare.jsonl").read_text().splitlines()
    prepare(talking_folder, dataset, PrepareConfig(size=32, features="mel"), workers=1, progress=False)
    assert (dataset / "prepare.jsonl").read_text().splitlines() == lines


def test_prepare_cli_bad_source_is_one_line(tmp_path, capsys):
    from talkinghead.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["prepare", str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no videos" in err[0]


def test_lip_weighted_loss_is_eq7():
    from talkinghead.training.dawn_tasks import lip_weighted_loss

    pred, target = torch.zeros(2, 3, 4, 8, 8), torch.ones(2, 3, 4, 8, 8)        # (B, C, N, h, w)
    lips = torch.zeros(2, 1, 4, 8, 8)
    lips[..., 2:4, 2:6] = 1
    assert float(lip_weighted_loss(pred, target, lips, 3.0)) == pytest.approx(1 + 3 * lips.mean().item())


@pytest.mark.slow
def test_dawn_trains_on_prepared_shards_resumes_and_generates(dataset, tmp_path, portrait_path, speech_path, capsys):
    """`train dawn` (debug configs of the released classes: the MRAA LFG, the 3D U-Net) learns on
    prepared shards through the shared loop (validation loss falls), resumes, and the checkpoint
    drives `generate --renderer dawn`."""
    from talkinghead.cli import main

    ckpt = tmp_path / "dawn"
    for stage in ("lfg", "a2v"):
        args = ["train", "dawn", "--stage", stage, "--config", str(ROOT / "configs" / "dawn" / f"{stage}.debug.json"),
                "--data", str(dataset), "-o", str(ckpt / stage), "--lfg", str(ckpt / "lfg"), "-q"]
        assert main(args) == 0
        log = [json.loads(line) for line in (ckpt / stage / "log.jsonl").read_text().splitlines()]
        vals = [r["val_loss"] for r in log if "val_loss" in r]
        assert vals[-1] < 0.8 * vals[0], (stage, vals)
        assert (ckpt / stage / "model.safetensors").exists()
        cfg = json.loads((ckpt / stage / "config.json").read_text())["config"]
        assert cfg["model"] == f"dawn_{stage}_released"
    assert main(args[:-1] + ["--steps", "44", "-q"]) == 0          # resumes at 40, runs 4 more
    state = json.loads((ckpt / "a2v" / "train_state.json").read_text())
    assert state["step"] == 44
    out = tmp_path / "dawn.mp4"
    assert main(["generate", "--image", str(portrait_path), "--audio", str(speech_path), "-o", str(out),
                 "--renderer", "dawn", "--dawn-checkpoint", str(ckpt), "--motion-model", "pbnet",
                 "--dawn-steps", "2", "-q"]) == 0
    from talkinghead.io.video import video_info

    info = video_info(out)
    assert info.num_frames == 100 and (info.width, info.height) == (512, 512)
    assert main(["generate", "--image", str(portrait_path), "--audio", str(speech_path), "-o",
                 str(tmp_path / "x.mp4"), "--renderer", "dawn", "-q"]) == 2
    assert "needs --dawn-checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


# ---- the released architectures (official checkpoints) -------------------------------------------

FIXTURES = ROOT / "tests" / "fixtures" / "dawn"


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def _fixture_weights(state):
    # loaded by path under its own name: SadTalker's fixtures have a `weights` module too, and
    # whichever the suite imported first would otherwise answer `import weights`
    import importlib.util

    spec = importlib.util.spec_from_file_location("dawn_fixture_weights", FIXTURES / "weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.random_state(state, 0)


@pytest.fixture(scope="module")
def released_a2v():
    from talkinghead.render.dawn.unet3d import DawnA2V, Unet3DConfig

    torch.manual_seed(0)
    model = DawnA2V(Unet3DConfig.debug()).eval()
    model.diffusion.load_state_dict(_fixture_weights(model.diffusion.state_dict()), strict=True)
    return model


def test_released_denoiser_equals_the_official_code(released_a2v):
    """Golden outputs of the official DynamicNfUnet3D (tests/fixtures/dawn/README.md), same weights:
    the released forward and our linear runner (chunks smaller than the clip) agree within 1e-4."""
    from safetensors.torch import load_file

    from talkinghead.render.dawn.linear import LinearRunner

    io = load_file(str(FIXTURES / "a2v_io.safetensors"))
    fea = torch.cat([io["fea"], io["box"]], 1)
    n = io["noisy"].shape[2]
    x = torch.cat([io["noisy"], fea[:, :, None].expand(-1, -1, n, -1, -1)], 1)
    with torch.no_grad():
        ours = released_a2v.unet(x, io["t"], io["cond"])
        linear = LinearRunner(released_a2v.unet, chunk=2, positions=16)(io["noisy"], fea, io["t"], io["cond"])
    assert io["noise"].abs().mean() > 0.3
    assert (ours - io["noise"]).abs().max() < 1e-4
    assert (linear - io["noise"]).abs().max() < 1e-4


def test_linear_sampling_equals_one_official_pass(released_a2v):
    """The official sampler's DDIM (eta 1, dynamic thresholding) over the whole 9-frame clip in one
    pass vs ours in chunks of 4 frames with a 3-frame attention window: the same latents."""
    from safetensors.torch import load_file

    from talkinghead.render.dawn.linear import sample_linear

    io = load_file(str(FIXTURES / "a2v_io.safetensors"))
    fea = torch.cat([io["fea"], io["box"]], 1)
    torch.manual_seed(123)                       # the official sampler draws from the global generator
    got = sample_linear(released_a2v.diffusion, fea, io["cond"], chunk=4)
    assert (got - io["sample"]).abs().max() < 1e-4
    torch.manual_seed(124)
    assert (sample_linear(released_a2v.diffusion, fea, io["cond"], chunk=4) - io["sample"]).abs().max() > 0.1


def test_linear_runner_equals_the_released_forward_for_any_chunk(released_a2v, tmp_path):
    """23 frames (more than 3 windows of 3 either side): chunks of 1, 5 and 23 frames, in RAM or in
    memory-mapped files, all give the released forward's output."""
    from talkinghead.render.dawn.linear import LinearRunner

    g = torch.Generator().manual_seed(5)
    n, unet = 23, released_a2v.unet
    noisy = torch.randn(1, 3, n, 8, 8, generator=g)
    fea = torch.randn(1, 48, 8, 8, generator=g)
    cond, t = torch.randn(1, n, 24, generator=g), torch.tensor([900])
    with torch.no_grad():
        ref = unet(torch.cat([noisy, fea[:, :, None].expand(-1, -1, n, -1, -1)], 1), t, cond)
        for chunk, spill in ((1, None), (5, str(tmp_path)), (23, None)):
            out = LinearRunner(unet, chunk, spill_dir=spill, positions=24)(noisy, fea, t, cond)
            assert (out - ref).abs().max() < 1e-4, chunk
    assert not list(tmp_path.iterdir())          # the mapped files are unlinked at once
    from talkinghead.render.dawn.linear import auto_spill_dir

    cpu = torch.device("cpu")
    assert auto_spill_dir(10, 8, cpu) is None and auto_spill_dir(10 ** 8, 64, cpu) is not None


def test_released_lfg_equals_the_official_code():
    from safetensors.torch import load_file

    from talkinghead.render.dawn.lfg_mraa import MRAAConfig, MRAALatentFlowGenerator

    io = load_file(str(FIXTURES / "lfg_io.safetensors"))
    lfg = MRAALatentFlowGenerator(MRAAConfig.debug()).eval()
    state = _fixture_weights(lfg.state_dict())
    state.update({"bg_predictor.fc.weight": io["bg_fc_weight"], "bg_predictor.fc.bias": io["bg_fc_bias"]})
    lfg.load_state_dict(state, strict=True)
    with torch.no_grad():
        regions = lfg.region_predictor(io["dri"])
        pred, flow, occ = lfg(io["src"], io["dri"])
        got = {"shift": regions["shift"], "affine": regions["affine"], "bg": lfg.bg_predictor(io["src"], io["dri"]),
               "flow": flow, "occlusion": occ, "prediction": pred, "fea": lfg.generator.compute_fea(io["src"])}
    for key, value in got.items():
        assert value.shape == io[key].shape and (value - io[key]).abs().max() < 1e-4, key
    assert flow.std() > 0.1 and pred.std() > 0.01


def _official_layout(folder: Path, size: int = 32) -> None:
    """Random-weight files named and laid out as DAWN's released ones (pickled dicts of tensors)."""
    from safetensors.torch import save_file
    from transformers import HubertConfig, HubertModel

    from talkinghead.render.dawn.lfg_mraa import MRAAConfig, MRAALatentFlowGenerator
    from talkinghead.render.dawn.unet3d import DawnA2V, Unet3DConfig

    torch.manual_seed(0)
    lfg = MRAALatentFlowGenerator(MRAAConfig.debug(size))
    torch.save({name: getattr(lfg, name).state_dict() for name in ("generator", "region_predictor", "bg_predictor")}
               | {"epoch": 1}, folder / f"LFG_{size}_1ep.pth")
    a2v = DawnA2V(Unet3DConfig.debug())
    torch.save({"example": 8, "diffusion": a2v.diffusion.state_dict(), "optimizer_diff": {}}, folder / f"DAWN_{size}.pth")
    hub = folder / "hubert-large-ls960-ft"
    hub.mkdir()
    cfg = HubertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    save_file({k: v.contiguous() for k, v in HubertModel(cfg).state_dict().items()}, str(hub / "model.safetensors"))
    (hub / "config.json").write_text(json.dumps(cfg.to_dict()))


def test_released_files_load_by_key_with_sizes_read_off_the_weights(tmp_path):
    from talkinghead.errors import InputError
    from talkinghead.render.dawn.official import find_checkpoints, load_official_a2v, load_official_lfg

    _official_layout(tmp_path)
    lfg_file, a2v_file, size = find_checkpoints(tmp_path)
    assert (lfg_file.name, a2v_file.name, size) == ("LFG_32_1ep.pth", "DAWN_32.pth", 32)
    lfg, a2v = load_official_lfg(lfg_file, size), load_official_a2v(a2v_file, win_width=3)
    saved = torch.load(a2v_file, weights_only=True)["diffusion"]
    assert all(torch.equal(v, saved[k]) for k, v in a2v.diffusion.state_dict().items())
    assert a2v.config.dim_mults == (1, 2) and a2v.config.cond_aud == 16 and a2v.config.attn_heads == 2
    assert lfg.config.num_regions == 4 and lfg.config.region["scale_factor"] == 0.5
    assert lfg.generator.compute_fea(torch.rand(1, 3, 32, 32)).shape == (1, 32, 8, 8)
    assert find_checkpoints(a2v_file)[2] == 32
    (tmp_path / "DAWN_32.pth").write_bytes(b"\x80\x04cos\nsystem\n.")     # a code-running pickle
    with pytest.raises(InputError, match="weights-only"):
        load_official_a2v(tmp_path / "DAWN_32.pth")
    with pytest.raises(InputError, match="DAWN_<size>"):
        find_checkpoints(lfg_file)


def test_hubert_features_interpolated_as_released():
    from scipy.interpolate import interp1d

    from talkinghead.render.dawn.official import hubert_hidden, interpolate_frames

    hidden = np.random.default_rng(0).normal(size=(149, 7)).astype(np.float32)
    for frames in (75, 149, 300, 1):
        want = interp1d(np.arange(149), hidden, kind="linear", axis=0)(np.linspace(0, 148, frames))
        assert np.allclose(interpolate_frames(hidden, frames), want, atol=1e-5)

    class Fake(torch.nn.Module):                  # one output per 320 samples past the first 400
        def forward(self, x):
            n = (x.shape[1] - 400) // 320 + 1
            return type("O", (), {"last_hidden_state": x[:, :n * 320].reshape(1, n, 320)[..., :4]})

    speech = np.random.default_rng(1).normal(size=16000 * 3).astype(np.float32)
    out = hubert_hidden(Fake(), speech, segment=320 * 40)
    assert out.shape == ((len(speech) - 80) // 320, 4)


@pytest.mark.slow
def test_generate_cli_runs_the_released_layout_end_to_end(tmp_path, portrait_path, speech_path, capsys):
    """Random-weight files in the released layout -> `generate --renderer dawn --dawn-checkpoints`."""
    from talkinghead.cli import main
    from talkinghead.io.video import video_info

    _official_layout(tmp_path)
    out = tmp_path / "released.mp4"
    assert main(["generate", "--image", str(portrait_path), "--audio", str(speech_path), "-o", str(out),
                 "--renderer", "dawn", "--dawn-checkpoints", str(tmp_path), "--dawn-steps", "2", "-q"]) == 0
    info = video_info(out)
    assert info.num_frames == 100 and (info.width, info.height) == (512, 512)
    import cv2

    from talkinghead.io.video import iter_frames

    first = next(iter(iter_frames(out))).astype(np.float32)
    portrait = cv2.resize(cv2.imread(str(portrait_path))[:, :, ::-1], (512, 512)).astype(np.float32)
    diff = np.abs(first - portrait).mean(-1)
    changed = (diff > 20).mean()
    assert 0.03 < changed < 0.5                          # the face crop is the (random) model's output,
    assert np.median(diff) < 4                           # the rest of the portrait is kept
    (tmp_path / "DAWN_32.pth").write_bytes(b"not a pickle")
    assert main(["generate", "--image", str(portrait_path), "--audio", str(speech_path), "-o",
                 str(tmp_path / "bad.mp4"), "--renderer", "dawn", "--dawn-checkpoints", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weights-only" in err[0] and not (tmp_path / "bad.mp4").exists()


def test_checkpoints_of_the_removed_architecture_are_refused_in_one_line(tmp_path):
    from talkinghead.errors import InputError
    from talkinghead.render.dawn.renderer import load_a2v, load_lfg

    for stage, load in (("lfg", load_lfg), ("a2v", load_a2v)):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "config.json").write_text(json.dumps({"config": {"model": f"dawn_{stage}"}}))
        with pytest.raises(InputError, match="earlier architecture"):
            load(tmp_path / stage)
    with pytest.raises(InputError, match="one architecture"):
        from talkinghead.training.dawn_tasks import train_dawn

        (tmp_path / "old.json").write_text(json.dumps({"model": {"arch": "ours"}}))
        train_dawn("lfg", tmp_path / "old.json", str(tmp_path), tmp_path / "out")


def test_the_dawn_renderer_imports_nothing_from_training():
    """render/ never imports training/ (the layering rule; training imports render), not even
    inside a function."""
    sources = sorted((ROOT / "talkinghead" / "render" / "dawn").glob("*.py"))
    assert len(sources) >= 6
    for f in sources:
        assert "talkinghead.training" not in f.read_text(), f.name

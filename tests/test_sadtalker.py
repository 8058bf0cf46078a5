"""SadTalker's face render (render/sadtalker/): every module against golden outputs of the
official classes with identical random weights (tests/fixtures/sadtalker/README.md), the
checkpoint loader's errors, and `generate --renderer sadtalker` end to end on random-weight
files in the official layout."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures.sadtalker.cases import GEN_DEBUG, KEEP_BUFFERS, SEEDS, inputs
from fixtures.sadtalker.weights import random_state

from talkinghead.errors import InputError
from talkinghead.render.sadtalker.dense_motion import DenseMotionConfig
from talkinghead.render.sadtalker.expnet import ExpNet, mel_windows
from talkinghead.render.sadtalker.face_recon import FaceReconNet, align_for_recon
from talkinghead.render.sadtalker.generator import GeneratorConfig, OcclusionAwareSPADEGenerator
from talkinghead.render.sadtalker.keypoints import HEConfig, HEEstimator, KPConfig, KPDetector, transform_keypoints
from talkinghead.render.sadtalker.mapping import MappingConfig, MappingNet

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures" / "sadtalker"
GOLDEN = np.load(FIX / "golden.npz")
LAYOUT = json.loads((FIX / "layout.json").read_text())
# one torch thread (tests/conftest.py): measured under load, 2 threads cost 3-12x the CPU here
# (training 185 -> 15 CPU s, the debug generator 25 -> 4); the CLI run in a child keeps its own
pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(autouse=True)
def _no_grad():
    """Inference only, for this module's tests alone (a global switch would leak into others)."""
    with torch.no_grad():
        yield


def _filled(module: torch.nn.Module, seed: int, layout: str | None = None) -> torch.nn.Module:
    if layout:   # the same keys and shapes as the official module: a strict load of its file works
        assert [[k, list(v.shape)] for k, v in sorted(module.state_dict().items())] == LAYOUT[layout]
    module.load_state_dict(random_state(module.state_dict(), seed, lambda k: k.endswith(KEEP_BUFFERS)))
    return module.eval()


def _close(ours: torch.Tensor, name: str, tol: float = 1e-4) -> None:
    ref = GOLDEN[name]
    diff = np.abs(ours.numpy() - ref).max()
    assert ours.shape == ref.shape and diff <= tol, f"{name}: max |diff| {diff:.2e} > {tol}"


def test_keypoint_detector_matches_official():
    kp = _filled(KPDetector(KPConfig.debug()), SEEDS["kp_debug"], "kp_debug")
    _close(kp(inputs("kp_debug")["image"]), "kp_debug/value")


@pytest.mark.parametrize("name,nc", [("mapping70", 70), ("mapping73", 73)])
def test_mapping_net_matches_official(name, nc):
    m = _filled(MappingNet(MappingConfig(coeff_nc=nc)), SEEDS[name], name)
    pose = m(inputs(name)["coeffs"])
    for k in ("yaw", "pitch", "roll", "t", "exp"):
        _close(getattr(pose, k), f"{name}/{k}")


def test_generator_matches_official_debug_size():
    d = GEN_DEBUG["dense_motion_params"]
    cfg = GeneratorConfig(feature_channel=4, num_kp=4, max_features=64, reshape_channel=4, num_resblocks=1,
                          dense_motion=DenseMotionConfig(**d))
    assert cfg == GeneratorConfig.debug()
    gen = _filled(OcclusionAwareSPADEGenerator(cfg), SEEDS["generator_debug"], "generator_debug")
    x = inputs("generator_debug")
    out = gen(x["image"], x["kp_driving"], x["kp_source"])
    _close(out.prediction, "generator_debug/prediction")
    _close(out.occlusion_map, "generator_debug/occlusion_map")
    _close(out.mask, "generator_debug/mask")


def test_expnet_matches_official():
    x = inputs("expnet")
    net = _filled(ExpNet(), SEEDS["expnet"], "expnet")
    _close(net(x["mels"], x["ref"], x["ratio"]), "expnet/exp")


def test_mel_windows_start_two_frames_early_and_clamp():
    mel = np.arange(40 * 80, dtype=np.float32).reshape(40, 80)          # value = 80 * row + band
    w = mel_windows(mel, 12, 25.0)                                     # (12, 80, 16)
    assert w.shape == (12, 80, 16)
    assert (w[0, 0] == 80 * np.clip(np.arange(-6, 10), 0, 39)).all()   # int(80 * -2 / 25) = -6
    assert (w[5, 0] == 80 * np.arange(9, 25)).all()                    # int(80 * 3 / 25) = 9
    assert (w[11, 3, -4:] == 80 * 39 + 3).all()                        # clamped at the end


def test_recon_crop_matches_official_align():
    rng = np.random.default_rng(9)
    img = rng.integers(0, 256, (300, 280, 3), dtype=np.uint8)
    five = np.array([[110, 130], [170, 128], [141, 165], [118, 200], [166, 198]], np.float64)
    crop = align_for_recon(img, five)
    np.testing.assert_allclose(crop.params, GOLDEN["align/params"], rtol=1e-5)
    assert np.array_equal(crop.image, GOLDEN["align/crop"])


@pytest.mark.slow
def test_head_pose_estimator_matches_official():
    he = _filled(HEEstimator(HEConfig()), SEEDS["he"], "he")
    pose = he(inputs("he")["image"])
    for k in ("yaw", "pitch", "roll", "t", "exp"):
        _close(getattr(pose, k), f"he/{k}")


@pytest.mark.slow
def test_face_recon_matches_official():
    net = _filled(FaceReconNet(), SEEDS["recon"], "recon")
    _close(net(inputs("recon")["image"]), "recon/coeffs")


@pytest.mark.slow
def test_whole_face_render_at_released_sizes_matches_official():
    """Released sizes: keypoints, MappingNet on source and target windows, generator, 2 frames;
    on a 128 px image (the smallest the keypoint detector's hourglass takes; 1/4 of 256 px's CPU,
    every layer still run; the 256 px checkpoint runs end to end through the CLI below)."""
    s = SEEDS["render128"]
    kp = _filled(KPDetector(KPConfig()), s, "render128/kp")
    gen = _filled(OcclusionAwareSPADEGenerator(GeneratorConfig()), s + 100, "render128/generator")
    mapping = _filled(MappingNet(MappingConfig()), s + 200)
    x = inputs("render128")
    canonical = kp(x["image"])
    kp_source = transform_keypoints(canonical, mapping(x["source"]))
    volume = gen.source_volume(x["image"])                             # once, reused per frame
    drive = [transform_keypoints(canonical, mapping(x["target"][:, i])) for i in range(2)]
    frames = torch.stack([gen.render(volume, k, kp_source).prediction for k in drive], 1)
    _close(canonical, "render128/canonical")
    _close(kp_source, "render128/kp_source")
    _close(torch.stack(drive, 1), "render128/kp_driving")
    _close(frames[..., ::4, ::4], "render128/prediction_s4", tol=1e-3)


# -- the released checkpoint layout: loader errors and the CLI end to end -----------------------

def _write_checkpoints(root: Path) -> Path:
    """Random weights in the official layout: SadTalker_V0.0.2_256.safetensors (prefixed groups,
    the PoseVAE's `audio2pose.*` with a training-only discriminator tensor) and
    mapping_00229-model.pth.tar ({'mapping': ...})."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    groups = {"kp_extractor": KPDetector(KPConfig()), "generator": OcclusionAwareSPADEGenerator(GeneratorConfig()),
              "face_3drecon": FaceReconNet(), "audio2exp": ExpNet()}
    flat = {}
    for i, (name, module) in enumerate(groups.items()):
        state = random_state(module.state_dict(), 50 + i, lambda k: k.endswith(KEEP_BUFFERS))
        flat.update({f"{name}.{k}": v.contiguous() for k, v in state.items()})
    from talkinghead.render.sadtalker.posevae import PoseVAE

    flat.update({f"audio2pose.{k}": v.contiguous() for k, v in random_state(PoseVAE().state_dict(), 70).items()})
    flat["audio2pose.netD_motion.seq.0.weight"] = torch.zeros(2, 2)
    save_file(flat, str(root / "SadTalker_V0.0.2_256.safetensors"))
    torch.save({"mapping": random_state(MappingNet().state_dict(), 60), "epoch": 229},
               root / "mapping_00229-model.pth.tar")
    return root


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    return _write_checkpoints(tmp_path_factory.mktemp("sadtalker") / "checkpoints")


def test_loader_names_the_first_bad_key(tmp_path):
    from talkinghead.render.sadtalker.checkpoint import load_strict, read_torch

    good = MappingNet().state_dict()
    with pytest.raises(InputError, match=r"^x: missing key 'fc_exp.bias'$"):
        load_strict(MappingNet(), {k: v for k, v in good.items() if k != "fc_exp.bias"}, "x")
    with pytest.raises(InputError, match=r"^x: unexpected key 'extra.weight'$"):
        load_strict(MappingNet(), {**good, "extra.weight": torch.zeros(1)}, "x")
    with pytest.raises(InputError, match=r"mis-shaped key 'first.0.weight' \(1024, 73, 7\) != \(1024, 70, 7\)"):
        load_strict(MappingNet(), MappingNet(MappingConfig(coeff_nc=73)).state_dict(), "x")
    evil = tmp_path / "mapping_00229-model.pth.tar"
    torch.save({"mapping": good, "hook": Path("/")}, evil)            # a pickled non-tensor object
    with pytest.raises(InputError, match="not a plain weight file"):
        read_torch(evil, "mapping")


def test_older_split_files_load_strictly(tmp_path):
    """The pre-safetensors layout: facevid2vid_00189-model.pth.tar ({'generator', 'kp_detector',
    'he_estimator'}), epoch_20.pth ({'net_recon'}), auido2exp_00300-model.pth ({'model'})."""
    from talkinghead.render.sadtalker.checkpoint import find_checkpoints, load_modules

    def modules():
        return {"generator": OcclusionAwareSPADEGenerator(GeneratorConfig.debug()),
                "kp_extractor": KPDetector(KPConfig.debug()), "face_3drecon": FaceReconNet(), "audio2exp": ExpNet()}

    mods = modules()
    states = {k: random_state(m.state_dict(), i, lambda k: k.endswith(KEEP_BUFFERS)) for i, (k, m) in enumerate(mods.items())}
    torch.save({"generator": states["generator"], "kp_detector": states["kp_extractor"],
                "he_estimator": {}, "epoch": 189}, tmp_path / "facevid2vid_00189-model.pth.tar")
    torch.save({"net_recon": states["face_3drecon"]}, tmp_path / "epoch_20.pth")
    torch.save({"model": states["audio2exp"], "epoch": 300}, tmp_path / "auido2exp_00300-model.pth")
    mapping_state = random_state(MappingNet(MappingConfig(coeff_nc=73)).state_dict(), 9)
    torch.save({"mapping": mapping_state, "epoch": 109}, tmp_path / "mapping_00109-model.pth.tar")
    files = find_checkpoints(tmp_path, 256, still=True)
    fresh = modules()
    mapping = MappingNet(MappingConfig(coeff_nc=73))
    load_modules(files, fresh, mapping)
    for k, m in fresh.items():
        assert all(torch.equal(v, states[k][n]) for n, v in m.state_dict().items()), k
    assert torch.equal(mapping.fc_exp.weight, mapping_state["fc_exp.weight"])
    with pytest.raises(InputError, match="needs SadTalker_V0.0.2_512.safetensors"):
        find_checkpoints(tmp_path, 512, still=True)


def _generate(*args) -> int:
    """`talkinghead generate` in this process (the CLI's own main: its exit code and one-line
    error; no second interpreter to start, ~3 CPU s each)."""
    from talkinghead.cli import main

    return main(["generate", *map(str, args)])


def test_cli_says_which_checkpoint_file_is_missing(tmp_path, portrait_path, speech_path, capsys):
    (tmp_path / "ck").mkdir()
    code = _generate("--image", portrait_path, "--audio", speech_path, "-o", tmp_path / "x.mp4", "--renderer", "sadtalker",
                     "--sadtalker-checkpoints", tmp_path / "ck")
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0
    assert "needs mapping_00229-model.pth.tar" in err and not (tmp_path / "x.mp4").exists()
    code = _generate("--image", portrait_path, "--audio", speech_path, "-o", tmp_path / "x.mp4", "--renderer", "sadtalker")
    assert code == 2 and "needs --sadtalker-checkpoints" in capsys.readouterr().err


@pytest.mark.slow
def test_missing_key_in_the_safetensors_is_one_line(checkpoints, tmp_path, portrait_path, speech_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(checkpoints / "mapping_00229-model.pth.tar", bad)      # the 0.7 GB safetensors is rewritten below
    flat = load_file(str(checkpoints / "SadTalker_V0.0.2_256.safetensors"))
    del flat["generator.decoder.conv_img.bias"]
    save_file(flat, str(bad / "SadTalker_V0.0.2_256.safetensors"))
    code = _generate("--image", portrait_path, "--audio", speech_path, "-o", tmp_path / "x.mp4", "--renderer", "sadtalker",
                     "--sadtalker-checkpoints", bad)
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0 and not (tmp_path / "x.mp4").exists()
    assert "(generator): missing key 'decoder.conv_img.bias'" in err


@pytest.mark.slow
def test_generate_with_sadtalker_checkpoints_end_to_end(checkpoints, tmp_path, portrait_path, speech_path, portrait,
                                                         portrait_face):
    from talkinghead.io.audio import read_audio, write_wav
    from talkinghead.io.video import iter_frames

    clip = read_audio(speech_path)
    short = tmp_path / "short.wav"
    write_wav(short, type(clip)(clip.samples[..., : int(0.24 * clip.sample_rate)], clip.sample_rate))
    out = tmp_path / "st.mp4"
    # 3 frames (12.5 fps): each released-size 256 px frame costs ~12 CPU s; ExpNet's mel windows
    # follow --fps (mel_windows' own test pins them at 25)
    r = run_cli("generate", "--image", portrait_path, "--audio", short, "-o", out, "--renderer", "sadtalker",
                "--sadtalker-checkpoints", checkpoints, "--fps", "12.5", "-q", timeout=1800)
    assert r.returncode == 0, r.stderr
    frames = list(iter_frames(out))
    assert len(frames) == 3 and frames[0].shape == portrait.shape
    from talkinghead.render.sadtalker.renderer import face_box

    diff = np.abs(frames[2].astype(int) - portrait).mean(2)
    x0, y0, x1, y1 = face_box(portrait_face.landmarks)
    inside = np.zeros(diff.shape, bool)
    inside[max(0, y0):y1, max(0, x0):x1] = True
    assert diff[~inside].mean() < 4                                   # background kept (H.264 noise ~2)
    q = (x1 - x0) // 4
    assert diff[y0 + q: y1 - q, x0 + q: x1 - q].mean() > 20           # the face was re-rendered


@pytest.mark.slow
def test_released_posevae_drives_head_pose_with_a_style(checkpoints, speech_path, portrait, portrait_face):
    """`--sadtalker-pose-style N`: the MappingNet's angles and translation come from the released
    PoseVAE (random weights, official layout), its mel windows built 32 frames at a time equal to
    the whole clip's at once; expression and the still params are unchanged."""
    from talkinghead.audio.features import wav2lip_mel, windowed
    from talkinghead.io.audio import read_audio
    from talkinghead.render.base import RenderInputs
    from talkinghead.render.sadtalker.renderer import SadTalkerRenderer
    from talkinghead.types import Motion

    n = 45                                                  # 1 + 32 + 12: one whole clip and a remainder
    clip = read_audio(speech_path)
    motion = Motion(np.zeros((n, 52)), np.zeros((n, 3)), np.zeros((n, 3)), np.zeros(n), np.zeros((n, 2)),
                    relative=True)
    styled = SadTalkerRenderer(checkpoints, pose_style=3)
    src = styled.prepare(portrait, portrait_face)
    target = styled.target_coefficients(src, motion, RenderInputs(clip, 25.0, seed=4))
    mel = windowed(wav2lip_mel, clip.mono(), 80.0, 30.0, 0.1)
    whole = torch.from_numpy(mel_windows(mel, n))[None, :, None]                   # (1, n, 1, 80, 16)
    ref = torch.from_numpy(src.semantics[None, 64:70])
    pose = styled.models.audio2pose.generate(whole, ref, 3, torch.Generator().manual_seed(4))[0]
    assert target.shape == (n, 70)
    assert np.abs(target[:, 64:70] - pose.numpy()).max() < 1e-5
    assert np.allclose(target[0, 64:70], src.semantics[64:70]) and target[1:, 64:70].std(0).min() > 0
    other = styled.models.head_pose(clip, 25.0, n, src.semantics[64:70], 7, 4)
    assert np.abs(other[1:] - target[1:, 64:70]).max() > 1e-3                      # the style matters
    styled.pose_style = None                                # the default: pose from the (still) Motion
    assert np.allclose(styled.target_coefficients(src, motion, RenderInputs(clip, 25.0))[:, 64:70],
                       src.semantics[64:70], atol=1e-6)
    with pytest.raises(InputError, match=r"^--sadtalker-pose-style must be 0..45, got 46$"):
        SadTalkerRenderer(checkpoints, pose_style=46)


# --- training the face render through the shared loop (training/sadtalker_tasks.py) ---

def _synthetic_shards(root: Path, videos: int = 3, frames: int = 40, size: int = 32) -> Path:
    """A prepared dataset whose frames are a function of the coefficients: a dark mouth bar
    whose height follows jawOpen, shifted sideways by the yaw."""
    from talkinghead.data.prepare import LIP_BIT
    from talkinghead.types import BS, Motion

    rng = np.random.default_rng(0)
    names = []
    for v in range(videos):
        jaw = np.clip(0.5 + 0.5 * np.sin(np.arange(frames) / 3.0 + v), 0, 1)
        yaw = 10 * np.sin(np.arange(frames) / 7.0 + v)
        bs = np.zeros((frames, 52), np.float32)
        bs[:, BS["jawOpen"]] = jaw
        img = np.full((frames, size, size, 3), 170, np.uint8)
        img[:, size // 4: size // 2, size // 4: 3 * size // 4] = 210                      # "eyes" band
        masks = np.zeros((frames, size, size), np.uint8)
        for t in range(frames):
            x0 = size // 3 + int(round(yaw[t] / 5))
            img[t, size // 2 + 2: size // 2 + 3 + int(jaw[t] * size / 4), x0: x0 + size // 3] = 40
            masks[t, size // 2 + 2, x0: x0 + size // 3] = LIP_BIT                       # the bar's top edge
        d = root / "shards" / f"v{v}"
        d.mkdir(parents=True)
        np.save(d / "frames.npy", img + rng.integers(0, 3, img.shape, dtype=np.uint8))
        np.save(d / "masks.npy", masks)
        np.save(d / "features.npy", np.zeros((frames, 4), np.float16))
        Motion(bs, np.stack([yaw, np.zeros(frames), np.zeros(frames)], 1), np.tile([0, 0, -40.0], (frames, 1)),
               np.full(frames, 0.3), np.full((frames, 2), 0.3)).save(d / "motion.npz")
        (d / "info.json").write_text(json.dumps({"features": "mel", "frames": frames, "size": size}))
        names.append(d.name)
    (root / "manifest.json").write_text(json.dumps({"config": {"expand": 1.6, "size": size}, "shards": names}))
    return root


def test_keypoint_prior_is_face_vid2vids():
    from talkinghead.training.sadtalker_tasks import keypoint_prior

    far = torch.tensor([[[-1.0, 0, 0.33], [1.0, 0, 0.33]]])
    assert float(keypoint_prior(far)) == pytest.approx(0.0, abs=1e-6)
    near = torch.tensor([[[0.0, 0, 0.0], [0.1, 0, 0.0]]])      # |d|^2 = 0.01 < 0.1, depth 0 vs 0.33
    assert float(keypoint_prior(near)) == pytest.approx(2 * 0.09 + 0.33, abs=1e-5)


def test_mouth_loss_reads_only_the_dilated_lips():
    from talkinghead.training.sadtalker_tasks import mouth_loss

    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    lips = torch.zeros(2, 1, 32, 32)
    lips[:, :, 20:22, 12:20] = 1                                   # dilated by 2 px: rows 18..23, cols 10..21
    inside = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    inside[:, :, 18:24, 10:22] = True
    expected = (pred - target).abs().masked_select(inside.expand(-1, 3, -1, -1)).mean()
    assert float(mouth_loss(pred, target, lips)) == pytest.approx(float(expected), rel=1e-5)
    changed = torch.where(inside, pred, torch.rand(2, 3, 32, 32, generator=g))
    assert float(mouth_loss(changed, target, lips)) == pytest.approx(float(expected), rel=1e-5)
    assert float(mouth_loss(pred, target, torch.zeros_like(lips))) == 0.0      # no lips: no term


@pytest.mark.slow
def test_face_render_trains_resumes_and_generates(tmp_path, portrait_path, speech_path, capsys):
    """`train sadtalker` on prepared shards: validation loss falls, the run resumes, and the
    trained checkpoint drives `generate --renderer sadtalker` (coefficients from the motion model)."""
    from talkinghead.cli import main
    from talkinghead.io.video import iter_frames, video_info

    data = _synthetic_shards(tmp_path / "data")
    ckpt = tmp_path / "render"
    args = ["train", "sadtalker", "--config", str(ROOT / "configs" / "sadtalker" / "render.debug.json"),
            "--data", str(data), "-o", str(ckpt), "--steps", "40", "-q"]
    with torch.enable_grad():
        assert main(args) == 0
        log = [json.loads(line) for line in (ckpt / "log.jsonl").read_text().splitlines()]
        vals = [r["val_loss"] for r in log if "val_loss" in r]
        assert vals[-1] < 0.7 * vals[0], vals
        cfg = json.loads((ckpt / "config.json").read_text())["config"]
        assert cfg["model"] == "sadtalker_render" and cfg["size"] == 32
        assert main(args[:-3] + ["--steps", "42", "-q"]) == 0                     # resumes at 40
    assert json.loads((ckpt / "train_state.json").read_text())["step"] == 42
    out = tmp_path / "trained.mp4"
    assert main(["generate", "--image", str(portrait_path), "--audio", str(speech_path), "-o", str(out),
                 "--renderer", "sadtalker", "--sadtalker-checkpoints", str(ckpt), "-q"]) == 0
    info = video_info(out)
    assert info.num_frames == 100 and (info.width, info.height) == (512, 512)
    frames = np.stack(list(iter_frames(out))).astype(np.float32)
    assert np.abs(frames[1:] - frames[:-1]).mean() > 0                     # the face moves
    assert main(["generate", "--image", str(portrait_path), "--audio", str(speech_path), "-o",
                 str(tmp_path / "y.mp4"), "--renderer", "sadtalker", "--sadtalker-checkpoints", str(ckpt),
                 "--sadtalker-pose-style", "3", "-q"]) == 2
    assert "needs SadTalker's released checkpoints (PoseVAE)" in capsys.readouterr().err
    (ckpt / "config.json").write_text(json.dumps({"config": {"model": "dawn_lfg"}}))
    assert main(["generate", "--image", str(portrait_path), "--audio", str(speech_path), "-o",
                 str(tmp_path / "x.mp4"), "--renderer", "sadtalker", "--sadtalker-checkpoints", str(ckpt), "-q"]) == 2
    assert "not a SadTalker face-render checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_posevae_matches_official():
    """The released PoseVAE (audio2pose): the official state filled from its stored layout (the
    training-only discriminator `netD_motion.*` is dropped: ours does not build it)."""
    from talkinghead.render.sadtalker.posevae import PoseVAE

    full = random_state({k: torch.zeros(s) for k, s in LAYOUT["posevae"]}, SEEDS["posevae"])
    state = {k: v for k, v in full.items() if not k.startswith("netD_motion.")}
    model = PoseVAE()
    assert sorted(model.state_dict()) == sorted(state)
    model.load_state_dict(state)
    x = inputs("posevae")
    torch.manual_seed(19)
    _close(model.eval().generate(x["mels"], x["ref"][:, 0, -6:], 5), "posevae/pose_pred")


def test_posevae_loads_from_the_released_layout(tmp_path):
    from safetensors.torch import save_file

    from talkinghead.render.sadtalker.posevae import PoseVAE, load_posevae

    state = random_state(PoseVAE().state_dict(), 70)
    flat = {f"audio2pose.{k}": v.contiguous() for k, v in state.items()}
    flat["audio2pose.netD_motion.seq.0.weight"] = torch.zeros(2, 2)        # training-only, skipped
    save_file(flat, str(tmp_path / "SadTalker_V0.0.2_256.safetensors"))
    model = load_posevae(tmp_path)
    assert torch.equal(model.netG.decoder.classbias, state["netG.decoder.classbias"])
    del flat["audio2pose.netG.decoder.pose_linear.bias"]
    save_file(flat, str(tmp_path / "SadTalker_V0.0.2_256.safetensors"))
    with pytest.raises(InputError, match=r"audio2pose\): missing key 'netG.decoder.pose_linear.bias'$"):
        load_posevae(tmp_path)
    with pytest.raises(InputError, match="PoseVAE"):
        load_posevae(tmp_path / "nothing")


def test_folding_spectral_norms_keeps_the_decoder_output():
    import copy

    from talkinghead.render.sadtalker.generator import SPADEDecoder
    from talkinghead.render.sadtalker.model import fold_for_inference

    torch.manual_seed(0)
    dec = SPADEDecoder(16, 8, hidden=8, middle=1).eval()
    feature = torch.randn(1, 16, 8, 8)
    before = dec(feature)
    folded = fold_for_inference(copy.deepcopy(dec))
    assert not any(k.endswith(("_orig", "_u", "_v")) for k in folded.state_dict())
    assert sum(k.endswith("_orig") for k in dec.state_dict()) == 8   # middle 2, up_0 and up_1 3 each
    assert torch.equal(folded(feature), before)


@pytest.mark.parametrize("name", ["render.cpu.json", "render.cpu_wide.json", "render.debug.json"])
def test_cpu_configs_build_a_render_that_learns(name):
    """Every small config of configs/sadtalker/ parses (unknown keys are an error), builds a
    render whose feature volume is feature_channel x depth at S/4, and one L1 step on a fixed
    pair lowers the loss."""
    from talkinghead.render.sadtalker.face_render import COEFFS, FaceRender, FaceRenderConfig
    from talkinghead.training.loop import TrainConfig
    from talkinghead.training.run import dataclass_from
    from talkinghead.training.sadtalker_tasks import RenderTaskConfig

    raw = json.loads((ROOT / "configs" / "sadtalker" / name).read_text())
    dataclass_from(TrainConfig, raw["train"], name)
    dataclass_from(RenderTaskConfig, raw["task"], name)
    cfg = dataclass_from(FaceRenderConfig, raw["model"], name)
    torch.manual_seed(0)
    model = FaceRender(cfg)
    g = torch.Generator().manual_seed(1)
    s = cfg.size
    src, dri = torch.rand(2, 3, s, s, generator=g), torch.rand(2, 3, s, s, generator=g)
    w_src, w_dri = torch.randn(2, COEFFS, 27, generator=g), torch.randn(2, COEFFS, 27, generator=g)
    assert model.generator.source_volume(src).shape == (2, cfg.feature_channel, cfg.depth, s // 4, s // 4)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    with torch.enable_grad():
        losses = []
        for _ in range(2):
            loss = (model(src, w_src, w_dri).prediction - dri).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    assert losses[1] < losses[0]


def test_detail_transfer_restores_the_sharp_source_where_the_render_is_its_64px_version():
    """add_detail: with the identity deformation and a render equal to the source's low-resolution
    version, the output is the sharp source; with weight 0 it is the upsampled render; a shifted
    deformation moves the added detail with it."""
    import torch.nn.functional as F

    from talkinghead.render.sadtalker.trained import add_detail

    g = torch.Generator().manual_seed(0)
    sharp = torch.rand(1, 3, 128, 128, generator=g)
    render = F.interpolate(sharp, size=(32, 32), mode="area").expand(2, -1, -1, -1)
    c = (torch.arange(8) * 2 + 1) / 8 - 1                                   # voxel centres, align_corners=False
    zz, yy, xx = torch.meshgrid(torch.zeros(2), c, c, indexing="ij")
    identity = torch.stack([xx, yy, zz], -1)[None].expand(2, -1, -1, -1, -1)   # (2, d, h, w, 3)
    out = add_detail(render, sharp, identity, torch.ones(2, 1, 8, 8))
    inner = (slice(None), slice(None), slice(16, -16), slice(16, -16))
    assert out.shape == (2, 3, 128, 128)
    assert (out - sharp)[inner].abs().max() < 1e-4
    up = F.interpolate(render, size=(128, 128), mode="bicubic", align_corners=False).clamp(0, 1)
    assert torch.allclose(add_detail(render, sharp, identity, torch.zeros(2, 1, 8, 8)), up)
    shifted = identity.clone()
    shifted[..., 0] += 2 * 8 / 128                                          # sample 8 px to the right
    moved = add_detail(render, sharp, shifted, None) - up
    detail = sharp - F.interpolate(render, size=(128, 128), mode="bicubic", align_corners=False)
    assert (moved[..., 16:-16, 16:-24] - detail[..., 16:-16, 24:-16]).abs().mean() < 0.02

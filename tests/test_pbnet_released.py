"""DAWN's released PBNet (motion/pbnet_released.py): equal to the official code on golden fixtures
(tests/fixtures/dawn/pbnet/README.md), its checkpoint layout loaded by key, the released inference's
normalisation, and `generate --renderer dawn --dawn-checkpoints` taking pose/eyes from it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "dawn"


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def _filled(model: torch.nn.Module, seed: int | None = None) -> dict:
    """The fixtures' weights: dawn/weights.py's random_state by key (seed 0), the sinusoid tables
    kept; with `seed`, random_state(seed) then refills all but the tables and RoPE frequencies
    (make_fixtures.py's `released_model`)."""
    spec = importlib.util.spec_from_file_location("dawn_fixture_weights", FIXTURES / "weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sd = model.state_dict()
    state = module.random_state(sd, 0)
    state.update({k: v for k, v in sd.items() if k.endswith(".pe")})
    if seed is not None:
        state.update(module.random_state({k: v for k, v in state.items() if not k.endswith((".pe", ".freqs"))}, seed))
    return state


def _model(case: dict):
    from talkinghead.motion.pbnet_released import ReleasedPBNet, ReleasedPBNetConfig

    cfg = ReleasedPBNetConfig.debug(archiname=case["archiname"], pos_dim=case["pos_dim"], eye_dim=case["eye_dim"],
                                    num_heads=case["num_heads"])
    return ReleasedPBNet(cfg).eval()


def test_released_pbnet_equals_the_official_code():
    """Official transformerreemb8 (and reemb5, reemb6) with the same weights: the same state-dict
    keys and shapes, the same sampled pose/blink change (z from the same seed) in one pass or in
    query chunks over the +-window keys, the same encoder mu / logvar; all within 1e-4."""
    from safetensors.torch import load_file

    meta = json.loads((FIXTURES / "pbnet" / "pbnet_meta.json").read_text())
    io = load_file(str(FIXTURES / "pbnet" / "pbnet_io.safetensors"))
    assert set(meta["cases"]) == {"reemb8", "reemb8_short", "reemb5", "reemb6"}
    for name, case in meta["cases"].items():
        model = _model(case)
        assert {k: list(v.shape) for k, v in model.state_dict().items()} == case["keys"], name
        model.load_state_dict(_filled(model), strict=True)
        want = io[f"{name}.output"]
        assert want.shape == (1, case["frames"], case["pos_dim"] + case["eye_dim"])
        for chunk in (1024, 64):
            got = model.generate(io[f"{name}.init"], io[f"{name}.audio"], torch.Generator().manual_seed(case["seed"]),
                                 chunk=chunk)
            assert (got - want).abs().max() < 1e-4, (name, chunk, float((got - want).abs().max()))
        with torch.no_grad():
            mu, logvar = model.encoder(io[f"{name}.x"], io[f"{name}.audio"])
        assert (mu.transpose(0, 1) - io[f"{name}.mu"]).abs().max() < 1e-4, name
        assert (logvar.transpose(0, 1) - io[f"{name}.logvar"]).abs().max() < 1e-4, name
    # the 260-frame case reaches past the released +-200 frame window: without it the output differs
    model = _model(meta["cases"]["reemb8"])
    model.load_state_dict(_filled(model))
    for bias in (model.decoder.time_rel_pos_bias_tgt, model.decoder.time_rel_pos_bias_mem):
        bias.window_width = 10 ** 6
    wide = model.generate(io["reemb8.init"], io["reemb8.audio"], torch.Generator().manual_seed(11), chunk=1024)
    assert (wide - io["reemb8.output"]).abs().max() > 1e-3


def test_released_inference_equals_the_official_scripts():
    """The normalisation around the models as the official scripts run it, same weights and seed:
    the joint model (63cefa4's tvae_eval_single_both_eye_pose.evaluate) and the separate pose and
    blink models (the current unified_video_generator's generate_pose_blink): driving pose and eyes
    within 1e-4 of the official, in the normalised units (pose / (max - min))."""
    from safetensors.torch import load_file

    from talkinghead.motion.pbnet_released import (POSE_MAX, POSE_MIN, ReleasedPBNet, ReleasedPBNetConfig,
                                                   ReleasedPoseBlink)

    io = load_file(str(FIXTURES / "pbnet" / "pbnet_io.safetensors"))
    meta = json.loads((FIXTURES / "pbnet" / "pbnet_meta.json").read_text())["pipelines"]

    def model(pos: int, eye: int, seed: int) -> ReleasedPBNet:
        m = ReleasedPBNet(ReleasedPBNetConfig.debug(pos_dim=pos, eye_dim=eye)).eval()
        m.load_state_dict(_filled(m, seed))
        return m

    seeds, span = meta["weight_seeds"], torch.tensor(POSE_MAX) - torch.tensor(POSE_MIN)
    runs = {"joint": ReleasedPoseBlink(joint=model(6, 2, seeds["joint"])),
            "sep": ReleasedPoseBlink(pose=model(6, 0, seeds["pose"]), blink=model(0, 2, seeds["blink"]))}
    for name, pb in runs.items():
        pose, blink = pb(io["pipe.audio"][None], io["pipe.pose_src"].numpy(), io["pipe.blink_src"].numpy(),
                         torch.Generator().manual_seed(meta["seed"]))
        assert ((torch.from_numpy(pose) - io[f"pipe.{name}_pose"]) / span).abs().max() < 1e-4, name
        assert (torch.from_numpy(blink) - io[f"pipe.{name}_blink"]).abs().max() < 1e-4, name
        assert (io[f"pipe.{name}_pose"] - io["pipe.pose_src"]).abs().max() > 1        # they moved


def write_released_pbnet(folder: Path, joint: bool = False, audio_dim: int = 16) -> None:
    """Random-weight PBNet files in the released layout: pbnet_seperate/{pose,blink}/ (or pbnet_both/),
    each a pickled state dict `checkpoint_<step>.pth.tar` beside its `opt.yaml`."""
    from talkinghead.motion.pbnet_released import ReleasedPBNet, ReleasedPBNetConfig

    dims = {"both": (6, 2)} if joint else {"pose": (6, 0), "blink": (0, 2)}
    for i, (role, (pos, eye)) in enumerate(dims.items()):
        sub = folder / ("pbnet_both" if joint else f"pbnet_seperate/{role}")
        sub.mkdir(parents=True)
        torch.manual_seed(i)
        model = ReleasedPBNet(ReleasedPBNetConfig.debug(pos_dim=pos, eye_dim=eye, audio_dim=audio_dim, max_distance=32))
        torch.save(model.state_dict(), sub / "checkpoint_40000.pth.tar")
        (sub / "opt.yaml").write_text("archiname: transformerreemb8\nmax_distance: 32\nnum_layers: 2\n"
                                      "lambdas: {kl: 0.004, rc: 1}\nmodeltype: cvae\n")


def test_released_pbnet_files_load_by_key_and_refuse_bad_ones_in_one_line(tmp_path):
    from talkinghead.errors import InputError
    from talkinghead.motion.pbnet_released import (ReleasedPBNet, ReleasedPBNetConfig, find_released_pbnet,
                                                   load_released_pbnet)

    assert find_released_pbnet(tmp_path) is None
    write_released_pbnet(tmp_path)
    path = tmp_path / "pbnet_seperate" / "pose" / "checkpoint_40000.pth.tar"
    saved = torch.load(path, weights_only=True)
    model = load_released_pbnet(path)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    c = model.config
    assert (c.pos_dim, c.eye_dim, c.audio_dim, c.pose_latent_dim, c.num_heads, c.num_layers, c.max_distance) == \
        (6, 0, 16, 16, 2, 2, 32)
    pb = find_released_pbnet(tmp_path)
    assert pb.joint is None and pb.blink.config.eye_dim == 2
    # opt.yaml as the training script dumps it (Python tags are not constructed) names the variant:
    # reemb8 weights under a reemb5 opt.yaml have mis-shaped RoPE tables; reemb5 weights load
    (path.parent / "opt.yaml").write_text("archiname: transformerreemb5\nmax_distance: 64\n"
                                          "device: !!python/object/apply:os.system [echo pwned]\n")
    with pytest.raises(InputError, match="mis-shaped, e.g. .*rotary_emb.freqs"):
        load_released_pbnet(path)
    torch.save(ReleasedPBNet(ReleasedPBNetConfig.debug(archiname="transformerreemb5", eye_dim=0)).state_dict(), path)
    c = load_released_pbnet(path).config
    assert (c.archiname, c.max_distance, c.rope(0)) == ("transformerreemb5", 64, 2)
    (path.parent / "opt.yaml").write_text("archiname: transformerreemb7\n")
    with pytest.raises(InputError, match="transformerreemb7.*not supported"):
        load_released_pbnet(path)
    (path.parent / "opt.yaml").write_text("archiname: transformerreemb8\nmax_distance: 32\n")
    bad = dict(saved)
    bad["decoder.init_proj.weights"] = bad.pop("decoder.init_proj.weight")                # a renamed key
    torch.save(bad, path)
    with pytest.raises(InputError) as e:
        load_released_pbnet(path)
    msg = str(e.value)
    assert "\n" not in msg and "decoder.init_proj.weight" in msg and "missing" in msg and "unexpected" in msg
    bad = {k: v for k, v in saved.items() if not k.startswith("decoder.time_rel_pos_bias_tgt")}
    torch.save(bad, path)
    with pytest.raises(InputError, match="not a released PBNet state dict"):
        load_released_pbnet(path)
    path.write_bytes(b"\x80\x04cos\nsystem\n.")                                        # a code-running pickle
    with pytest.raises(InputError, match="only tensors"):
        find_released_pbnet(tmp_path)
    (tmp_path / "pbnet_seperate" / "blink" / "checkpoint_40000.pth.tar").unlink()
    with pytest.raises(InputError, match="no released PBNet checkpoint"):
        find_released_pbnet(tmp_path)


def test_released_inference_normalises_as_released(tmp_path, portrait_face):
    """A decoder whose last layer is zero predicts no change, so the driving state is the source's
    exactly (the released normalisation round trip); a constant change of the normalised state
    maps to that change times (max - min). Joint and separate files alike."""
    from talkinghead.errors import InputError
    from talkinghead.motion.pbnet_released import POSE_MAX, POSE_MIN, find_released_pbnet, source_state

    pose_src, blink_src = source_state(portrait_face)
    assert pose_src.shape == (6,) and blink_src.shape == (2,) and 0.05 < blink_src.min() < blink_src.max() < 0.6
    audio = torch.randn(1, 30, 16)
    for joint in (True, False):
        folder = tmp_path / str(joint)
        write_released_pbnet(folder, joint=joint)
        pb = find_released_pbnet(folder)
        models = [pb.joint] if joint else [pb.pose, pb.blink]
        for m in models:
            m.decoder.finallayer.weight.zero_()
            m.decoder.finallayer.bias.zero_()
        pose, blink = pb(audio, pose_src, blink_src)
        assert np.allclose(pose, pose_src, atol=1e-5) and np.allclose(blink, blink_src, atol=1e-6)
        for m in models:
            m.decoder.finallayer.bias.fill_(0.01)
        dpose, dblink = pb.deltas(audio, portrait_face, seed=3)
        span = np.subtract(POSE_MAX, POSE_MIN)
        assert dpose.shape == (1, 30, 6) and dblink.shape == (1, 30, 2)
        assert np.allclose(dpose[0].numpy(), 0.01 * span, rtol=1e-3) and np.allclose(dblink[0].numpy(), 0.01, atol=1e-6)
    with pytest.raises(InputError, match="16-wide audio features"):
        pb(torch.randn(1, 30, 24), pose_src, blink_src)


@pytest.mark.slow
def test_generate_cli_takes_pose_and_eyes_from_the_released_pbnet(tmp_path, portrait_path, speech_path,
                                                                 capsys, monkeypatch):
    """Random-weight DAWN files + the released PBNet's in the official layout -> `generate`; the
    A2V-FDM's pose/eye conditions are PBNet's; a broken PBNet file is a one-line error."""
    from talkinghead.cli import main
    from talkinghead.io.video import video_info
    from talkinghead.motion import pbnet_released
    from tests.test_dawn import _official_layout

    _official_layout(tmp_path)
    write_released_pbnet(tmp_path)
    seen = []
    real = pbnet_released.ReleasedPoseBlink.deltas

    def spy(self, audio, face, seed=0):
        seen.append(real(self, audio, face, seed))
        return seen[-1]

    monkeypatch.setattr(pbnet_released.ReleasedPoseBlink, "deltas", spy)
    out = tmp_path / "pbnet.mp4"
    assert main(["generate", "--image", str(portrait_path), "--audio", str(speech_path), "-o", str(out),
                 "--renderer", "dawn", "--dawn-checkpoints", str(tmp_path), "--dawn-steps", "1", "-q"]) == 0
    info = video_info(out)
    assert info.num_frames == 100 and len(seen) == 1
    pose, eyes = seen[0]
    assert pose.shape == (1, 100, 6) and eyes.shape == (1, 100, 2) and pose.std(1).min() > 0
    (tmp_path / "pbnet_seperate" / "blink" / "checkpoint_40000.pth.tar").write_bytes(b"not a pickle")
    bad = tmp_path / "bad.mp4"
    assert main(["generate", "--image", str(portrait_path), "--audio", str(speech_path), "-o", str(bad),
                 "--renderer", "dawn", "--dawn-checkpoints", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint_40000" in err[0] and not bad.exists()

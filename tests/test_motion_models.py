"""Motion models: shapes, papers' behaviours, checkpoints, and that training lowers the loss."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.io.checkpoint import save_model
from talkinghead.motion.pbnet import PBNet, PBNetConfig
from talkinghead.motion.registry import MODELS, build_model, load_checkpoint
from talkinghead.motion.sadtalker import ExpNet, ExpNetConfig, PoseVAE, PoseVAEConfig
from talkinghead.motion.sync_expert import SyncExpert, SyncExpertConfig, sync_loss
from talkinghead.training.run import load_config, train_motion

pytestmark = pytest.mark.usefixtures("one_thread_module")   # tests/conftest.py: tiny models, 2 threads cost ~8x the CPU

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "motion"


def test_sync_expert_scores_windows_in_unit_range():
    e = SyncExpert(SyncExpertConfig.debug(audio_dim=6))
    cos = e(torch.randn(2, 30, 6), torch.rand(2, 30, 17))
    assert cos.shape == (2, 26) and cos.min() >= 0 and cos.max() <= 1
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[:, 20:] = False
    assert torch.isfinite(sync_loss(e, torch.randn(2, 30, 6), torch.rand(2, 30, 17), mask))


def test_expnet_follows_reference_and_blink_inputs():
    net = ExpNet(ExpNetConfig.debug(audio_dim=6)).eval()
    out = net(torch.randn(2, 40, 6), torch.zeros(2, 20), torch.zeros(2, 40))
    assert out.shape == (2, 40, 20)
    blinked = net(torch.randn(2, 40, 6), torch.zeros(2, 20), torch.ones(2, 40))
    assert not torch.allclose(out, blinked)


def test_posevae_generates_any_length_continuously_from_zero():
    vae = PoseVAE(PoseVAEConfig.debug(audio_dim=6)).eval()
    residual, mu, logvar = vae(torch.randn(3, 32, 3), torch.randn(3, 32, 6), torch.tensor([0, 1, 2]),
                               torch.zeros(3, 3))
    assert residual.shape == (3, 32, 3) and mu.shape == logvar.shape == (3, 8)
    assert torch.allclose(residual[:, 0], torch.zeros(3, 3), atol=1e-6)
    pose = vae.generate(torch.randn(1, 100, 6), torch.tensor([3]), torch.Generator().manual_seed(0))
    assert pose.shape == (1, 100, 3) and torch.allclose(pose[0, 0], torch.zeros(3), atol=1e-6)
    # clips chain through their shared frame: no jump at a boundary larger than inside clips
    steps = (pose[0, 1:] - pose[0, :-1]).norm(dim=-1)
    assert steps[30:32].max() <= 3 * steps.max()
    assert vae.discriminator(pose).shape[:2] == (1, 1)


def test_pbnet_vae_and_any_length_generation():
    net = PBNet(PBNetConfig.debug(audio_dim=6)).eval()
    recon, mu, logvar = net(torch.randn(2, 50, 5), torch.randn(2, 50, 6), torch.zeros(2, 5))
    assert recon.shape == (2, 50, 5) and mu.shape == (2, 50, 4)
    for n in (17, 400):
        assert net.generate(torch.randn(1, n, 6), generator=torch.Generator().manual_seed(0)).shape == (1, n, 5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checkpoint_round_trip(name, tmp_path):
    cls, config_cls = MODELS[name]
    model = build_model(name, {**vars(config_cls.debug(audio_dim=6)), "model": name})
    save_model(tmp_path, model, {"model": name, "feature": "whisper", **vars(model.config)})
    loaded = load_checkpoint(tmp_path)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a.float(), b), k
    assert loaded.feature == "whisper"


def test_every_shipped_config_parses():
    files = sorted(CONFIGS.glob("*.json"))
    assert len(files) == 12
    for f in files:
        task, train = load_config(f)
        assert train.steps > 0 and task.feature == "whisper"


@pytest.mark.parametrize("name", ["sync_expert", "fd2talk_expression", "fd2talk_pose",
                                  "sadtalker_expnet", "sadtalker_posevae", "dawn_pbnet"])
def test_training_lowers_validation_loss(name, synthetic_corpus, tmp_path):
    config = CONFIGS / f"{name}.debug.json"
    result = train_motion(name, config, str(synthetic_corpus), tmp_path / name, steps=60,
                          progress=False)
    first, last = result.history[0]["val_loss"], result.history[-1]["val_loss"]
    assert result.history[0]["step"] == 0 and result.history[-1]["step"] == 60
    assert last < first, (name, first, last)
    assert (tmp_path / name / "model.safetensors").exists()
    assert json.loads((tmp_path / name / "config.json").read_text())["config"]["model"] == name
    assert load_checkpoint(tmp_path / name) is not None


def test_training_resumes_from_its_checkpoint(synthetic_corpus, tmp_path):
    config = CONFIGS / "fd2talk_pose.debug.json"
    train_motion("fd2talk_pose", config, str(synthetic_corpus), tmp_path, steps=10, progress=False)
    state = json.loads((tmp_path / "train_state.json").read_text())
    assert state["step"] == 10
    r = train_motion("fd2talk_pose", config, str(synthetic_corpus), tmp_path, steps=20, progress=False)
    assert r.step == 20
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "val_loss" in x] == [0, 10, 20]


def test_sync_expert_loss_guides_expression_training(synthetic_corpus, tmp_path):
    train_motion("sync_expert", CONFIGS / "sync_expert.debug.json", str(synthetic_corpus),
                 tmp_path / "expert", steps=10, progress=False)
    r = train_motion("fd2talk_expression", CONFIGS / "fd2talk_expression.debug.json",
                     str(synthetic_corpus), tmp_path / "exp", steps=10, expert=str(tmp_path / "expert"),
                     progress=False)
    assert "val_sync" in r.history[-1] and np.isfinite(r.history[-1]["val_sync"])

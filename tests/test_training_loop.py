"""The shared training loop's budgets: a CPU-time limit stops and saves a run early."""
import json

import pytest
import torch

from talkinghead.training.loop import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread_module")   # tests/conftest.py: tiny models, 2 threads cost ~8x the CPU


class _Regression:
    """A linear fit on fixed data: the smallest task the loop accepts."""

    def __init__(self):
        self.model = torch.nn.Linear(64, 1)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(256, 64, generator=g)
        self.y = self.x @ torch.randn(64, 1, generator=g)

    def train_batch(self, step, generator):
        idx = torch.randint(0, 256, (32,), generator=generator)
        return self.x[idx], self.y[idx]

    def loss(self, model, batch, generator):
        x, y = batch
        return torch.nn.functional.mse_loss(model(x), y), {}

    def val_batches(self):
        return [(self.x, self.y)]

    def checkpoint_config(self):
        return {"kind": "regression"}


def test_cpu_budget_stops_and_saves_before_the_step_count(tmp_path):
    cfg = TrainConfig(steps=10_000_000, batch_size=32, lr=1e-2, warmup=1, eval_every=10_000_000,
                      save_every=10_000_000, log_every=10_000_000, max_cpu_minutes=0.005)
    res = train(_Regression(), cfg, tmp_path / "run", progress=False)
    assert 0 < res.step < 10_000_000
    state = json.loads((tmp_path / "run" / "train_state.json").read_text())
    assert state["step"] == res.step

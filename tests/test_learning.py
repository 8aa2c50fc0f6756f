"""Tiny-scale learning: the models must actually learn parity, well above chance, in seconds."""

import pytest
import torch

from engramlab.engine.train import TrainConfig, train
from engramlab.models.parity import ParityModel
from engramlab.ponder.halting import ACT, PonderNet
from engramlab.ponder.steps import GRUStep
from engramlab.tasks.parity import ParityConfig, ParityTask

pytestmark = pytest.mark.slow  # learning tests

TASK = ParityTask(ParityConfig(n=8, train_k=(1, 8)))


def accuracy(model, samples=2000):
    batch = TASK.sample(samples, torch.Generator().manual_seed(123))
    parity, steps = model.predict(batch.x, generator=torch.Generator().manual_seed(0))
    return (parity == batch.y).float().mean().item(), steps.float().mean().item()


def fit(halting, tmp_path, steps):
    model = ParityModel(halting, "signs")
    cfg = TrainConfig(steps=steps, batch_size=64, lr=3e-3, log_every=50, checkpoint_every=steps, eval_every=steps)
    train(model, lambda b, g: TASK.sample(b, g), cfg, tmp_path, seed=0)
    return model.eval()


def test_pondernet_learns_8_element_parity(tmp_path):
    torch.manual_seed(0)
    model = fit(PonderNet(GRUStep(16, 32, 1), max_steps=10, lambda_p=0.3), tmp_path, steps=1000)
    acc, steps = accuracy(model)
    assert acc > 0.9, acc
    assert 1 <= steps <= 10


def test_act_learns_8_element_parity_above_chance(tmp_path):
    torch.manual_seed(0)
    model = fit(ACT(GRUStep(16, 32, 1), max_steps=10, tau=1e-3), tmp_path, steps=700)
    acc, _ = accuracy(model)
    assert acc > 0.75, acc

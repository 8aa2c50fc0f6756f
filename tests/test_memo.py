"""MEMO hops: shapes under the halting wrappers, attention over slots, and a tiny PAI learned from memory."""

import torch
import torch.nn.functional as F

from engramlab.models.memo import MEMOStep, pack
from engramlab.ponder.halting import FixedDepth, PonderNet
from engramlab.tasks.pai import PAIConfig, PAITask


def tiny_task(**extra) -> PAITask:
    return PAITask(PAIConfig(length=3, sequences=4, item_dim=16, train_items=20_000, test_items=2_000, **extra))


def per_sample_cross_entropy(y, target):
    return F.cross_entropy(y, target, reduction="none")


def test_hop_shapes_and_attention_is_a_distribution_over_slots():
    task = tiny_task()
    batch = task.sample(5, torch.Generator().manual_seed(0))
    step = MEMOStep(row_width=32, item_dim=16, rows=task.rows, hidden=32, heads=4)
    x_enc = step.encode(pack(batch.memory, batch.query))
    assert x_enc.shape == (5, 2 * task.rows + 1 + 2, 32)
    h = step.initial_state(x_enc)
    weights = step.attention(x_enc, h)
    assert weights.shape == (5, 4, task.rows) and torch.allclose(weights.sum(-1), torch.ones(5, 4))
    out = step(x_enc, h)
    assert out.state.shape == (5, 32) and out.y.shape == (5, 2) and out.halt_logit.shape == (5,)
    ponder = PonderNet(step, max_steps=3)(pack(batch.memory, batch.query))
    assert ponder.y.shape == (3, 5, 2) and ponder.p.shape == (3, 5)
    assert torch.allclose(ponder.p.sum(0), torch.ones(5))


def test_one_hop_learns_direct_queries_about_unseen_items():
    torch.manual_seed(0)
    task, test = tiny_task(indirect_fraction=0.0), tiny_task(indirect_fraction=0.0, split="test")
    model = FixedDepth(MEMOStep(32, 16, task.rows, hidden=64, heads=1), 1)
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(800):
        batch = task.sample(64, generator)
        loss, _ = model.loss(model(pack(batch.memory, batch.query)), batch.target, per_sample_cross_entropy)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    batch = test.sample(500, torch.Generator().manual_seed(1))  # items never seen in training
    y, _ = model.predict(pack(batch.memory, batch.query))
    assert (y.argmax(-1) == batch.target).float().mean() > 0.8  # chance: 0.5

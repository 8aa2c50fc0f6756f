"""MEMO hops: shapes under the halting wrappers, attention over slots, and a tiny PAI learned from memory."""

import math

import pytest
import torch
import torch.nn.functional as F

from engramlab.models.memo import BabiMEMOStep, MEMOStep, PAITransformerStep, pack
from engramlab.ponder.halting import FixedDepth, PonderNet, PonderOutput, Reinforce
from engramlab.ponder.steps import Step, StepOutput
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


@pytest.mark.slow  # learning test
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


def test_transformer_baseline_has_one_logit_per_candidate_and_no_slot_memory():
    task = tiny_task()
    batch = task.sample(3, torch.Generator().manual_seed(0))
    step = PAITransformerStep(32, 16, task.rows, hidden=32, heads=4, ff=64)
    x_enc = step.encode(pack(batch.memory, batch.query))
    assert x_enc.shape == (3, task.rows + 3, 32)  # one token per row, the cue and two candidates
    out = FixedDepth(step, 3)(pack(batch.memory, batch.query))
    assert out.y.shape == (3, 3, 2) and bool((out.steps == 3).all())


def test_reinforce_loss_matches_a_hand_computation():
    """Two samples: one halted by choice at step 2 of 3, one forced to stop at the limit (3)."""
    halt_logit = torch.tensor([[0.0, -1.0], [1.0, 0.5], [0.0, 2.0]], requires_grad=True)  # (steps, batch)
    y = torch.zeros(3, 2, 2)
    y[1, 0] = torch.tensor([2.0, 0.0])  # sample 0's answer at its halting step 2
    y[2, 1] = torch.tensor([0.0, 1.0])  # sample 1's answer at step 3
    steps = torch.tensor([2, 3])
    out = PonderOutput(y, halt_logit, steps, torch.zeros(3, 2))
    target = torch.tensor([0, 0])
    loss, logs = Reinforce(Step(), max_steps=3, hop_cost=0.1).loss(out, target, per_sample_cross_entropy)

    ce = [math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(1.0))]
    log_sigmoid = lambda v: -math.log(1 + math.exp(-v))  # noqa: E731
    # sample 0: continue at 1, halt at 2; sample 1: continue at 1 and 2, forced halt at 3 (no decision)
    log_pi = [log_sigmoid(-0.0) + log_sigmoid(1.0), log_sigmoid(1.0) + log_sigmoid(-0.5)]
    reward = [-ce[0] - 0.2, -ce[1] - 0.3]
    mean = sum(reward) / 2
    policy = -sum((r - mean) * lp for r, lp in zip(reward, log_pi)) / 2
    assert loss.item() == pytest.approx(sum(ce) / 2 + policy, rel=1e-5)
    assert logs["expected_steps"] == 2.5


class ConstantStep(Step):
    """A step whose prediction never improves: only the hop cost distinguishes halting steps."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def initial_state(self, x_enc):
        return x_enc

    def forward(self, x_enc, h):
        return StepOutput(h, torch.zeros(h.shape[0], 2), self.bias.expand(h.shape[0]))


def test_reinforce_learns_to_stop_early_when_hops_cost_and_do_not_help():
    torch.manual_seed(0)
    model = Reinforce(ConstantStep(), max_steps=8, hop_cost=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    before = model(torch.zeros(512, 1)).steps.float().mean()
    for _ in range(100):
        out = model(torch.zeros(256, 1))
        loss, _ = model.loss(out, torch.zeros(256, dtype=torch.long), per_sample_cross_entropy)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model(torch.zeros(512, 1)).steps.float().mean()
    assert before > 1.7 and after < 1.2  # lambda 0.5 at the start: about 2 hops


def test_aligned_start_attends_to_the_cue_rows_before_any_training():
    """With aligned item embeddings the first hop already finds the rows that hold the cue."""
    torch.manual_seed(0)
    task = PAITask(PAIConfig(length=3, sequences=16, item_dim=32, train_items=20_000, test_items=2_000))
    batch = task.sample(200, torch.Generator().manual_seed(0))
    x = pack(batch.memory, batch.query)
    cue = batch.query[:, 0]
    holds_cue = ((batch.memory[..., :32] - cue[:, None]).abs().sum(-1) < 1e-6) | (
        (batch.memory[..., 32:] - cue[:, None]).abs().sum(-1) < 1e-6
    )  # (B, rows)
    mass = {}
    for aligned in (True, False):
        step = MEMOStep(64, 32, task.rows, hidden=64, heads=4, aligned_start=aligned)
        x_enc = step.encode(x)
        weights = step.attention(x_enc, step.initial_state(x_enc)).mean(1)  # (B, rows), heads averaged
        mass[aligned] = (weights * holds_cue).sum(-1).mean().item()
    # 1 or 2 of 32 rows hold the cue: uniform attention puts about 0.05 on them
    assert mass[True] > 0.3 and mass[False] < 0.15, mass


def test_babi_hop_reads_only_told_sentences_whatever_the_padding():
    """MEMO on bAbI: attention is a distribution over the told sentences only, and front padding
    (a shorter story in a longer memory) changes nothing, since a sentence's age counts from the end."""
    torch.manual_seed(0)
    step = BabiMEMOStep(vocab_size=30, answers=7, max_words=5, memory_size=10, hidden=16, heads=4).eval()
    question = torch.randint(1, 30, (2, 1, 5))
    story = torch.randint(1, 30, (2, 3, 5))
    short = torch.cat([question, story], dim=1)
    padded = torch.cat([question, torch.zeros(2, 4, 5, dtype=torch.long), story], dim=1)
    x_padded = step.encode(padded)
    assert x_padded.shape == (2, 1 + 7, 2 * 16 + 1)
    weights = step.attention(x_padded, step.initial_state(x_padded))
    assert weights.shape == (2, 4, 7) and (weights[..., :4] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4))
    for halting in (PonderNet(step, max_steps=3), Reinforce(step, max_steps=3), FixedDepth(step, 2)):
        torch.manual_seed(1)
        a = halting(short)
        torch.manual_seed(1)
        b = halting(padded)
        torch.testing.assert_close(a.y, b.y)
        assert a.y.shape[1:] == (2, 7) and a.halt_logit.shape[1:] == (2,)

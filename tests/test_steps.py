"""The step contract: every step module works with every halting scheme."""

import pytest
import torch

from engramlab.models.parity import ParityModel, parity_features
from engramlab.ponder.halting import ACT, FixedDepth, PonderNet
from engramlab.ponder.steps import STEPS
from engramlab.tasks.parity import ParityConfig, ParityTask

N, BATCH = 10, 6


def make_step(kind: str, encoding: str = "signs"):
    per_element = {"raw": 1, "onehot": 3, "signs": 2}[encoding]
    cls = STEPS[kind]
    in_features = per_element if cls.sequence_input else per_element * N
    torch.manual_seed(0)
    return cls(in_features, 16, 1) if kind != "transformer" else cls(in_features, 16, 1, heads=2, ff=32, max_len=N)


def parity_input(kind: str, encoding: str = "signs"):
    x = ParityTask(ParityConfig(n=N, train_k=(1, N))).sample(BATCH, torch.Generator().manual_seed(0)).x
    return x, parity_features(x, encoding, STEPS[kind].sequence_input)


@pytest.mark.parametrize("kind", list(STEPS))
def test_step_contract_shapes_and_lambda_range(kind):
    step = make_step(kind)
    _, features = parity_input(kind)
    x_enc = step.encode(features)
    h = step.initial_state(x_enc)
    for _ in range(3):
        out = step(x_enc, h)
        assert out.state.shape == h.shape and out.state.shape[0] == BATCH
        assert out.y.shape == (BATCH, 1)
        assert out.halt_logit.shape == (BATCH,)
        assert ((out.lam > 0) & (out.lam < 1)).all()
        assert not torch.equal(out.state, h)  # the state moves
        h = out.state


@pytest.mark.parametrize("kind", list(STEPS))
@pytest.mark.parametrize("wrapper", ["pondernet", "act", "fixed"])
def test_every_step_trains_under_every_halting_scheme(kind, wrapper):
    step = make_step(kind)
    halting = {
        "pondernet": lambda s: PonderNet(s, max_steps=4),
        "act": lambda s: ACT(s, max_steps=4),
        "fixed": lambda s: FixedDepth(s, depth=2),
    }[wrapper](step)
    model = ParityModel(halting, "signs")
    batch = ParityTask(ParityConfig(n=N, train_k=(1, N))).sample(BATCH, torch.Generator().manual_seed(0))
    loss, logs = model(batch)
    assert torch.isfinite(loss) and loss.ndim == 0
    loss.backward()
    trained = [name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert any("readout" in name for name in trained) and any("input" in name for name in trained)
    if wrapper != "fixed":
        assert any("halt" in name for name in trained)


@pytest.mark.parametrize("kind", ["gru", "mlp", "transformer"])
def test_predict_returns_long_parity_and_steps_and_matches_the_unrolled_forward(kind):
    model = ParityModel(PonderNet(make_step(kind), max_steps=5, epsilon=0.0), "signs").eval()
    x, features = parity_input(kind)
    parity, steps = model.predict(x, halting="greedy")
    assert parity.dtype == torch.long and steps.dtype == torch.long
    assert parity.shape == (BATCH,) and steps.shape == (BATCH,)
    assert set(parity.tolist()) <= {0, 1} and ((steps >= 1) & (steps <= 5)).all()
    # predict drops halted samples as it goes; the full unroll must agree with it
    out = model.halting(features, max_steps=5)
    if out.y.shape[0] == 5:
        first = torch.where(torch.sigmoid(out.halt_logit) > 0.5, torch.arange(1, 6).unsqueeze(1), 5).amin(0)
        assert torch.equal(first, steps)
        expected = (out.y.squeeze(-1).gather(0, (first - 1).unsqueeze(0)).squeeze(0) > 0).long()
        assert torch.equal(expected, parity)


@pytest.mark.parametrize("encoding, width", [("raw", 1), ("onehot", 3), ("signs", 2)])
def test_input_encodings(encoding, width):
    x = torch.tensor([[1.0, 0.0, -1.0]])
    seq = parity_features(x, encoding, sequence=True)
    assert seq.shape == (1, 3, width)
    assert parity_features(x, encoding, sequence=False).shape == (1, 3 * width)
    if encoding == "signs":
        assert seq[0].tolist() == [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    if encoding == "onehot":
        assert seq[0].argmax(-1).tolist() == [2, 1, 0]


def test_transformer_step_refuses_sequences_longer_than_its_positions():
    step = make_step("transformer")
    with pytest.raises(ValueError, match="max_len"):
        step.encode(torch.zeros(1, N + 1, 2))

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


def test_pytorch_init_draws_nothing():
    """The default keeps nn.Linear's weights and the RNG untouched, so runs from before
    ``model.init`` existed are the same runs."""
    step = make_step("rnn")
    before = {k: v.clone() for k, v in step.state_dict().items()}
    rng = torch.get_rng_state()
    step.initialise("pytorch")
    assert all(torch.equal(before[k], v) for k, v in step.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


@pytest.mark.parametrize("kind", ["rnn", "gru", "mlp"])
def test_truncated_normal_init_is_sonnets_linear_default(kind):
    """std 1/sqrt(fan_in) cut at 2 std (so the drawn std is ≈ 0.88/sqrt(fan_in)), biases zero."""
    torch.manual_seed(1)
    step = STEPS[kind](64, 256, 1)
    step.initialise("truncated-normal")
    for name, layer in step.named_modules():
        if isinstance(layer, torch.nn.Linear):
            bound = 2 / layer.in_features**0.5
            assert layer.weight.abs().max() <= bound, name
            if layer.weight.numel() > 1000:  # the heads are too small to measure a spread
                ratio = layer.weight.std().item() * layer.in_features**0.5
                assert 0.84 < ratio < 0.92, (name, ratio)
            if layer.bias is not None:
                assert not layer.bias.any(), name


@pytest.mark.parametrize("kind", ["rnn", "gru"])
def test_orthogonal_init_makes_each_recurrent_gate_block_orthogonal(kind):
    step = make_step(kind)
    input_before = step.input.weight.clone()
    step.initialise("orthogonal")
    blocks = step.recurrent.weight.split(step.hidden)
    assert len(blocks) == (3 if kind == "gru" else 1)
    for block in blocks:
        torch.testing.assert_close(block @ block.T, torch.eye(step.hidden), atol=1e-5, rtol=0)
    assert torch.equal(step.input.weight, input_before)  # only the recurrent matrix is drawn again


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match="allowed: pytorch, truncated-normal, orthogonal"):
        make_step("rnn").initialise("xavier")


def test_the_parity_experiment_builds_its_step_with_model_init():
    from engramlab.config import resolve
    from engramlab.experiments.ponder.pondernet_parity import EXPERIMENT

    cfg = resolve(EXPERIMENT.Config, overrides=["model.step=rnn", "model.init=truncated-normal"])
    step = EXPERIMENT.build(cfg, "pondernet").halting.step
    assert not step.input.bias.any() and not step.readout.bias.any()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.step=transformer", "model.init=truncated-normal"], "applies to the gru, rnn and mlp steps"),
        (["model.step=mlp", "model.init=orthogonal"], "'orthogonal' applies to the gru and rnn steps, not 'mlp'"),
        (["model.init=xavier"], "model.init"),
    ],
)
def test_the_parity_experiment_refuses_an_init_its_step_cannot_take(overrides, message):
    from engramlab.config import ConfigError, resolve
    from engramlab.experiments.ponder.pondernet_parity import EXPERIMENT

    with pytest.raises(ConfigError, match=message):
        resolve(EXPERIMENT.Config, overrides=overrides)

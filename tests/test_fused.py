"""The fused kernels (engramlab/ponder/fused.cpp) compute what the readable steps compute.

Building the kernels takes about a minute the first time, so the tests that need them are in the
slow tier; the fallback (no kernels) is checked in the default tier.
"""

import copy
import subprocess
import sys

import pytest
import torch

from engramlab.config import resolve
from engramlab.errors import ConfigError
from engramlab.experiments import get_experiment
from engramlab.ponder import fused
from engramlab.ponder.steps import GRUStep, RNNStep
from engramlab.tasks.parity import ParityTask

EXPERIMENT = get_experiment("pondernet-parity")


def kernels():
    module = fused.load()
    if module is None:
        pytest.skip("the fused kernels cannot be built on this machine")
    return module


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> bool:
    """Equal to float32 rounding, relative to the tensor's largest entry (sums of many terms differ
    in their last bits when added in another order)."""
    return a.shape == b.shape and (a - b).abs().max().item() <= rtol * b.abs().max().item() + 1e-7


def grads(out: torch.Tensor, inputs, seed: int = 3):
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad((out * weights).sum(), inputs)


@pytest.mark.slow
def test_tanh_matches_torch_including_near_zero():
    k = kernels()
    a = torch.cat([torch.linspace(-12, 12, 4001), torch.logspace(-8, 0, 500), -torch.logspace(-8, 0, 500)])
    exact = torch.tanh(a.double())
    relative = ((k.tanh(a).double() - exact).abs() / exact.abs().clamp(min=1e-30)).max().item()
    assert relative < 2e-6  # the 2σ(2x) − 1 form alone is off by 20 % at 1e-7 (cancellation)
    a.requires_grad_(True)
    assert close(*[grads(f(a), a)[0] for f in (k.tanh, torch.tanh)])


@pytest.mark.slow
def test_gru_cell_forward_and_backward_match_the_readable_step():
    k = kernels()
    torch.manual_seed(0)
    step = GRUStep(5, 24)  # kernels not loaded: transition is the PyTorch code
    xg, h = torch.randn(37, 3 * 24, requires_grad=True), torch.randn(37, 24, requires_grad=True)
    a, b = step.transition(xg, h), k.gru_cell(xg, step.recurrent(h), h)
    assert close(a, b)
    inputs = (xg, h, step.recurrent.weight, step.recurrent.bias)
    assert all(close(x, y) for x, y in zip(grads(a, inputs), grads(b, inputs)))


@pytest.mark.slow
@pytest.mark.parametrize("cls", [GRUStep, RNNStep])
@pytest.mark.parametrize("steps", [1, 7])
def test_whole_unroll_matches_step_by_step(cls, steps):
    torch.manual_seed(0)
    eager = cls(10, 24)
    fast = copy.deepcopy(eager)
    assert fast.use_fused() and not eager.fused
    x = torch.randn(33, 10)
    outs, params = [], []
    for step in (eager, fast):
        x_enc = step.encode(x)
        states = step.states(x_enc, steps)
        assert states.shape == (steps, 33, 24)
        outs.append(states)
        params.append(grads(states, list(step.parameters())[:3]))  # input and recurrent weights
    assert close(*outs)
    assert all(close(a, b) for a, b in zip(*params))


@pytest.mark.slow
@pytest.mark.parametrize("step", ["gru", "rnn"])
@pytest.mark.parametrize("arm", ["pondernet", "act", "fixed", "repeat"])
@pytest.mark.parametrize("epsilon", [0.0, 0.05])
def test_training_loss_and_gradients_equal_with_and_without_kernels(step, arm, epsilon):
    """Both unrolls of a fused step (all samples to N; halted samples dropped) give the PyTorch
    path's loss, logs and gradients; evaluation gives the same predictions and steps."""
    kernels()
    overrides = ["task.n=16", "task.train_k=[1,16]", "task.test_k=null", f"model.step={step}", "model.hidden=32"]
    overrides.append(f"model.halting.epsilon={epsilon}")
    models = [
        EXPERIMENT.build(resolve(EXPERIMENT.Config, overrides=overrides + [f"model.fused={f}"]), arm) for f in (0, 1)
    ]
    assert models[1].halting.step.fused and not models[0].halting.step.fused
    task = ParityTask(resolve(EXPERIMENT.Config, overrides=overrides).task)
    batch = task.sample(64, torch.Generator().manual_seed(1))
    results = []
    for model in models:
        loss, logs = model(batch)
        loss.backward()
        grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
        prediction = model.predict(batch.x, generator=torch.Generator().manual_seed(2))
        results.append((loss, logs, grads, prediction))
    (loss0, logs0, grads0, pred0), (loss1, logs1, grads1, pred1) = results
    assert close(loss0, loss1)
    assert logs0.keys() == logs1.keys() and all(abs(logs0[k] - logs1[k]) < 1e-5 for k in logs0)
    assert grads0.keys() == grads1.keys() and all(close(grads0[k], grads1[k]) for k in grads0)
    assert torch.equal(pred0[0], pred1[0]) and torch.equal(pred0[1], pred1[1])


@pytest.mark.slow
def test_a_copy_of_a_fused_model_is_fused():
    kernels()
    cfg = resolve(EXPERIMENT.Config, overrides=["model.step=rnn", "model.fused=true"])
    model = EXPERIMENT.build(cfg, "pondernet")
    assert copy.deepcopy(model).halting.step.fused


def test_without_kernels_the_step_runs_its_pytorch_code():
    code = (
        "from engramlab.ponder.steps import GRUStep; import torch\n"
        "step = GRUStep(4, 8)\n"
        "assert step.use_fused() is False and not step.fused\n"
        "print(tuple(step.states(step.encode(torch.randn(3, 4)), 5).shape))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env={"ENGRAMLAB_FUSED": "0", "PATH": ""}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(5, 3, 8)"


def test_fused_is_refused_for_steps_without_kernels():
    with pytest.raises(ConfigError, match="model.fused applies to the gru and rnn steps, not model.step 'mlp'"):
        resolve(EXPERIMENT.Config, overrides=["model.step=mlp", "model.fused=true"])


@pytest.mark.slow
@pytest.mark.parametrize("cls", [GRUStep, RNNStep])
def test_an_unroll_continued_from_a_state_matches_one_unroll(cls):
    """unroll_whole_batch runs a fused step in chunks, each starting from the last state of the one before."""
    torch.manual_seed(0)
    eager = cls(10, 24)
    fast = copy.deepcopy(eager)
    assert fast.use_fused()
    x = torch.randn(33, 10)
    whole = eager.states(eager.encode(x), 7)
    x_enc = fast.encode(x)
    first = fast.states(x_enc, 3)
    chunked = torch.cat([first, fast.states(x_enc, 4, first[-1])])
    assert close(whole, chunked)
    assert all(
        close(a, b)
        for a, b in zip(grads(whole, list(eager.parameters())[:3]), grads(chunked, list(fast.parameters())[:3]))
    )

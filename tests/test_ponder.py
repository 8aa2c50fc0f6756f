"""PonderNet, ACT and fixed depth against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import ScriptedStep, row_index_input

from engramlab.ponder import HaltingConfig, build_halting
from engramlab.ponder.halting import (
    ACT,
    FixedDepth,
    PonderNet,
    PonderOutput,
    Reinforce,
    geometric_log_prior,
    halting_distribution,
)

sigmoid = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731


def bce(logit, target):
    p = sigmoid(logit)
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def bce_loss(pred, target):
    return F.binary_cross_entropy_with_logits(pred.squeeze(-1), target.float(), reduction="none")


@pytest.mark.parametrize("steps", [1, 2, 5, 20])
def test_halting_distribution_is_eq2_and_sums_to_one(steps):
    logits = torch.randn(steps, 7) * 3
    p, log_p = halting_distribution(logits)
    assert torch.allclose(p.sum(0), torch.ones(7), atol=1e-6)
    assert torch.allclose(log_p.exp(), p)
    lam = torch.sigmoid(logits)
    for n in range(steps - 1):  # p_n = λ_n ∏_{j<n} (1 − λ_j)
        assert torch.allclose(p[n], lam[n] * torch.prod(1 - lam[:n], dim=0), atol=1e-6)
    assert torch.allclose(p[-1], torch.prod(1 - lam[:-1], dim=0), atol=1e-6)  # leftover on the last step


def test_halting_distribution_is_finite_for_extreme_logits():
    p, log_p = halting_distribution(torch.tensor([[60.0], [-60.0], [60.0]]))
    assert torch.isfinite(log_p[0]).all() and torch.allclose(p.sum(0), torch.ones(1))


@pytest.mark.parametrize("lambda_p, steps", [(0.1, 20), (0.5, 3), (0.9, 1)])
def test_geometric_prior_is_truncated_and_renormalised(lambda_p, steps):
    prior = geometric_log_prior(lambda_p, steps).exp()
    raw = [lambda_p * (1 - lambda_p) ** n for n in range(steps)]
    expected = torch.tensor([r / sum(raw) for r in raw])
    assert torch.allclose(prior, expected, atol=1e-6)
    assert math.isclose(prior.sum().item(), 1.0, rel_tol=1e-6)


def test_pondernet_loss_matches_a_hand_computation_on_two_steps():
    # one sample, target 1; step 1 predicts logit 0.5 with halting logit 0.3, step 2 predicts -1.0
    ys = [torch.tensor([[0.5]]), torch.tensor([[-1.0]])]
    halts = [torch.tensor([0.3]), torch.tensor([-0.7])]
    lambda_p, beta = 0.4, 0.01
    model = PonderNet(ScriptedStep(ys, halts), max_steps=2, lambda_p=lambda_p, beta=beta, epsilon=0.0)
    out = model(row_index_input(1))
    loss, logs = model.loss(out, torch.tensor([1]), bce_loss)

    lam1 = sigmoid(0.3)
    p = [lam1, 1 - lam1]  # p_2 gets the leftover mass (λ_N := 1)
    reconstruction = p[0] * bce(0.5, 1) + p[1] * bce(-1.0, 1)
    z = lambda_p + lambda_p * (1 - lambda_p)
    prior = [lambda_p / z, lambda_p * (1 - lambda_p) / z]
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, prior))  # KL(p || p_G), the paper's direction
    assert math.isclose(logs["reconstruction"], reconstruction, rel_tol=1e-5)
    assert math.isclose(logs["kl"], kl, rel_tol=1e-4)
    assert math.isclose(loss.item(), reconstruction + beta * kl, rel_tol=1e-5)
    assert math.isclose(logs["expected_steps"], p[0] + 2 * p[1], rel_tol=1e-6)
    reverse = sum(qi * math.log(qi / pi) for pi, qi in zip(p, prior))
    assert not math.isclose(logs["kl"], reverse, rel_tol=1e-2)  # the two directions differ here
    model.kl = "reverse"  # offered as a named deviation: KL(p_G || p)
    _, logs = model.loss(out, torch.tensor([1]), bce_loss)
    assert math.isclose(logs["kl"], reverse, rel_tol=1e-4)


def test_pondernet_loss_has_gradients_for_predictions_and_halting():
    ys = [torch.tensor([[0.5]]), torch.tensor([[-1.0]])]
    halts = [torch.tensor([0.3]).requires_grad_(), torch.tensor([-0.7])]
    model = PonderNet(ScriptedStep(ys, halts), max_steps=2, lambda_p=0.4, epsilon=0.0)
    loss, _ = model.loss(model(row_index_input(1)), torch.tensor([1]), bce_loss)
    loss.backward()
    assert model.step.scale.grad is not None and halts[0].grad is not None and halts[0].grad.abs() > 0


def test_training_unroll_stops_when_every_sample_has_halted_with_prob_above_1_minus_epsilon():
    batch, steps = 3, 10
    halts = [torch.full((batch,), -5.0) for _ in range(steps)]
    halts[3] = torch.tensor([4.0, 4.0, 4.0])  # after step 4: P(not halted) ≈ 0.018 < 0.05
    ys = [torch.zeros(batch, 1) for _ in range(steps)]
    model = PonderNet(ScriptedStep(ys, halts), max_steps=steps, epsilon=0.05)
    assert model(row_index_input(batch)).y.shape[0] == 4
    halts[3] = torch.tensor([4.0, 4.0, -5.0])  # one sample keeps going: run to max_steps
    assert model(row_index_input(batch)).y.shape[0] == steps
    model.epsilon = 0.0
    halts[3] = torch.tensor([4.0, 4.0, 4.0])
    assert model(row_index_input(batch)).y.shape[0] == steps


def test_predict_greedy_halts_at_the_first_lambda_above_half_and_returns_that_steps_prediction():
    batch, steps = 4, 6
    logits = torch.full((steps, batch), -3.0)
    logits[1, 0] = 2.0  # sample 0 halts at step 2
    logits[4, 1] = 0.1  # sample 1 at step 5
    logits[0, 2] = 9.0  # sample 2 at step 1; sample 3 never: halts at max_steps
    ys = [torch.full((batch, 1), float(n)) for n in range(steps)]
    model = PonderNet(ScriptedStep(ys, list(logits)), max_steps=steps)
    y, taken = model.predict(row_index_input(batch), halting="greedy")
    assert taken.tolist() == [2, 5, 1, 6]
    assert y.squeeze(1).tolist() == [1.0, 4.0, 0.0, 5.0]
    _, taken = model.predict(row_index_input(batch), halting="greedy", max_steps=3)
    assert taken.tolist() == [2, 3, 1, 3]


def test_predict_by_sampling_follows_the_halting_distribution():
    batch, steps = 20_000, 4
    logits = torch.tensor([-1.0, 0.5, -0.2, 0.0]).unsqueeze(1).expand(steps, batch)
    ys = [torch.zeros(batch, 1) for _ in range(steps)]
    model = PonderNet(ScriptedStep(ys, list(logits)), max_steps=steps)
    _, taken = model.predict(row_index_input(batch), halting="sample", generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(taken - 1, minlength=steps).float() / batch
    p, _ = halting_distribution(logits[:, :1])
    assert torch.allclose(freq, p.squeeze(1), atol=0.015)


def test_act_halting_weights_remainder_ponder_cost_and_output_by_hand():
    # h = 0.3, 0.5, 0.4: the cumulative sum passes 1 - ε = 0.99 at step 3; R = 1 - 0.8 = 0.2
    h = torch.tensor([0.3, 0.5, 0.4, 0.9])
    logits = [torch.logit(v).view(1) for v in h]
    ys = [torch.tensor([[v]]) for v in (1.0, 2.0, -3.0, 10.0)]
    act = ACT(ScriptedStep(ys, logits), max_steps=10, tau=0.1, epsilon=0.01)
    out = act(row_index_input(1))
    assert out.y.shape[0] == 3  # the unroll stops once every sample has halted
    assert torch.allclose(out.p.squeeze(1), torch.tensor([0.3, 0.5, 0.2]), atol=1e-6)
    assert torch.allclose(act.ponder_cost(out), torch.tensor([3.2]), atol=1e-6)
    output = 0.3 * 1.0 + 0.5 * 2.0 + 0.2 * -3.0
    assert torch.allclose(act.output(out), torch.tensor([[output]]), atol=1e-6)
    loss, logs = act.loss(out, torch.tensor([1]), bce_loss)
    assert math.isclose(loss.item(), bce(output, 1) + 0.1 * 3.2, rel_tol=1e-5)
    y, steps = act.predict(row_index_input(1))
    assert steps.tolist() == [3] and torch.allclose(y, torch.tensor([[output]]))


def test_act_halts_at_max_steps_with_the_remainder_on_the_last_step():
    logits = [torch.tensor([-4.0]) for _ in range(5)]
    act = ACT(ScriptedStep([torch.zeros(1, 1)] * 5, logits), max_steps=3)
    out = act(row_index_input(1))
    h = torch.sigmoid(torch.tensor(-4.0))
    assert torch.allclose(out.p.squeeze(1), torch.tensor([h, h, 1 - 2 * h]), atol=1e-6)
    assert act.predict(row_index_input(1))[1].tolist() == [3]


def test_fixed_depth_uses_the_last_step_only():
    ys = [torch.tensor([[float(n)]]) for n in range(5)]
    model = FixedDepth(ScriptedStep(ys, [torch.zeros(1)] * 5), depth=3)
    out = model(row_index_input(1))
    assert out.y.shape[0] == 3 and out.p.squeeze(1).tolist() == [0.0, 0.0, 1.0]
    y, steps = model.predict(row_index_input(1))
    assert y.item() == 2.0 and steps.tolist() == [3]
    loss, _ = model.loss(out, torch.tensor([1]), bce_loss)
    assert math.isclose(loss.item(), bce(2.0, 1), rel_tol=1e-6)


def test_lambda_p_outside_the_open_unit_interval_is_refused():
    with pytest.raises(ValueError, match="lambda_p"):
        PonderNet(ScriptedStep([], []), lambda_p=1.0)


def test_each_sample_stops_at_its_own_step_and_the_batch_loss_is_the_mean_of_single_sample_losses():
    torch.manual_seed(0)
    batch, steps = 5, 8
    logits = torch.randn(steps, batch) * 2
    logits[2, 1] = 6.0  # sample 1 passes 1 - ε at step 3
    ys = [torch.randn(batch, 1) for _ in range(steps)]
    target = torch.tensor([1, 0, 1, 1, 0])
    model = PonderNet(ScriptedStep(ys, list(logits)), max_steps=steps, lambda_p=0.3, beta=0.1, epsilon=0.05)
    out = model(row_index_input(batch))
    log_not_halted = F.logsigmoid(-logits).cumsum(0)
    below = (log_not_halted < math.log(0.05)).float()
    expected = torch.where(below.any(0), below.argmax(0) + 1, steps)
    assert out.steps.tolist() == expected.tolist()
    assert torch.allclose(out.p.sum(0), torch.ones(batch), atol=1e-6)
    assert (out.p[expected[1] :, 1] == 0).all()
    loss, _ = model.loss(out, target, bce_loss)
    single = []
    for i in range(batch):
        one = PonderNet(
            ScriptedStep([y[i : i + 1] for y in ys], [l[i : i + 1] for l in logits]),
            max_steps=steps,
            lambda_p=0.3,
            beta=0.1,
            epsilon=0.05,
        )
        single.append(one.loss(one(row_index_input(1)), target[i : i + 1], bce_loss)[0])
    assert torch.allclose(loss, torch.stack(single).mean(), atol=1e-6)


def test_gradients_stay_finite_when_samples_stop_early():
    logits = [torch.tensor([5.0, -5.0]).requires_grad_() for _ in range(6)]
    ys = [torch.zeros(2, 1) for _ in range(6)]
    model = PonderNet(ScriptedStep(ys, logits), max_steps=6, epsilon=0.05)
    out = model(row_index_input(2))
    assert out.steps.tolist() == [1, 6]
    loss, _ = model.loss(out, torch.tensor([1, 0]), bce_loss)
    loss.backward()
    assert all(torch.isfinite(l.grad).all() for l in logits if l.grad is not None)


def test_build_halting_gives_each_method_the_fields_it_reads():
    config = HaltingConfig(max_steps=7, lambda_p=0.3, beta=0.2, epsilon=0.1, tau=0.05, act_epsilon=0.02, hop_cost=0.4)
    step = ScriptedStep([], [])
    pondernet = build_halting("pondernet", step, config)
    assert isinstance(pondernet, PonderNet) and pondernet.step is step
    assert (pondernet.max_steps, pondernet.lambda_p, pondernet.beta, pondernet.epsilon) == (7, 0.3, 0.2, 0.1)
    act = build_halting("act", step, config)
    assert isinstance(act, ACT) and (act.max_steps, act.tau, act.epsilon) == (7, 0.05, 0.02)
    reinforce = build_halting("reinforce", step, config)
    assert isinstance(reinforce, Reinforce) and (reinforce.max_steps, reinforce.hop_cost) == (7, 0.4)
    fixed = build_halting("fixed", step, config.model_copy(update={"fixed_steps": 3}))
    assert isinstance(fixed, FixedDepth) and fixed.depth == 3
    with pytest.raises(ValueError, match="unknown halting method 'ut'.*'pondernet', 'act', 'reinforce', 'fixed'"):
        build_halting("ut", step, config)


def test_reverse_kl_is_summed_over_each_samples_own_steps():
    """KL(p_G || p) per sample over n <= N_i, the prior truncated at N_i; nothing after N_i."""
    halt_logit = torch.tensor([[0.2, -0.4], [1.0, 0.3], [0.0, -0.5]])  # (steps, batch)
    steps = torch.tensor([2, 3])
    lambda_p = 0.3
    model = PonderNet(ScriptedStep([], []), max_steps=3, lambda_p=lambda_p, beta=1.0, epsilon=0.0, kl="reverse")
    p, _ = halting_distribution(halt_logit, steps)
    out = PonderOutput(torch.zeros(3, 2, 1), halt_logit, steps, p)
    _, logs = model.loss(out, torch.tensor([0, 1]), bce_loss)
    expected = []
    for i, n_i in enumerate(steps.tolist()):
        lams = [sigmoid(halt_logit[n, i].item()) for n in range(n_i)]
        probs = [lams[n] * math.prod(1 - lam for lam in lams[:n]) for n in range(n_i - 1)]
        probs.append(1 - sum(probs))  # the leftover mass on the sample's last step
        raw = [lambda_p * (1 - lambda_p) ** n for n in range(n_i)]
        prior = [r / sum(raw) for r in raw]
        expected.append(sum(q * math.log(q / p_n) for q, p_n in zip(prior, probs)))
    assert math.isclose(logs["kl"], sum(expected) / 2, rel_tol=1e-5)

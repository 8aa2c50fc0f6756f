"""Halting schemes around any step module: PonderNet, ACT and a fixed-depth baseline.

All three share one interface, so an experiment can swap them by name and compare them on the
same data with the same step module (:func:`engramlab.ponder.build_halting` builds one by name):

- ``forward(x) -> PonderOutput``: per-step predictions ``ŷₙ``, halting logits, the number of
  steps each sample ran and the halting distribution ``pₙ`` used by the loss (training path);
- ``loss(out, target, task_loss) -> (loss, logs)``; ``task_loss(pred, target)`` returns one loss
  per sample;
- ``predict(x, halting=..., max_steps=..., generator=...) -> (y, steps)``: the prediction and
  the number of steps each sample actually took (evaluation path).

All of them run the step through :func:`unroll`, which stops every sample at its own halting step
and drops it from the batch, so a sample costs the steps it takes, not the batch's longest. A step
with compiled kernels (``fused``) runs through :func:`unroll_whole_batch` instead: the same
results, with fewer and larger calls.

References
- PonderNet: Banino, Balaguer, Blundell, "PonderNet: Learning to Ponder", arXiv 2107.05407.
- ACT: Graves, "Adaptive Computation Time for Recurrent Neural Networks", arXiv 1603.08983.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engramlab.ponder.steps import Step

TaskLoss = Callable[[Tensor, Tensor], Tensor]  # (predictions, targets) -> per-sample loss
HaltingMode = Literal["sample", "greedy"]
KLDirection = Literal["paper", "reverse"]  # KL(p ‖ p_G), eq. 3; or KL(p_G ‖ p)
# stop(halt_logit of the samples still running, their row indices) -> which of them stop now
StopRule = Callable[[Tensor, Tensor], Tensor]


class PonderOutput(NamedTuple):
    y: Tensor  # (steps, batch, out_features) prediction at every step; zero after a sample stopped
    halt_logit: Tensor  # (steps, batch) logit of λ_n; zero after a sample stopped
    steps: Tensor  # (batch,) long, the number of steps each sample ran
    p: Tensor  # (steps, batch) halting distribution over each sample's steps (sums to 1)


def unroll(step: Step, x: Tensor, max_steps: int, stop: StopRule | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Apply ``step`` to the same input again and again, for at most ``max_steps`` steps.

    After each step, ``stop`` picks the samples that are done; they keep the step they stopped
    at and leave the batch. Returns dense ``y`` (steps, batch, …) and ``halt_logit``
    (steps, batch), zero where a sample had already stopped, and ``steps`` (batch,).
    """
    x_enc = step.encode(x)
    if getattr(step, "fused", False):
        return unroll_whole_batch(step, x_enc, max_steps, stop)
    h = step.initial_state(x_enc)
    batch = x.shape[0]
    running = torch.arange(batch, device=x.device)
    steps = torch.full((batch,), max_steps, dtype=torch.long, device=x.device)
    ys, logits, rows = [], [], []
    for n in range(1, max_steps + 1):
        h, y, halt_logit = step(x_enc, h)
        ys.append(y)
        logits.append(halt_logit)
        rows.append(running)
        if n == max_steps or stop is None:
            continue
        done = stop(halt_logit.detach(), running)
        if bool(done.any()):
            steps[running[done]] = n
            keep = ~done
            if not bool(keep.any()):
                break
            running, x_enc, h = running[keep], x_enc[keep], h[keep]
    n_steps = len(ys)
    step_index = torch.cat([torch.full_like(r, i) for i, r in enumerate(rows)])
    row_index = torch.cat(rows)
    y = ys[0].new_zeros(n_steps, batch, *ys[0].shape[1:]).index_put((step_index, row_index), torch.cat(ys))
    halt = logits[0].new_zeros(n_steps, batch).index_put((step_index, row_index), torch.cat(logits))
    return y, halt, steps


CHUNK = 3  # steps a fused step runs between two looks at the stop rule


def unroll_whole_batch(step, x_enc: Tensor, max_steps: int, stop: StopRule | None) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`unroll` for a fused step (``VectorStep.fused``), with the same results: every sample
    runs until the batch's last one stops, ``CHUNK`` steps per compiled call (the stop rule sees
    each step's logits in turn, as in ``unroll``), and the heads read all the states at once.
    Steps after a sample stopped are computed but zeroed like ``unroll``'s, so they add nothing
    to the loss or its gradient. One call per chunk costs less than dropping samples step by step."""
    batch = x_enc.shape[0]
    steps = torch.full((batch,), max_steps, dtype=torch.long, device=x_enc.device)
    if stop is None:
        states = step.states(x_enc, max_steps)
    else:
        running = torch.arange(batch, device=x_enc.device)
        chunks, h, n = [], None, 0
        while n < max_steps and running.numel() > 0:
            chunk = step.states(x_enc, min(CHUNK, max_steps - n), h)
            chunks.append(chunk)
            h = chunk[-1]
            with torch.no_grad():
                chunk_logits = step.halt(chunk).squeeze(-1)  # (chunk, batch)
            for halt_logit in chunk_logits:
                n += 1
                if n == max_steps:
                    break
                done = stop(halt_logit[running], running)
                steps[running[done]] = n
                running = running[~done]
                if running.numel() == 0:
                    break
        states = torch.cat(chunks)[: int(steps.max())]
    n_steps = states.shape[0]
    read = step.read(states.flatten(0, 1))
    y, halt = read.y.unflatten(0, (n_steps, batch)), read.halt_logit.view(n_steps, batch)
    if stop is not None:  # zero after each sample's last step, as unroll leaves them
        after = step_numbers(halt) > steps
        y, halt = y.masked_fill(after.unsqueeze(-1), 0.0), halt.masked_fill(after, 0.0)
    return y, halt, steps


def step_numbers(like: Tensor) -> Tensor:
    """(steps, 1) column 1, 2, …, N in ``like``'s dtype and device."""
    return torch.arange(1, like.shape[0] + 1, device=like.device, dtype=like.dtype).unsqueeze(1)


def per_step_loss(y: Tensor, target: Tensor, task_loss: TaskLoss) -> Tensor:
    """``task_loss`` at every step: (steps, batch, ...) predictions -> (steps, batch) losses."""
    steps, batch = y.shape[:2]
    targets = target.unsqueeze(0).expand(steps, *target.shape)
    return task_loss(y.flatten(0, 1), targets.flatten(0, 1)).view(steps, batch)


def at_last_step(values: Tensor, steps: Tensor) -> Tensor:
    """``values[steps[i] - 1, i, ...]`` for every sample ``i``."""
    index = (steps - 1).view(1, -1, *([1] * (values.dim() - 2))).expand(1, *values.shape[1:])
    return values.gather(0, index).squeeze(0)


def sampled_stop(generator: torch.Generator | None = None) -> StopRule:
    """Stop each running sample with probability ``λₙ`` (a Bernoulli draw per sample and step)."""

    def stop(halt_logit: Tensor, rows: Tensor) -> Tensor:
        draw = torch.rand(halt_logit.shape, generator=generator, device=halt_logit.device)
        # Λ_n ~ Bernoulli(λ_n), λ_n = sigmoid(halt_logit_n)   (PonderNet §2.5)
        return draw < torch.sigmoid(halt_logit)

    return stop


def predict_with_halting(
    step: Step, x: Tensor, halting: HaltingMode, max_steps: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Run each sample until it halts: by drawing ``Λₙ ~ Bernoulli(λₙ)`` (PonderNet §2.5, and
    MEMO's policy), or ``greedy`` at the first ``λₙ > 0.5``; returns the prediction there and the steps."""
    if halting == "sample":
        stop = sampled_stop(generator)
    elif halting == "greedy":

        def stop(halt_logit: Tensor, rows: Tensor) -> Tensor:
            # λ_n > 0.5  ⇔  halt_logit_n > 0
            return halt_logit > 0

    else:
        raise ValueError(f"unknown halting mode {halting!r} (allowed: 'sample', 'greedy')")
    y, _, steps = unroll(step, x, max_steps, stop)
    return at_last_step(y, steps), steps


# ---------------------------------------------------------------------------------------------
# PonderNet


def halting_distribution(halt_logit: Tensor, steps: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``pₙ = λₙ ∏_{j<n} (1 − λⱼ)`` (PonderNet eq. 2), with the mass left at a sample's last step
    ``N`` put on that step (§2.3: ``p_N = 1 − Σ_{n<N} pₙ``, i.e. ``λ_N := 1``) and ``pₙ = 0`` after.

    ``steps`` (batch,) is each sample's ``N`` (default: all rows of ``halt_logit``). Computed in
    log space; returns ``(p, log p)``, both (steps, batch). After ``N``, ``log p`` holds 0 instead
    of ``-inf`` so that ``p · log p`` terms and their gradients stay finite (they are zero).
    """
    n = step_numbers(halt_logit)
    last = n == (steps if steps is not None else halt_logit.shape[0])
    # log(1 − λ_n) = log sigmoid(−halt_logit_n)
    log_continue = F.logsigmoid(-halt_logit)
    # log ∏_{j<n} (1 − λ_j): zero for n = 1
    log_not_yet = torch.cat([torch.zeros_like(log_continue[:1]), log_continue[:-1].cumsum(0)])
    # p_n = λ_n ∏_{j<n} (1 − λ_j)   (PonderNet eq. 2);   p_N = ∏_{j<N} (1 − λ_j), i.e. λ_N := 1   (§2.3)
    log_p = torch.where(last, log_not_yet, F.logsigmoid(halt_logit) + log_not_yet)
    if steps is None:
        return log_p.exp(), log_p
    after = n > steps
    log_p = log_p.masked_fill(after, 0.0)
    return log_p.exp().masked_fill(after, 0.0), log_p


def geometric_log_prior(lambda_p: float, max_steps: int, steps: Tensor | None = None) -> Tensor:
    """``log p_G(n) = log λ_p + (n − 1) log(1 − λ_p)`` truncated at ``N`` and renormalised
    (PonderNet eq. 3; ``1/λ_p`` is the prior's expected number of steps).

    Without ``steps``: a (max_steps,) vector truncated at ``max_steps``. With ``steps`` (batch,):
    (max_steps, batch), each column truncated at its sample's ``N``.
    """
    device = None if steps is None else steps.device
    n = torch.arange(max_steps, dtype=torch.float64, device=device)  # holds n − 1 = 0, 1, …, N − 1
    # log p_G(n) = log λ_p + (n − 1) log(1 − λ_p)   (PonderNet eq. 3)
    log_p = math.log(lambda_p) + n * math.log1p(-lambda_p)
    # renormalised over n ≤ N:  Σ_{n≤N} p_G(n) = 1 − (1 − λ_p)^N
    if steps is None:
        return (log_p - math.log1p(-((1 - lambda_p) ** max_steps))).float()
    log_mass = torch.log1p(-torch.pow(1 - lambda_p, steps.to(torch.float64)))
    return (log_p.unsqueeze(1) - log_mass.unsqueeze(0)).float()


class PonderNet(nn.Module):
    """PonderNet (Banino et al. 2021, §2).

    Training (``forward``/``loss``): a sample's unroll ends at the first step ``N`` at which its
    probability of having halted exceeds ``1 − epsilon``, or at ``max_steps`` (§2.3); the loss
    is ``Σₙ pₙ L(y, ŷₙ) + β KL(p ‖ p_G(λ_p))`` (eq. 3), the KL in the paper's direction.

    Evaluation (``predict``): at each step a sample halts with probability ``λₙ`` (§2.5), and at
    ``max_steps`` it halts anyway; ``halting="greedy"`` halts at the first step with ``λₙ > 0.5``
    (a deterministic variant, not in the paper).

    ``kl="reverse"`` regularises with ``KL(p_G ‖ p)`` instead, the direction two popular public
    implementations compute: a deviation, offered to measure what the direction changes.
    """

    def __init__(
        self,
        step: Step,
        max_steps: int = 20,
        lambda_p: float = 0.2,
        beta: float = 0.01,
        epsilon: float = 0.05,
        kl: KLDirection = "paper",
    ):
        super().__init__()
        if not 0 < lambda_p < 1:
            raise ValueError(f"lambda_p must be in (0, 1), got {lambda_p}")
        if kl not in ("paper", "reverse"):
            raise ValueError(f"unknown KL direction {kl!r} (allowed: 'paper', 'reverse')")
        self.step, self.max_steps = step, max_steps
        self.lambda_p, self.beta, self.epsilon, self.kl = lambda_p, beta, epsilon, kl

    def forward(self, x: Tensor, max_steps: int | None = None) -> PonderOutput:
        limit = max_steps or self.max_steps
        stop = None
        if self.epsilon > 0:
            log_epsilon = math.log(self.epsilon)
            log_not_halted = torch.zeros(x.shape[0], device=x.device)  # x may hold integer ids

            def stop(halt_logit: Tensor, rows: Tensor) -> Tensor:
                # P(not halted by n) = ∏_{j≤n} (1 − λ_j) < ε  ⇔  P(halted) > 1 − ε   (§2.3)
                log_not_halted[rows] += F.logsigmoid(-halt_logit)
                return log_not_halted[rows] < log_epsilon

        y, halt_logit, steps = unroll(self.step, x, limit, stop)
        p, _ = halting_distribution(halt_logit, steps)
        return PonderOutput(y, halt_logit, steps, p)

    def loss(self, out: PonderOutput, target: Tensor, task_loss: TaskLoss) -> tuple[Tensor, dict[str, float]]:
        p, log_p = halting_distribution(out.halt_logit, out.steps)
        # L_Rec = Σ_n p_n L(y, ŷ_n)   (PonderNet eq. 3)
        reconstruction = (p * per_step_loss(out.y, target, task_loss)).sum(0).mean()
        log_prior = geometric_log_prior(self.lambda_p, p.shape[0], out.steps).to(p.dtype)
        if self.kl == "paper":
            # L_Reg = KL(p ‖ p_G(λ_p)) = Σ_n p_n (log p_n − log p_G(n))   (PonderNet eq. 3)
            kl = (p * (log_p - log_prior)).sum(0).mean()  # p = 0 after a sample's last step
        else:
            # the reverse, KL(p_G ‖ p) = Σ_{n≤N} p_G(n) (log p_G(n) − log p_n)   (not the paper's)
            prior = log_prior.exp().masked_fill(step_numbers(p) > out.steps, 0.0)
            kl = (prior * (log_prior - log_p)).sum(0).mean()
        # L = L_Rec + β L_Reg   (PonderNet eq. 3)
        loss = reconstruction + self.beta * kl
        logs = {
            "loss": loss.item(),
            "reconstruction": reconstruction.item(),
            "kl": kl.item(),
            # E[n] = Σ_n n p_n
            "expected_steps": (p * step_numbers(p)).sum(0).mean().item(),
            "computed_steps": out.steps.float().mean().item(),
        }
        return loss, logs

    @torch.no_grad()
    def predict(
        self,
        x: Tensor,
        halting: HaltingMode = "sample",
        max_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Each sample runs until it halts (§2.5); it stops costing compute from then on."""
        return predict_with_halting(self.step, x, halting, max_steps or self.max_steps, generator)


# ---------------------------------------------------------------------------------------------
# ACT


class ACT(nn.Module):
    """Adaptive Computation Time (Graves 2016, §2), for one input pondered over several steps.

    With halting units ``hₙ = sigmoid(halt_logitₙ)``, a sample halts at
    ``N = min{n : Σ_{j≤n} hⱼ ≥ 1 − ε}`` (or at ``max_steps``), the remainder is
    ``R = 1 − Σ_{n<N} hₙ``, and the halting weights are ``pₙ = hₙ`` for ``n < N``, ``p_N = R``
    (eqs. 3-6); the output is the ``p``-weighted mean of the per-step outputs (eqs. 7-8, the
    pre-sigmoid outputs ``W s + b``), and the loss adds the ponder cost ``τ (N + R)`` (eqs. 9-12),
    whose gradient flows through ``R`` only.
    """

    def __init__(self, step: Step, max_steps: int = 20, tau: float = 0.01, epsilon: float = 0.01):
        super().__init__()
        self.step, self.max_steps, self.tau, self.epsilon = step, max_steps, tau, epsilon

    def forward(self, x: Tensor, max_steps: int | None = None) -> PonderOutput:
        total = torch.zeros(x.shape[0], device=x.device)  # x may hold integer ids

        def stop(halt_logit: Tensor, rows: Tensor) -> Tensor:
            # N = min{n : Σ_{j≤n} h_j ≥ 1 − ε}   (Graves eqs. 3-6)
            total[rows] += torch.sigmoid(halt_logit)
            return total[rows] >= 1 - self.epsilon

        y, halt_logit, steps = unroll(self.step, x, max_steps or self.max_steps, stop)
        # h_n = sigmoid(W_h s_n + b_h)   (Graves eqs. 3-6)
        h = torch.sigmoid(halt_logit)
        n = step_numbers(h)
        before = (n < steps).to(h.dtype)
        # R = 1 − Σ_{n<N} h_n   (Graves eqs. 3-6)
        remainder = 1 - (h * before).sum(0)
        # p_n = h_n for n < N,  p_N = R   (Graves eqs. 3-6)
        p = h * before + (n == steps).to(h.dtype) * remainder
        return PonderOutput(y, halt_logit, steps, p)

    @staticmethod
    def output(out: PonderOutput) -> Tensor:
        # y = Σ_n p_n ŷ_n   (Graves eqs. 7-8)
        return (out.p.unsqueeze(-1) * out.y).sum(0)

    @staticmethod
    def ponder_cost(out: PonderOutput) -> Tensor:
        """``ρ = N + R`` per sample; ``N`` is a constant for the gradient, ``R = p_N``."""
        # ρ = N + R   (Graves eqs. 9-12)
        return out.steps.to(out.p.dtype) + at_last_step(out.p, out.steps)

    def loss(self, out: PonderOutput, target: Tensor, task_loss: TaskLoss) -> tuple[Tensor, dict[str, float]]:
        task = task_loss(self.output(out), target).mean()
        cost = self.ponder_cost(out).mean()
        # L̂ = L(y, ŷ) + τ ρ   (Graves eqs. 9-12)
        loss = task + self.tau * cost
        logs = {
            "loss": loss.item(),
            "reconstruction": task.item(),
            "ponder_cost": cost.item(),
            "expected_steps": (out.p * step_numbers(out.p)).sum(0).mean().item(),
            "computed_steps": out.steps.float().mean().item(),
        }
        return loss, logs

    @torch.no_grad()
    def predict(self, x: Tensor, halting: str = "sample", max_steps: int | None = None, generator=None):
        """ACT halts deterministically; ``halting`` and ``generator`` are accepted and ignored."""
        out = self.forward(x, max_steps)
        return self.output(out), out.steps


# ---------------------------------------------------------------------------------------------
# REINFORCE (MEMO's halting)


class Reinforce(nn.Module):
    """Halting learned by REINFORCE, as in MEMO (Banino et al. 2020, §2.2), the method PonderNet replaced.

    Training: after every step a sample halts with probability ``λₙ`` (a Bernoulli draw, as at
    evaluation) or at ``max_steps``; the answer is the prediction at the halting step ``N`` and
    is trained by backpropagation. The halting decisions are actions of a policy trained by the
    score-function estimator: ``−(R − b) Σ_{n≤N} log π(aₙ)`` with ``aₙ`` = continue for ``n < N``
    and halt at ``N`` (no decision when ``max_steps`` forced the halt), where the reward is
    ``R = −L(y, ŷ_N) − hop_cost · N`` and the baseline ``b`` is the batch mean of ``R``.

    Deviations from MEMO (documented): the reward is the negative task loss rather than MEMO's
    correct/incorrect signal, which fits any task loss; the policy reads the step's own halting
    logit (MEMO's halting network also read the attention weights); no separate value network.
    """

    def __init__(self, step: Step, max_steps: int = 10, hop_cost: float = 0.0):
        super().__init__()
        self.step, self.max_steps, self.hop_cost = step, max_steps, hop_cost

    def forward(self, x: Tensor, max_steps: int | None = None) -> PonderOutput:
        # halt after step n with probability λ_n (a Bernoulli draw per sample and step, MEMO §2.2)
        y, halt_logit, steps = unroll(self.step, x, max_steps or self.max_steps, sampled_stop())
        p = (step_numbers(halt_logit) == steps).to(y.dtype)  # all the mass on the sampled halting step
        return PonderOutput(y, halt_logit, steps, p)

    def loss(self, out: PonderOutput, target: Tensor, task_loss: TaskLoss) -> tuple[Tensor, dict[str, float]]:
        answer_loss = task_loss(at_last_step(out.y, out.steps), target)  # (batch,)
        n = step_numbers(out.halt_logit)
        chose_halt = (n == out.steps) & (out.steps < self.max_steps)
        # log π(a_n): log λ_n for a_N = halt, log(1 − λ_n) for a_n = continue
        log_policy = torch.where(chose_halt, F.logsigmoid(out.halt_logit), F.logsigmoid(-out.halt_logit))
        decided = (n < out.steps) | chose_halt  # a halt forced by max_steps was no decision
        # Σ_{n≤N} log π(a_n): log-probability of the sampled halting step
        log_policy = (log_policy * decided).sum(0)
        # R = −L(y, ŷ_N) − hop_cost · N   (our reward; MEMO §2.2 rewards a correct answer)
        reward = -answer_loss.detach() - self.hop_cost * out.steps.to(answer_loss.dtype)
        # R − b, with the baseline b = the batch mean of R
        advantage = reward - reward.mean()
        # score-function (REINFORCE) loss: −(R − b) Σ_{n≤N} log π(a_n)   (Williams 1992; MEMO §2.2)
        policy_loss = -(advantage * log_policy).mean()
        loss = answer_loss.mean() + policy_loss
        logs = {
            "loss": loss.item(),
            "reconstruction": answer_loss.mean().item(),
            "policy_loss": policy_loss.item(),
            "expected_steps": out.steps.float().mean().item(),
            "computed_steps": out.steps.float().mean().item(),
        }
        return loss, logs

    predict = PonderNet.predict  # the same sampled halting at evaluation (MEMO's policy, PonderNet §2.5)


# ---------------------------------------------------------------------------------------------
# fixed depth


class FixedDepth(nn.Module):
    """No halting: apply the step ``depth`` times and predict from the last step.

    ``depth = 1`` is a plain feed-forward pass of the RNN; ``depth > 1`` repeats the step a fixed
    number of times (the Repeat-RNN of Fojo et al. 2018), which separates *more* computation from
    *adaptive* computation.
    """

    def __init__(self, step: Step, depth: int = 1):
        super().__init__()
        self.step, self.depth = step, depth

    def forward(self, x: Tensor, max_steps: int | None = None) -> PonderOutput:
        y, halt_logit, steps = unroll(self.step, x, self.depth)
        p = (step_numbers(halt_logit) == self.depth).to(y.dtype).expand_as(halt_logit)
        return PonderOutput(y, halt_logit, steps, p)

    def loss(self, out: PonderOutput, target: Tensor, task_loss: TaskLoss) -> tuple[Tensor, dict[str, float]]:
        loss = task_loss(out.y[-1], target).mean()
        return loss, {"loss": loss.item(), "reconstruction": loss.item(), "expected_steps": float(self.depth)}

    @torch.no_grad()
    def predict(self, x: Tensor, halting: str = "sample", max_steps: int | None = None, generator=None):
        out = self.forward(x)
        return out.y[-1], out.steps

"""Offline RL from a fixed dataset, discrete actions: behaviour cloning and its filtered and
return-conditioned variants, the AlphaStar Unplugged recipe (a behaviour value and an improved
policy anchored to the BC policy), and implicit Q-learning as an established reference.

Every agent is one ``nn.Module`` whose ``forward(batch)`` returns ``(loss, logs)`` for the one
training loop, and whose ``act(observations, generator, mode)`` plays in the environment.

- :class:`BehaviourCloning`: maximum likelihood of the data's actions. Filtered BC is the same
  model on the top episodes (CORL's "10 %-BC"); return-conditioned BC adds the episode's return
  quantile to the input and is asked for the top quantile when it plays (AlphaStar's MMR
  conditioning, Vinyals et al. 2019; Mathieu et al. 2023 §4).
- :class:`AnchoredActorCritic`: AlphaStar Unplugged's best recipe (Mathieu et al. 2023, §5: "first
  train a model to estimate the behaviour policy and behaviour value function; then use the
  behaviour value function to improve the policy, either while training or during inference").
  Phase 1 fits π_BC and Q^β; phase 2 starts π from π_BC and improves it with advantage-weighted
  likelihood (AWR, Peng et al. 2019, eq. 7; or, by flag, its all-action form or a policy gradient)
  plus β·KL(π_BC ‖ π), the distillation term AlphaStar
  keeps towards its supervised policy (Vinyals et al. 2019, Methods). ``mode="inference"`` is the
  inference-time improvement: greedy on Q^β among the actions π_BC gives at least ``threshold``.
- :class:`ImplicitQLearning`: IQL (Kostrikov et al. 2022), discrete: expectile regression of V on
  Q (eq. 5), Q regressed on r + γV(s') (eq. 6), the policy extracted by AWR (eq. 7).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EXTRACTIONS = ("sampled", "all-actions", "policy-gradient")


def mlp(inputs: int, outputs: int, hidden: int, layers: int) -> nn.Sequential:
    sizes = [inputs] + [hidden] * layers
    blocks = [m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
    return nn.Sequential(*blocks, nn.Linear(sizes[-1], outputs))


# --------------------------------------------------------------------------------------------
# the pieces every agent shares, each checked against a hand computation in the tests


def pick(values: Tensor, actions: Tensor) -> Tensor:
    """values (B, A), actions (B,) -> (B,) the value of each taken action."""
    return values.gather(1, actions[:, None])[:, 0]


def kl_to_anchor(anchor_logits: Tensor, logits: Tensor) -> Tensor:
    """(B,) KL(π_anchor ‖ π) = Σ_a π_anchor(a) (log π_anchor(a) − log π(a)), per state; the anchor
    is held fixed (no gradient reaches it)."""
    anchor_log = F.log_softmax(anchor_logits.detach(), -1)
    return (anchor_log.exp() * (anchor_log - F.log_softmax(logits, -1))).sum(-1)


def entropy(logits: Tensor) -> Tensor:
    """(B,) the policy's entropy in nats."""
    log_p = F.log_softmax(logits, -1)
    return -(log_p.exp() * log_p).sum(-1)


def behaviour_advantages(q: Tensor, anchor_logits: Tensor, actions: Tensor, normalise: bool = False) -> Tensor:
    """(B, A) A^β(s, a) = Q^β(s, a) − V^β(s), V^β(s) = Σ_a π_BC(a|s) Q^β(s, a), without gradient.
    With ``normalise``, divided by the standard deviation of the data actions' advantages over the
    batch, so that one temperature suits environments whose values differ in scale (a CartPole
    advantage is ≈ 100× smaller than a LunarLander one)."""
    q, anchor_logits = q.detach(), anchor_logits.detach()
    advantages = q - (anchor_logits.softmax(-1) * q).sum(-1, keepdim=True)
    if normalise:
        advantages = advantages / (pick(advantages, actions).std() + 1e-6)
    return advantages


def advantage_weights(advantages: Tensor, temperature: float, max_weight: float) -> Tensor:
    """AWR's weights exp(A / temperature), clipped at ``max_weight`` (Peng et al. 2019 eq. 7; IQL
    clips at 100), without gradient."""
    return torch.exp(advantages.detach() / temperature).clamp(max=max_weight)


def improved_policy(anchor_logits: Tensor, advantages: Tensor, temperature: float) -> Tensor:
    """(B, A) π*(a|s) ∝ π_BC(a|s) exp(A(s, a) / temperature), the maximiser of
    E_π[A] − temperature·KL(π ‖ π_BC) (AWR's target, Peng et al. 2019, eq. 4; MPO's non-parametric
    policy, Abdolmaleki et al. 2018), exact over the discrete actions, without gradient."""
    return (F.log_softmax(anchor_logits.detach(), -1) + advantages.detach() / temperature).softmax(-1)


def expected_advantage(logits: Tensor, advantages: Tensor) -> Tensor:
    """(B,) Σ_a π(a|s) A(s, a); its gradient is the all-action policy gradient (advantages held fixed)."""
    return (logits.softmax(-1) * advantages.detach()).sum(-1)


def expectile_loss(differences: Tensor, expectile: float) -> Tensor:
    """IQL's L₂^τ(u) = |τ − 1(u < 0)| u², u = Q − V (Kostrikov et al. 2022, eq. 5), mean over the batch."""
    weight = torch.where(differences < 0, 1 - expectile, expectile)
    return (weight * differences.pow(2)).mean()


def polyak(target: nn.Module, source: nn.Module, rate: float) -> None:
    """target ← (1 − rate)·target + rate·source (the slow target network of Q-learning)."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.lerp_(s, rate)


def sample_or_argmax(logits: Tensor, generator: torch.Generator | None, greedy: bool) -> Tensor:
    if greedy:
        return logits.argmax(-1)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


# --------------------------------------------------------------------------------------------
# agents


class BehaviourCloning(nn.Module):
    """π(a | s) (or π(a | s, q) with ``conditioned``: q the episode's return quantile, asked for
    ``target_quantile`` when playing) trained by maximum likelihood of the data's actions."""

    def __init__(self, observations: int, actions: int, hidden: int = 256, layers: int = 2, conditioned: bool = False,
                 target_quantile: float = 1.0):  # fmt: skip
        super().__init__()
        self.conditioned, self.target_quantile = conditioned, target_quantile
        self.policy = mlp(observations + conditioned, actions, hidden, layers)

    def logits(self, observations: Tensor, quantiles: Tensor | None = None) -> Tensor:
        if self.conditioned:
            if quantiles is None:
                quantiles = torch.full((len(observations),), self.target_quantile)
            observations = torch.cat([observations, quantiles[:, None]], -1)
        return self.policy(observations)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        logits = self.logits(batch["observations"], batch["quantiles"])
        loss = F.cross_entropy(logits, batch["actions"])
        return loss, {"loss": loss.item(), "entropy": entropy(logits).mean().item()}

    @torch.no_grad()
    def act(self, observations: Tensor, generator: torch.Generator | None = None, mode: str = "policy",
            greedy: bool = False) -> Tensor:  # fmt: skip
        return sample_or_argmax(self.logits(observations), generator, greedy)


class AnchoredActorCritic(nn.Module):
    """AlphaStar Unplugged's recipe on a BC backbone (see the module docstring).

    ``pretrain_steps`` updates fit π_BC (likelihood) and Q^β (expected SARSA under π_BC: the value
    of the behaviour policy, whose actions π_BC models); then one policy per β in ``betas`` starts
    as a copy of π_BC and minimises an improvement term on A^β = Q^β(s, a) − V^β(s),
    V^β(s) = Σ_a π_BC(a|s) Q^β(s, a), plus β·KL(π_BC ‖ π), while Q^β goes on fitting. The
    improvement term is ``extraction`` (:meth:`improvement_loss`): AWR at the data's action
    (``sampled``, the default), its exact expectation over every action (``all-actions``) or the
    all-action policy gradient (``policy-gradient``).
    β = 0 is the policy without an anchor. The policies share π_BC and Q^β, so they differ by β
    alone. The update count is a buffer, so a resumed run switches phase where an uninterrupted
    one would."""

    def __init__(self, observations: int, actions: int, *, hidden: int = 256, layers: int = 2, gamma: float = 0.99,
                 polyak_rate: float = 0.005, temperature: float = 1 / 3, max_weight: float = 100.0,
                 betas: tuple[float, ...] = (0.0, 0.1), pretrain_steps: int = 1000, threshold: float = 0.1,
                 reward_scale: float = 1.0, normalise: bool = True, extraction: str = "sampled"):  # fmt: skip
        super().__init__()
        if extraction not in EXTRACTIONS:
            raise ValueError(f"extraction {extraction!r}: one of {', '.join(EXTRACTIONS)}")
        self.normalise, self.extraction = normalise, extraction
        self.gamma, self.polyak_rate, self.temperature, self.max_weight = gamma, polyak_rate, temperature, max_weight
        self.betas, self.pretrain_steps, self.threshold = tuple(betas), pretrain_steps, threshold
        self.reward_scale = reward_scale
        self.anchor = mlp(observations, actions, hidden, layers)  # π_BC
        self.q = mlp(observations, actions, hidden, layers)  # Q^β
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        # one π per β, each a copy of π_BC from phase 2 on
        self.policies = nn.ModuleList(mlp(observations, actions, hidden, layers) for _ in self.betas)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @property
    def modes(self) -> list[str]:
        """What :meth:`act` can play: each policy (``beta<β>``), ``inference`` and ``anchor``."""
        return [f"beta{beta:g}" for beta in self.betas] + ["inference", "anchor"]

    def behaviour_value_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Expected SARSA under π_BC: Q^β(s, a) ← r + γ (1 − terminal) Σ_a' π_BC(a'|s') Q̄^β(s', a')."""
        with torch.no_grad():
            next_probs = self.anchor(batch["next_observations"]).softmax(-1)
            next_value = (next_probs * self.q_target(batch["next_observations"])).sum(-1)
            target = self.reward_scale * batch["rewards"] + self.gamma * (1 - batch["terminals"]) * next_value
        return F.mse_loss(pick(self.q(batch["observations"]), batch["actions"]), target)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        self.updates += 1
        obs, actions = batch["observations"], batch["actions"]
        loss = self.behaviour_value_loss(batch)
        logs = {"value_loss": loss.item()}
        if self.updates <= self.pretrain_steps:
            anchor_logits = self.anchor(obs)
            bc_loss = F.cross_entropy(anchor_logits, actions)
            loss = loss + bc_loss
            logs |= {"bc_loss": bc_loss.item(), "entropy/anchor": entropy(anchor_logits).mean().item()}
        else:
            if self.updates == self.pretrain_steps + 1:
                for policy in self.policies:
                    policy.load_state_dict(self.anchor.state_dict())
            with torch.no_grad():
                anchor_logits = self.anchor(obs)
                advantages = behaviour_advantages(self.q_target(obs), anchor_logits, actions, self.normalise)
            for beta, policy in zip(self.betas, self.policies):
                logits = policy(obs)
                policy_loss = self.improvement_loss(logits, actions, anchor_logits, advantages)
                kl = kl_to_anchor(anchor_logits, logits).mean()
                loss = loss + policy_loss + beta * kl
                logs |= {f"policy_loss/beta{beta:g}": policy_loss.item(), f"kl_to_bc/beta{beta:g}": kl.item()}
                logs[f"entropy/beta{beta:g}"] = entropy(logits).mean().item()
        polyak(self.q_target, self.q, self.polyak_rate)
        logs["loss"] = loss.item()
        return loss, logs

    def improvement_loss(self, logits: Tensor, actions: Tensor, anchor_logits: Tensor, advantages: Tensor) -> Tensor:
        """The policy-improvement term, by ``extraction`` (advantages (B, A) from Q^β and π_BC):

        - ``sampled``: AWR at the data's action, −exp(A(s, a)/temperature)·log π(a|s), clipped
          (Peng et al. 2019, eq. 7): the improvement stays on the data's actions;
        - ``all-actions``: cross-entropy to π*(·|s) ∝ π_BC(·|s) exp(A(s, ·)/temperature) over every
          action, the exact expectation of the sampled form over a ~ π_BC, per state normalised;
        - ``policy-gradient``: −Σ_a π(a|s) A(s, a), the expected (all-action) policy gradient of a
          one-step improvement on the behaviour value (Ciosek & Whiteson 2018; AlphaStar
          Unplugged's OAC is a policy gradient on V^β). Its optimum without the KL is the greedy
          action of Q^β, so β alone keeps it near the data."""
        if self.extraction == "sampled":
            weights = advantage_weights(pick(advantages, actions), self.temperature, self.max_weight)
            return -(weights * pick(F.log_softmax(logits, -1), actions)).mean()
        if self.extraction == "all-actions":
            targets = improved_policy(anchor_logits, advantages, self.temperature)
            return -(targets * F.log_softmax(logits, -1)).sum(-1).mean()
        return -expected_advantage(logits, advantages).mean()

    @torch.no_grad()
    def act(self, observations: Tensor, generator: torch.Generator | None = None, mode: str = "beta0.1",
            greedy: bool = False) -> Tensor:  # fmt: skip
        """``beta<β>``: the policy improved with that β; ``anchor``: π_BC; ``inference``: argmax Q^β
        over the actions with π_BC(a|s) ≥ ``threshold`` (the most likely one always qualifies)."""
        if mode not in self.modes:
            raise ValueError(f"mode {mode!r}: one of {', '.join(self.modes)}")
        if mode == "inference":
            probs = self.anchor(observations).softmax(-1)
            allowed = (probs >= self.threshold) | (probs == probs.max(-1, keepdim=True).values)
            return self.q(observations).masked_fill(~allowed, float("-inf")).argmax(-1)
        network = self.anchor if mode == "anchor" else self.policies[self.modes.index(mode)]
        return sample_or_argmax(network(observations), generator, greedy)


class ImplicitQLearning(nn.Module):
    """IQL (Kostrikov et al. 2022) for discrete actions, all three losses from the first step:
    V by expectile regression on Q̄(s, a) (eq. 5), Q on r + γ (1 − terminal) V(s') (eq. 6), and π by
    AWR with weights exp(β_IQL (Q̄(s, a) − V(s))) clipped at 100 (eq. 7; ``temperature`` = 1/β_IQL)."""

    def __init__(self, observations: int, actions: int, *, hidden: int = 256, layers: int = 2, gamma: float = 0.99,
                 polyak_rate: float = 0.005, temperature: float = 1 / 3, max_weight: float = 100.0,
                 expectile: float = 0.7, reward_scale: float = 1.0):  # fmt: skip
        super().__init__()
        self.gamma, self.polyak_rate, self.temperature, self.max_weight = gamma, polyak_rate, temperature, max_weight
        self.expectile, self.reward_scale = expectile, reward_scale
        self.q = mlp(observations, actions, hidden, layers)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.v = mlp(observations, 1, hidden, layers)
        self.policy = mlp(observations, actions, hidden, layers)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        obs, actions = batch["observations"], batch["actions"]
        with torch.no_grad():
            q_target = pick(self.q_target(obs), actions)
            next_v = self.v(batch["next_observations"])[:, 0]
            td_target = self.reward_scale * batch["rewards"] + self.gamma * (1 - batch["terminals"]) * next_v
        v = self.v(obs)[:, 0]
        value_loss = expectile_loss(q_target - v, self.expectile)
        q_loss = F.mse_loss(pick(self.q(obs), actions), td_target)
        logits = self.policy(obs)
        weights = advantage_weights(q_target - v, self.temperature, self.max_weight)
        policy_loss = -(weights * pick(F.log_softmax(logits, -1), actions)).mean()
        loss = value_loss + q_loss + policy_loss
        polyak(self.q_target, self.q, self.polyak_rate)
        logs = {"loss": loss.item(), "value_loss": value_loss.item(), "q_loss": q_loss.item()}
        logs |= {"policy_loss": policy_loss.item(), "entropy": entropy(logits).mean().item()}
        return loss, logs

    @torch.no_grad()
    def act(self, observations: Tensor, generator: torch.Generator | None = None, mode: str = "policy",
            greedy: bool = False) -> Tensor:  # fmt: skip
        return sample_or_argmax(self.policy(observations), generator, greedy)

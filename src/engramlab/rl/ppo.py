"""PPO with a recurrent core, as a stepper of the one loop (:mod:`engramlab.engine.loop`).

Proximal policy optimisation (Schulman et al. 2017, Alg. 1; clipped objective, Eq. 7; GAE,
Schulman et al. 2016, Eq. 16) in the pattern of CleanRL's ``ppo_atari_lstm``: a batch of
environments, rollouts of ``rollout`` steps, then ``epochs`` passes over minibatches of whole
environments, each replayed from the recurrent state it started with (back-propagation through the
whole rollout). One step of the loop is one update: a rollout and its epochs.

The agent is any module with ``initial_state(n)``, ``step(frames, first, state)``,
``unroll(frames, first, state)`` and ``auxiliary_loss(embedding, first)``
(:class:`engramlab.models.coberl.ActorCritic`). Every agent gets the same updates per sample
(``epochs × minibatches`` gradient steps per rollout, Kielak et al. 2020's caution): an auxiliary
loss rides on the same gradient steps, never on extra ones.

Resume is exact: the checkpoint holds the weights, Adam's state, the random stream, every game's
state (:meth:`engramlab.rl.minatar.MinAtarBatch.state`) and what the next rollout starts from (the
last frame, the episode-start flags and the recurrent state).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from engramlab.config import Config
from engramlab.engine.checkpoint import Checkpoint
from engramlab.engine.loop import NonFinite, Stepper


class PPOConfig(Config):
    frames: int = Field(
        500_000, ge=1, description="environment frames of the whole run (updates = frames / (envs·rollout))"
    )
    envs: int = Field(16, ge=1, description="environments stepped together")
    rollout: int = Field(128, ge=2, description="steps per environment per update (the back-propagation length)")
    epochs: int = Field(4, ge=1, description="passes over each rollout")
    minibatches: int = Field(4, ge=1, description="minibatches per pass, each a subset of whole environments")
    lr: float = Field(5e-4, gt=0, description="Adam's learning rate (eps 1e-5), annealed linearly to 0 if anneal")
    anneal: bool = Field(True, description="anneal the learning rate linearly to 0 over the run")
    gamma: float = Field(0.99, gt=0, le=1, description="discount")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="GAE's lambda")
    clip: float = Field(0.2, gt=0, description="PPO's ratio clip epsilon")
    entropy: float = Field(0.01, ge=0, description="entropy bonus weight")
    value: float = Field(0.5, ge=0, description="value loss weight")
    max_grad_norm: float = Field(0.5, gt=0, description="clip the global gradient norm to this")
    log_every: int = Field(5, ge=1, description="write training metrics every this many updates")
    checkpoint_every: int = Field(20, ge=1, description="write a checkpoint every this many updates")

    @property
    def updates(self) -> int:
        return max(1, self.frames // (self.envs * self.rollout))

    @model_validator(mode="after")
    def _check(self):
        if self.envs % self.minibatches:
            raise ValueError(f"ppo.envs ({self.envs}) must be a multiple of ppo.minibatches ({self.minibatches})")
        if self.checkpoint_every % self.log_every:
            raise ValueError(
                f"ppo.checkpoint_every ({self.checkpoint_every}) must be a multiple of ppo.log_every ({self.log_every})"
            )
        return self


def gae(rewards: Tensor, values: Tensor, first: Tensor, next_value: Tensor, next_first: Tensor, gamma: float,
        lam: float) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Generalised advantage estimation (Schulman et al. 2016, Eq. 16) over (N, T) rollouts.
    ``first[:, t]`` marks a frame that starts an episode: the step before it ended one, so nothing is
    bootstrapped across. Returns (advantages, returns = advantages + values)."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(next_value)
    length = rewards.shape[1]
    for t in reversed(range(length)):
        after_first, after_value = (next_first, next_value) if t == length - 1 else (first[:, t + 1], values[:, t + 1])
        nonterminal = (~after_first).to(rewards.dtype)
        delta = rewards[:, t] + gamma * after_value * nonterminal - values[:, t]
        running = delta + gamma * lam * nonterminal * running
        advantages[:, t] = running
    return advantages, advantages + values


def ppo_terms(model: nn.Module, mb: dict[str, Tensor], state: dict[str, Tensor], cfg: PPOConfig):
    """The terms of PPO's loss on a minibatch of whole rollouts replayed from ``state``: the clipped
    policy objective (Schulman et al. 2017, Eq. 7), the value loss, the entropy (Eq. 9) and the
    agent's auxiliary loss (already weighted) -> (terms, logs)."""
    logits, values, _, embedding = model.unroll(mb["frames"], mb["first"], state)
    dist = torch.distributions.Categorical(logits=logits)
    log_ratio = dist.log_prob(mb["actions"]) - mb["log_probs"]
    ratio = log_ratio.exp()
    advantages = mb["advantages"]
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    terms = {
        "policy": torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean(),
        "value": 0.5 * (values - mb["returns"]).pow(2).mean(),
        "entropy": dist.entropy().mean(),
    }
    terms["auxiliary"], aux_logs = model.auxiliary_loss(embedding, mb["first"])
    with torch.no_grad():
        logs = {f"{k}_loss" if k in ("policy", "value", "auxiliary") else k: v.item() for k, v in terms.items()}
        logs |= {"approx_kl": ((ratio - 1) - log_ratio).mean().item(),
                 "clip_fraction": ((ratio - 1).abs() > cfg.clip).float().mean().item(),
                 **{f"aux_{k}": v for k, v in aux_logs.items()}}  # fmt: skip
    return terms, logs


class PPOStepper(Stepper):
    unit = "updates"

    def __init__(self, model: nn.Module, envs, cfg: PPOConfig, *, seed: int):
        torch.manual_seed(seed)  # action sampling, minibatch order, CoBERL's masks: one stream, checkpointed
        self.model, self.envs, self.cfg = model, envs, cfg
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5)
        self.frames = envs.observation()
        self.first = torch.ones(envs.n, dtype=torch.bool)
        self.carry = model.initial_state(envs.n)
        self.sums: dict[str, float] = defaultdict(float)
        self.returns: list[float] = []
        self.gradient_steps = 0
        self.lr = cfg.lr
        model.train()

    # --- one update ------------------------------------------------------------------------
    def step(self, n: int) -> None:
        cfg = self.cfg
        self.lr = cfg.lr * (1 - (n - 1) / cfg.updates) if cfg.anneal else cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        batch = self.collect()
        self.record(n)
        for _ in range(cfg.epochs):
            for envs in torch.randperm(self.envs.n).chunk(cfg.minibatches):
                self.learn({k: v[envs] for k, v in batch.items() if k != "state"},
                           {k: v[envs] for k, v in batch["state"].items()})  # fmt: skip

    @torch.no_grad()
    def collect(self) -> dict:
        """One rollout of ``cfg.rollout`` steps of every environment, with advantages and returns."""
        start_state = self.carry
        frames, first, actions, log_probs, values, rewards = [], [], [], [], [], []
        for _ in range(self.cfg.rollout):
            logits, value, self.carry = self.model.step(self.frames, self.first, self.carry)
            dist = torch.distributions.Categorical(logits=logits)
            action = dist.sample()
            frames.append(self.frames)
            first.append(self.first)
            actions.append(action)
            log_probs.append(dist.log_prob(action))
            values.append(value)
            self.frames, reward, self.first = self.envs.step(action)
            rewards.append(reward)
        _, next_value, _ = self.model.step(self.frames, self.first, self.carry)
        stack = lambda xs: torch.stack(xs, dim=1)  # (N, T, ...)
        batch = {"frames": stack(frames), "first": stack(first), "actions": stack(actions),
                 "log_probs": stack(log_probs), "values": stack(values), "state": start_state}  # fmt: skip
        batch["advantages"], batch["returns"] = gae(stack(rewards), batch["values"], batch["first"], next_value,
                                                    self.first, self.cfg.gamma, self.cfg.gae_lambda)  # fmt: skip
        return batch

    def learn(self, mb: dict[str, Tensor], state: dict[str, Tensor]) -> None:
        """One gradient step of :func:`ppo_terms` on a minibatch of whole rollouts."""
        cfg = self.cfg
        terms, logs = ppo_terms(self.model, mb, state, cfg)
        loss = terms["policy"] + cfg.value * terms["value"] - cfg.entropy * terms["entropy"] + terms["auxiliary"]
        if not torch.isfinite(loss):
            raise NonFinite(f"loss is {loss.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        if not torch.isfinite(grad_norm):
            raise NonFinite(f"gradient norm is {grad_norm.item()}")
        self.optimizer.step()
        self.gradient_steps += 1
        for key, value in logs.items():
            self.sums[key] += value

    def record(self, n: int) -> None:
        """The update's row of the model's learning curve: frames so far, episodes ended, their
        summed return."""
        episodes = self.envs.episodes
        self.model.learning_curve[n - 1] = torch.tensor(
            [n * self.envs.n * self.cfg.rollout, len(episodes.returns), sum(episodes.returns)], dtype=torch.float64
        )
        self.returns.extend(episodes.returns)
        episodes.clear()

    # --- the loop's interface -----------------------------------------------------------------
    def window(self, n: int, steps: int, seconds: float) -> dict[str, float]:
        metrics = {f"train/{k}": v / max(1, self.gradient_steps) for k, v in self.sums.items()}
        if self.returns:
            metrics["train/episode_return"] = float(np.mean(self.returns))
            metrics["train/episodes"] = float(len(self.returns))
        metrics["train/frames"] = float(n * self.envs.n * self.cfg.rollout)
        metrics["train/lr"] = self.lr
        metrics["time/frames_per_s"] = steps * self.envs.n * self.cfg.rollout / max(seconds, 1e-9)
        self.sums.clear()
        self.returns.clear()
        self.gradient_steps = 0
        return metrics

    def state(self) -> Checkpoint:
        rng = {"torch": torch.get_rng_state(), "envs": self.envs.state(), "carry/frames": self.frames,
               "carry/first": self.first, **{f"carry/state/{k}": v for k, v in self.carry.items()}}  # fmt: skip
        return Checkpoint(0, self.model.state_dict(), self.optimizer.state_dict(), rng)

    def restore(self, ckpt: Checkpoint) -> None:
        self.model.load_state_dict(ckpt.model)
        self.optimizer.load_state_dict(ckpt.optimizer)
        torch.set_rng_state(ckpt.rng["torch"])
        self.envs.load_state(ckpt.rng["envs"])
        self.frames, self.first = ckpt.rng["carry/frames"], ckpt.rng["carry/first"]
        self.carry = {k.removeprefix("carry/state/"): v for k, v in ckpt.rng.items() if k.startswith("carry/state/")}

    def postfix(self, metrics: dict[str, float], monitor_metrics: dict[str, float]) -> dict[str, str]:
        if "train/episode_return" in metrics:
            return {"return": f"{metrics['train/episode_return']:.2f}"}
        return {}


@torch.no_grad()
def play(model: nn.Module, envs, episodes: int) -> list[float]:
    """The returns of the first ``episodes / envs.n`` episodes of each environment, acting as
    trained (actions sampled from the policy); the one evaluation path."""
    per_env = -(-episodes // envs.n)
    frames, first, state = envs.observation(), torch.ones(envs.n, dtype=torch.bool), model.initial_state(envs.n)
    envs.episodes.clear()
    while min(np.bincount(envs.episodes.envs, minlength=envs.n)) < per_env:
        logits, _, state = model.step(frames, first, state)
        frames, _, first = envs.step(torch.distributions.Categorical(logits=logits).sample())
    ended = envs.episodes
    returns = [[r for r, e in zip(ended.returns, ended.envs) if e == i][:per_env] for i in range(envs.n)]
    return [r for env in returns for r in env][:episodes]

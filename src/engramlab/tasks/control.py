"""Control tasks for the generalist: gymnasium classic control, LunarLander and BabyAI levels, each
with a free expert, turned into Gato's tokens (:mod:`engramlab.tasks.gato_tokens`).

Experts (``../shared/reference/gato.md``; scores measured by :func:`generate` and stored beside
the episodes): hand-coded controllers for CartPole (a linear rule on the pole's angle and the
cart), Acrobot (torque = the sign of the second joint's velocity), MountainCar and
MountainCarContinuous (push along the velocity), Pendulum (energy pumping, then a PD controller
near the top); gymnasium's own ``heuristic`` for LunarLander; minigrid's ``BabyAIBot`` for the
BabyAI levels.

Observations as tokens: vectors of floats as μ-law continuous ids, one per value. BabyAI's
symbolic 7 × 7 × 3 view is 49 discrete ids, each cell's (object, colour, state) as one integer
(``object + 11 colour + 66 state`` < 198), then the agent's direction: 50 tokens instead of the
148 of a row-major flattening, so that several timesteps fit a 256-token context (documented
deviation). The mission string is text, given once before the timesteps of an episode.
Actions: a discrete action is one discrete id; a continuous one is one continuous id per
dimension, scaled from the action space's bounds (:func:`gato_tokens.continuous_ids`).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from engramlab.errors import DataError
from engramlab.tasks import gato_tokens as tok

# --------------------------------------------------------------------------------------------
# experts: (observation, env) -> action, as gymnasium expects it


def cartpole_expert(obs: np.ndarray, env) -> int:
    x, x_dot, theta, theta_dot = obs
    return int(theta + 0.5 * theta_dot + 0.05 * x + 0.2 * x_dot > 0)


def acrobot_expert(obs: np.ndarray, env) -> int:
    return 2 if obs[5] > 0 else 0  # torque +1 / −1 along the second joint's velocity


def mountain_car_expert(obs: np.ndarray, env) -> int:
    return 2 if obs[1] >= 0 else 0  # push along the velocity: swing up, then out


def mountain_car_continuous_expert(obs: np.ndarray, env) -> np.ndarray:
    return np.array([1.0 if obs[1] >= 0 else -1.0], dtype=np.float32)


def pendulum_expert(obs: np.ndarray, env) -> np.ndarray:
    cos, sin, speed = obs
    angle = np.arctan2(sin, cos)
    if cos > 0.85:  # near the top: a PD controller holds it
        torque = -(10 * angle + 2 * speed)
    else:  # pump energy: push along the swing while below the top's energy
        energy = 0.5 * speed**2 + 10 * (cos - 1)
        torque = 2.0 * np.sign(-speed * energy) if speed else 1.0
    return np.array([np.clip(torque, -2, 2)], dtype=np.float32)


def lunar_lander_expert(obs: np.ndarray, env) -> int:
    from gymnasium.envs.box2d.lunar_lander import heuristic

    return int(heuristic(env.unwrapped, obs))


class BabyAIExpert:
    """minigrid's ``BabyAIBot``, made afresh at every reset (it plans from the full grid)."""

    def __init__(self):
        self.bot, self.env = None, None

    def reset(self, env) -> None:
        from minigrid.utils.baby_ai_bot import BabyAIBot

        self.bot = BabyAIBot(env.unwrapped)

    def __call__(self, obs: Any, env) -> int:
        return int(self.bot.replan())


# --------------------------------------------------------------------------------------------
# tasks


@dataclass(frozen=True)
class ControlTask:
    name: str
    env_id: str
    expert: Callable[[], Callable]  # a factory, so a stateful expert starts fresh per episode
    babyai: bool = False

    def make(self, render_mode: str | None = None):
        import gymnasium as gym

        if self.babyai:
            import minigrid  # noqa: F401  registers the BabyAI levels

        return gym.make(self.env_id, render_mode=render_mode)


def _stateless(policy: Callable) -> Callable[[], Callable]:
    return lambda: policy


TASKS: dict[str, ControlTask] = {
    t.name: t
    for t in [
        ControlTask("cartpole", "CartPole-v1", _stateless(cartpole_expert)),
        ControlTask("acrobot", "Acrobot-v1", _stateless(acrobot_expert)),
        ControlTask("mountaincar", "MountainCar-v0", _stateless(mountain_car_expert)),
        ControlTask("mountaincar-continuous", "MountainCarContinuous-v0", _stateless(mountain_car_continuous_expert)),
        ControlTask("pendulum", "Pendulum-v1", _stateless(pendulum_expert)),
        ControlTask("lunarlander", "LunarLander-v3", _stateless(lunar_lander_expert)),
        *[
            ControlTask(f"babyai-{level.lower()}", f"BabyAI-{level}-v0", BabyAIExpert, babyai=True)
            for level in [
                *["GoToRedBallGrey", "GoToRedBall", "GoToObj", "GoToLocal", "PickupLoc", "GoToDoor", "OpenDoor"],
                *["GoToRedBlueBall", "OpenRedDoor"],  # kept for transfer: close kin of trained levels
            ]
        ],
    ]
}


def get_task(name: str) -> ControlTask:
    if name not in TASKS:
        raise ValueError(f"unknown control task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


# --------------------------------------------------------------------------------------------
# observations and actions as tokens

BABYAI_CELLS = 7 * 7


def flat_observation(task: ControlTask, obs: Any) -> np.ndarray:
    """One observation as a flat array: the float vector, or BabyAI's 49 cell codes and direction."""
    if not task.babyai:
        return np.asarray(obs, dtype=np.float32)
    image = obs["image"].astype(np.int64)
    cells = image[..., 0] + 11 * image[..., 1] + 66 * image[..., 2]
    return np.concatenate([cells.reshape(-1), [obs["direction"]]]).astype(np.float32)


def observation_ids(task: ControlTask, observations: Tensor) -> Tensor:
    """Flat observations (S, n) -> ids (S, n): discrete for BabyAI, μ-law continuous otherwise."""
    if task.babyai:
        return tok.discrete_ids(observations.long())
    return tok.continuous_ids(observations)


@dataclass(frozen=True)
class ActionSpace:
    """What the tokens of an action must decode to: ``n`` choices, or ``dims`` floats in [low, high]."""

    n: int = 0
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    @property
    def continuous(self) -> bool:
        return not self.n

    @property
    def tokens(self) -> int:
        return len(self.low) if self.continuous else 1

    def legal_ids(self) -> tuple[int, int]:
        """[first, last) ids an action token may take; a model's choice is restricted to it."""
        return (tok.CONTINUOUS, tok.CONTINUOUS + tok.BINS) if self.continuous else (tok.DISCRETE, tok.DISCRETE + self.n)

    def ids(self, actions: Tensor) -> Tensor:
        """Actions (S, dims) -> ids (S, tokens)."""
        if self.continuous:
            return tok.continuous_ids(actions, torch.tensor(self.low), torch.tensor(self.high))
        return tok.discrete_ids(actions.long().reshape(-1, 1))

    def decode(self, ids: Tensor) -> np.ndarray | int:
        """One action's ids (tokens,) -> the action gymnasium takes, always inside the space."""
        if self.continuous:
            low, high = torch.tensor(self.low), torch.tensor(self.high)
            return tok.continuous_values(ids, low, high).clamp(low, high).numpy().astype(np.float32)
        value = int(tok.discrete_values(ids)[0])
        if not 0 <= value < self.n:
            raise ValueError(f"action {value} outside the {self.n} legal actions")
        return value


def action_space(env) -> ActionSpace:
    space = env.action_space
    if hasattr(space, "n"):
        return ActionSpace(n=int(space.n))
    return ActionSpace(low=tuple(float(v) for v in space.low), high=tuple(float(v) for v in space.high))


def mission_of(task: ControlTask, obs: Any) -> str:
    return obs["mission"] if task.babyai else ""


# --------------------------------------------------------------------------------------------
# episodes: generated by the experts, cached as .npz with their scores


@dataclass
class Episodes:
    """All episodes of one task end to end: ``observations`` (N, n_obs) flat, ``actions`` (N, dims),
    ``starts`` (E + 1,) offsets of each episode, ``returns`` (E,), ``missions`` (E,) texts."""

    observations: np.ndarray
    actions: np.ndarray
    starts: np.ndarray
    returns: np.ndarray
    missions: list[str]

    def __len__(self) -> int:
        return len(self.returns)

    def select(self, keep: np.ndarray) -> Episodes:
        """The episodes whose index is in ``keep`` (a boolean mask or indices), in order."""
        index = np.arange(len(self))[keep]
        spans = [np.arange(self.starts[e], self.starts[e + 1]) for e in index]
        rows = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)
        lengths = np.array([len(s) for s in spans], dtype=np.int64)
        return Episodes(
            self.observations[rows],
            self.actions[rows],
            np.concatenate([[0], np.cumsum(lengths)]),
            self.returns[index],
            [self.missions[e] for e in index],
        )


def reset_quietly(env, seed: int):
    """``env.reset(seed=seed)`` without minigrid's prints (it prints every rejected level sample)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return env.reset(seed=seed)


def rollout(task: ControlTask, policy_factory: Callable[[], Callable], episodes: int, seed: int) -> Episodes:
    """Run ``episodes`` episodes (env seeds ``seed``, ``seed + 1``, …) and record them."""
    env = task.make()
    env.action_space.seed(seed)
    observations, actions, lengths, returns, missions = [], [], [], [], []
    for episode in range(episodes):
        obs, _ = reset_quietly(env, seed + episode)
        policy = policy_factory()
        if hasattr(policy, "reset"):
            policy.reset(env)
        missions.append(mission_of(task, obs))
        total, steps, done = 0.0, 0, False
        while not done:
            action = policy(obs, env)
            observations.append(flat_observation(task, obs))
            actions.append(np.atleast_1d(np.asarray(action, dtype=np.float32)))
            obs, reward, terminated, truncated, _ = env.step(action)
            total, steps, done = total + float(reward), steps + 1, terminated or truncated
        lengths.append(steps)
        returns.append(total)
    env.close()
    return Episodes(
        np.stack(observations),
        np.stack(actions),
        np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        np.array(returns, dtype=np.float64),
        missions,
    )


def random_policy() -> Callable:
    return lambda obs, env: env.action_space.sample()


@dataclass
class TaskData:
    """A task's expert episodes (only those ≥ ``keep_fraction`` of the expert score) and its scores."""

    task: ControlTask
    episodes: Episodes
    expert_score: float
    random_score: float
    generated: int

    def normalised(self, returns: np.ndarray | float) -> np.ndarray | float:
        """Gato's normalised score: 0 = the random policy, 1 = the expert (§4.1)."""
        return (np.asarray(returns) - self.random_score) / (self.expert_score - self.random_score)


def generate(task: ControlTask, episodes: int, seed: int, random_episodes: int = 50, keep_fraction: float = 0.8):
    """Expert and random rollouts; the expert's episodes scoring ≥ ``keep_fraction`` of its mean
    (normalised between random and expert) are kept, as Gato keeps episodes ≥ 80 % (§3)."""
    expert = rollout(task, task.expert, episodes, seed)
    randoms = rollout(task, random_policy, random_episodes, seed + 1_000_000)
    data = TaskData(task, expert, float(expert.returns.mean()), float(randoms.returns.mean()), episodes)
    data.episodes = expert.select(data.normalised(expert.returns) >= keep_fraction)
    return data


def load_or_generate(task: ControlTask, episodes: int, seed: int, cache_dir: str | Path) -> TaskData:
    """The task's data from ``cache_dir`` when a file for (task, episodes, seed) is there, else
    generated and written atomically (a temp file, then a rename)."""
    path = Path(cache_dir) / f"{task.name}-{episodes}ep-seed{seed}.npz"
    if path.exists():
        return _read(task, path)
    data = generate(task, episodes, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    e = data.episodes
    meta = {"expert_score": data.expert_score, "random_score": data.random_score, "generated": data.generated}
    np.savez_compressed(
        tmp,
        observations=e.observations,
        actions=e.actions,
        starts=e.starts,
        returns=e.returns,
        missions=np.array(e.missions, dtype=str),
        meta=np.array(json.dumps(meta)),
    )
    tmp.replace(path)
    return data


def _read(task: ControlTask, path: Path) -> TaskData:
    try:
        with np.load(path) as f:
            meta = json.loads(str(f["meta"]))
            missions = [str(m) for m in f["missions"]]
            episodes = Episodes(f["observations"], f["actions"], f["starts"], f["returns"], missions)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a readable episode cache ({exc}); delete it to regenerate") from exc
    return TaskData(task, episodes, meta["expert_score"], meta["random_score"], meta["generated"])

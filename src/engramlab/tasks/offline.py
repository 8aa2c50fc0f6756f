"""Offline-RL data: datasets of mixed skill from systematically different behaviour policies, their
cache, a transition sampler and the evaluation of a policy in the real environment.

The AlphaStar situation (Vinyals et al. 2019; Mathieu et al. 2023, "AlphaStar Unplugged"): the
data are games of players of every skill. Here each environment has four behaviour policies, each
a deterministic controller (or uniform random), so that their actions differ *systematically*:

- ``expert``: the generalist's expert (:mod:`engramlab.tasks.control`);
- ``medium``: a mis-tuned version of it scoring about half of the expert (normalised);
- ``bad``: a biased controller, a little above random;
- ``random``: uniform random actions.

Mixed data are *not* made by adding random action noise to the expert: with i.i.d. noise the most
frequent action at every state stays the expert's, so BC recovers the expert and the arms cannot
be told apart (measured, ``../shared/reference/next-systems.md`` §2.3).

A dataset mixes the policies by share of *transitions* (``MIXES``) and is stored as ``.npz`` with
D4RL's key names (Fu et al. 2020), so a user's own D4RL-style arrays load as they are:

==================== =========== ========================================================
key                  shape/type  meaning
==================== =========== ========================================================
observations         (N, d) f32  the observation a step starts from
actions              (N,) i64    the action taken
rewards              (N,) f32    the reward received
next_observations    (N, d) f32  the observation after it
terminals            (N,) bool   the episode ended in a terminal state (no bootstrap)
timeouts             (N,) bool   the episode was cut by the time limit (bootstrap)
episode_starts       (E + 1,)    offsets of each episode's first step, then N
episode_returns      (E,) f64    undiscounted return of each episode
episode_policies     (E,) str    the behaviour policy that played it
meta                 () str      JSON: env, dataset, seed, expert_score, random_score, ...
==================== =========== ========================================================

Scores are normalised as D4RL's and the generalist's: 0 = the random policy, 100 = the expert,
both measured here on the same environment seeds (``score_episodes`` each).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engramlab.errors import DataError
from engramlab.tasks import control

FORMAT_VERSION = 1

# --------------------------------------------------------------------------------------------
# behaviour policies: (observation, rng) -> action


def linear_cartpole(angle: float, spin: float, place: float, speed: float, bias: float = 0.0) -> Callable:
    """Push right when ``angle·θ + spin·θ' + place·x + speed·x' > bias``: the expert is (1, .5, .05, .2, 0)."""
    return lambda obs, rng: int(angle * obs[2] + spin * obs[3] + place * obs[0] + speed * obs[1] > bias)


def lander(descent_damping: float = 0.5, tilt: float = 0.0) -> Callable:
    """gymnasium's LunarLander ``heuristic`` (a PD controller on angle and height, fire the engine
    that reduces the larger error) with two knobs: ``descent_damping`` weighs the vertical speed in
    the height error (0.5 in the heuristic; less comes down too fast), ``tilt`` biases the target
    angle (0 in the heuristic; more drifts sideways)."""

    def act(s: np.ndarray, rng) -> int:
        angle_target = np.clip(s[0] * 0.5 + s[2] * 1.0 + tilt, -0.4, 0.4)
        angle_todo = (angle_target - s[4]) * 0.5 - s[5] * 1.0
        hover_todo = (0.55 * abs(s[0]) - s[1]) * 0.5 - s[3] * descent_damping
        if s[6] or s[7]:  # a leg touches: only slow the fall
            angle_todo, hover_todo = 0.0, -s[3] * 0.5
        if hover_todo > abs(angle_todo) and hover_todo > 0.05:
            return 2
        if angle_todo < -0.05:
            return 3
        return 1 if angle_todo > 0.05 else 0

    return act


def acrobot(gain: float = 1.0, bias: float = 0.0) -> Callable:
    """Torque along the second joint's velocity (the expert: gain 1, bias 0); ``bias`` shifts the
    switching point, ``gain`` < 0 pushes against the swing."""
    return lambda obs, rng: 2 if gain * obs[5] > bias else 0


def uniform(actions: int) -> Callable:
    return lambda obs, rng: int(rng.integers(actions))


BABYAI_ACTIONS, BABYAI_DONE = 7, 6  # minigrid's actions; ``done`` is the bot's "nothing left to do"


class BabyAITour:
    """minigrid's ``BabyAIBot`` sent to other objects before (or instead of) the mission's: a
    planner with the wrong goal order, the BabyAI counterpart of a mis-tuned controller.

    At every reset the bot is made for the mission, then a "go next to" subgoal per distractor
    (every object the mission does not name) is put on top of its stack, nearest first or
    ``farthest_first``. With ``then="mission"`` it goes on to the mission's object; with
    ``then="random"`` it drops the mission and acts uniformly at random after its tour. With no
    distractors (``distractors=0``) it is the bot itself, the expert."""

    def __init__(self, distractors: int | None = None, farthest_first: bool = False, then: str = "mission"):
        self.distractors, self.farthest_first, self.then = distractors, farthest_first, then

    def reset(self, env, rng) -> None:
        from minigrid.envs.babyai.core.verifier import ObjDesc
        from minigrid.utils.baby_ai_bot import BabyAIBot, GoNextToSubgoal

        level = env.unwrapped
        self.bot, self.wandering = BabyAIBot(env), False
        if self.then == "random":
            self.bot.stack.clear()
        named = level.instrs.desc.obj_set
        objects = [o for o in level.grid.grid if o is not None and o.type in ("ball", "box", "key") and o not in named]
        distance = lambda o: abs(o.cur_pos[0] - level.agent_pos[0]) + abs(o.cur_pos[1] - level.agent_pos[1])
        objects.sort(key=distance, reverse=self.farthest_first)
        for obj in objects[: self.distractors][::-1]:  # the stack's top is visited first
            description = ObjDesc(obj.type, obj.color)
            description.find_matching_objs(level)
            self.bot.stack.append(GoNextToSubgoal(self.bot, description))

    def __call__(self, obs, rng) -> int:
        if not self.wandering:
            action = int(self.bot.replan())
            if not (self.then == "random" and action == BABYAI_DONE):  # the tour is over
                return action
            self.wandering = True
        return int(rng.integers(BABYAI_ACTIONS))


# Per environment: the four behaviour policies. Their scores (normalised, measured on 100 episodes
# by `generate`) are in docs/offline-rl.md: medium ≈ 40–60 %, bad ≈ 5–15 %.
BEHAVIOURS: dict[str, dict[str, Callable]] = {
    "cartpole": {
        "expert": linear_cartpole(1, 0.5, 0.05, 0.2),
        "medium": linear_cartpole(1, 0.5, -0.125, -0.5),  # the cart terms with the wrong sign: drifts off
        "bad": linear_cartpole(1, 0.5, 0, 0, bias=0.2),  # leans: holds the pole at an angle, then loses it
        "random": uniform(2),
    },
    "lunarlander": {
        "expert": lander(),
        "medium": lander(descent_damping=0.3),  # comes down too fast: hard landings
        "bad": lander(tilt=1.0),  # tilted: drifts sideways and crashes
        "random": uniform(4),
    },
    "acrobot": {
        "expert": acrobot(),
        "medium": acrobot(bias=0.75),  # pushes only on fast swings: pumps energy slowly
        "bad": acrobot(bias=0.85),  # pushes only on the fastest swings: rarely gets up
        "random": uniform(3),
    },
    # go to the red ball in an 8 × 8 room among 7 distractors; the mission never changes, so the
    # policy sees the 7 × 7 × 3 view and its direction only
    "babyai-gotoredball": {
        "expert": BabyAITour(distractors=0),
        "medium": BabyAITour(farthest_first=True),  # tours every distractor, farthest first, then the ball
        "bad": BabyAITour(distractors=1, then="random"),  # the nearest distractor, then wanders at random
        "random": uniform(BABYAI_ACTIONS),
    },
}

# dataset name -> share of transitions from each behaviour policy
MIXES: dict[str, dict[str, float]] = {
    "expert": {"expert": 1.0},
    "medium": {"medium": 1.0},
    "mixed": {"expert": 0.25, "medium": 0.25, "bad": 0.25, "random": 0.25},  # the headline, AlphaStar's
    "random-heavy": {"random": 0.4, "bad": 0.4, "expert": 0.2},
}


def check_names(envs: list[str], datasets: list[str]) -> None:
    """One clear error for an unknown environment or dataset name."""
    for env in envs:
        if env not in BEHAVIOURS:
            raise DataError(f"unknown environment {env!r} for offline RL; known: {', '.join(BEHAVIOURS)}")
    for name in datasets:
        if name not in MIXES:
            raise DataError(f"unknown dataset {name!r}; known: {', '.join(MIXES)}")


# --------------------------------------------------------------------------------------------
# datasets


@dataclass
class Dataset:
    """One dataset, all episodes end to end (see the module docstring for the fields)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_starts: np.ndarray
    episode_returns: np.ndarray
    episode_policies: np.ndarray
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def episodes(self) -> int:
        return len(self.episode_returns)

    @property
    def actions_n(self) -> int:
        return int(self.meta["actions"])

    def features(self, observations: Tensor) -> Tensor:
        """The networks' inputs for stored observations (:func:`features`)."""
        env = self.meta.get("env")
        return features(env, observations) if env in BEHAVIOURS else observations

    @property
    def feature_size(self) -> int:
        return int(self.features(torch.from_numpy(self.observations[:1])).shape[1])

    def normalised(self, returns: np.ndarray | float) -> np.ndarray | float:
        """0 = the random policy, 100 = the expert (D4RL's normalised score)."""
        expert, random = self.meta["expert_score"], self.meta["random_score"]
        return 100 * (np.asarray(returns) - random) / (expert - random)

    def episode_of_step(self) -> np.ndarray:
        """(N,) the episode index of every step."""
        return np.repeat(np.arange(self.episodes), np.diff(self.episode_starts))

    def return_quantiles(self) -> np.ndarray:
        """(E,) each episode's return as a quantile in [0, 1] among the dataset's episodes (ties share
        the mean rank): AlphaStar's MMR, a skill level the policy can be asked for."""
        ranks = np.argsort(np.argsort(self.episode_returns, kind="stable"), kind="stable").astype(np.float64)
        for value in np.unique(self.episode_returns):  # ties: one quantile
            tied = self.episode_returns == value
            ranks[tied] = ranks[tied].mean()
        return ranks / max(self.episodes - 1, 1)

    def top_episodes(self, fraction: float) -> np.ndarray:
        """Indices of the best ``fraction`` of episodes by return (at least one): CORL's 10 %-BC."""
        count = max(1, int(round(fraction * self.episodes)))
        return np.argsort(-self.episode_returns, kind="stable")[:count]


def rollout(env_name: str, policy: Callable, episodes: int | None, seed: int, transitions: int | None = None):
    """Episodes of ``policy`` (env seeds ``seed``, ``seed + 1`` …): ``episodes`` of them, or whole
    episodes until at least ``transitions`` steps. Returns the D4RL arrays and per-episode returns."""
    task = control.get_task(env_name)
    env = task.make()
    rng = np.random.default_rng(seed)
    obs_list, act, rew, nxt, term, tout, lengths, returns = [], [], [], [], [], [], [], []
    episode = 0
    while (episodes is not None and episode < episodes) or (transitions is not None and len(act) < transitions):
        obs, _ = control.reset_quietly(env, seed + episode)
        if hasattr(policy, "reset"):  # a planner (BabyAI's bot) starts afresh
            policy.reset(env, rng)
        done, total, steps = False, 0.0, 0
        while not done:
            action = policy(obs, rng)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            obs_list.append(control.flat_observation(task, obs))
            act.append(action)
            rew.append(reward)
            nxt.append(control.flat_observation(task, next_obs))
            term.append(terminated)
            tout.append(truncated and not terminated)
            obs, total, steps, done = next_obs, total + float(reward), steps + 1, terminated or truncated
        lengths.append(steps)
        returns.append(total)
        episode += 1
    env.close()
    arrays = {
        "observations": np.asarray(obs_list, dtype=np.float32),
        "actions": np.asarray(act, dtype=np.int64),
        "rewards": np.asarray(rew, dtype=np.float32),
        "next_observations": np.asarray(nxt, dtype=np.float32),
        "terminals": np.asarray(term, dtype=bool),
        "timeouts": np.asarray(tout, dtype=bool),
    }
    return arrays, np.asarray(lengths, dtype=np.int64), np.asarray(returns, dtype=np.float64)


def features(env_name: str, observations: Tensor) -> Tensor:
    """What the networks see: the stored observations as they are, or for BabyAI its 49 cell codes
    (``object + 11 colour + 66 state``, :func:`control.flat_observation`) and direction one-hot
    encoded: 49 × (11 + 6 + 3) + 4 = 984 inputs."""
    if not control.get_task(env_name).babyai:
        return observations
    codes, direction = observations[:, :-1].long(), observations[:, -1].long()
    parts = [codes % 11, codes // 11 % 6, codes // 66]
    one_hot = [F.one_hot(p, n).flatten(1) for p, n in zip(parts, (11, 6, 3))] + [F.one_hot(direction, 4)]
    return torch.cat(one_hot, -1).float()


def behaviour_scores(env_name: str, episodes: int, seed: int) -> dict[str, float]:
    """Mean return of every behaviour policy on the same ``episodes`` environment seeds."""
    return {
        name: float(rollout(env_name, policy, episodes, seed)[2].mean())
        for name, policy in BEHAVIOURS[env_name].items()
    }


def generate(env_name: str, dataset: str, transitions: int, seed: int, score_episodes: int = 100) -> Dataset:
    """A dataset of ``transitions`` steps (rounded up to whole episodes per policy), mixed as ``MIXES[dataset]``."""
    check_names([env_name], [dataset])
    parts, policies = [], []
    for i, (name, share) in enumerate(MIXES[dataset].items()):
        arrays, lengths, returns = rollout(
            env_name, BEHAVIOURS[env_name][name], None, seed + 100_000 * (i + 1), int(round(share * transitions))
        )
        parts.append((arrays, lengths, returns))
        policies += [name] * len(returns)
    scores = behaviour_scores(env_name, score_episodes, seed + 10_000_000)
    lengths = np.concatenate([p[1] for p in parts])
    meta = {
        "format_version": FORMAT_VERSION,
        "env": env_name,
        "env_id": control.get_task(env_name).env_id,
        "dataset": dataset,
        "mix": MIXES[dataset],
        "seed": seed,
        "actions": int(control.get_task(env_name).make().action_space.n),
        "expert_score": scores["expert"],
        "random_score": scores["random"],
        "behaviour_scores": scores,
        "score_episodes": score_episodes,
    }
    return Dataset(
        **{key: np.concatenate([p[0][key] for p in parts]) for key in parts[0][0]},
        episode_starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        episode_returns=np.concatenate([p[2] for p in parts]),
        episode_policies=np.array(policies, dtype=str),
        meta=meta,
    )


def cache_path(cache_dir: str | Path, env_name: str, dataset: str, transitions: int, seed: int) -> Path:
    return Path(cache_dir) / f"{env_name}-{dataset}-{transitions}-seed{seed}.npz"


def save(data: Dataset, path: Path) -> None:
    """Written atomically: a temporary file, then a rename (no half-written cache after a kill)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    fields = {k: getattr(data, k) for k in ARRAY_KEYS}
    np.savez_compressed(tmp, **fields, meta=np.array(json.dumps(data.meta)))
    tmp.replace(path)


ARRAY_KEYS = (
    "observations",
    "actions",
    "rewards",
    "next_observations",
    "terminals",
    "timeouts",
    "episode_starts",
    "episode_returns",
    "episode_policies",
)


def load(path: str | Path) -> Dataset:
    """A dataset file (this module's schema); a missing, unreadable or inconsistent file is one
    :class:`DataError` that names it and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such dataset file (data.generate=true makes it; the schema: docs/offline-rl.md)")
    with open(path, "rb") as f:
        if f.read(2) != b"PK":  # every .npz is a zip archive
            raise DataError(f"{path}: not a readable dataset (not an .npz archive); delete it to regenerate")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in (*ARRAY_KEYS, "meta") if k not in f.files]
            if missing:
                raise DataError(f"{path}: not an offline-RL dataset, missing {', '.join(missing)}")
            arrays = {k: f[k] for k in ARRAY_KEYS}
            meta = json.loads(str(f["meta"]))
    except DataError:
        raise
    except Exception as exc:  # zip, pickle and JSON errors all mean the same: a damaged file
        problem = f"{type(exc).__name__}: {exc}"
        raise DataError(f"{path}: not a readable dataset ({problem}); delete it to regenerate") from None
    data = Dataset(**arrays, meta=meta)
    check_consistent(data, path)
    return data


def check_consistent(data: Dataset, path: Path) -> None:
    n, starts = len(data.actions), data.episode_starts
    for key in ("observations", "rewards", "next_observations", "terminals", "timeouts"):
        if len(getattr(data, key)) != n:
            raise DataError(f"{path}: {key} has {len(getattr(data, key))} rows, actions has {n}")
    if len(starts) != data.episodes + 1 or starts[0] != 0 or starts[-1] != n or np.any(np.diff(starts) <= 0):
        raise DataError(f"{path}: episode_starts must rise from 0 to {n} with one entry per episode plus one")
    for key in ("expert_score", "random_score", "actions"):
        if key not in data.meta:
            raise DataError(f"{path}: meta has no {key!r}")
    if n and (data.actions.min() < 0 or data.actions.max() >= data.actions_n):
        raise DataError(f"{path}: actions outside 0 … {data.actions_n - 1}")


def load_or_generate(
    env_name: str, dataset: str, transitions: int, seed: int, cache_dir: str | Path, score_episodes: int = 100
) -> Dataset:
    """The dataset from ``cache_dir`` when its file is there, else generated and cached."""
    path = cache_path(cache_dir, env_name, dataset, transitions, seed)
    if path.exists():
        return load(path)
    data = generate(env_name, dataset, transitions, seed, score_episodes)
    save(data, path)
    return data


# --------------------------------------------------------------------------------------------
# training batches


class TransitionSampler:
    """Uniform batches of transitions, drawn with tensor indexing from a seeded generator.

    ``episodes`` keeps only those episodes (filtered BC); every batch carries ``quantile``, the
    return quantile of the episode a step belongs to (return-conditioned BC)."""

    def __init__(self, data: Dataset, episodes: np.ndarray | None = None):
        self.features = data.features
        step_episode = data.episode_of_step()
        keep = np.isin(step_episode, episodes) if episodes is not None else np.ones(len(data), dtype=bool)
        self.tensors = {
            "observations": torch.from_numpy(data.observations[keep]),
            "actions": torch.from_numpy(data.actions[keep]),
            "rewards": torch.from_numpy(data.rewards[keep]),
            "next_observations": torch.from_numpy(data.next_observations[keep]),
            "terminals": torch.from_numpy(data.terminals[keep].astype(np.float32)),
            "quantiles": torch.from_numpy(data.return_quantiles()[step_episode[keep]].astype(np.float32)),
        }
        self.size = int(keep.sum())

    def __call__(self, batch_size: int, generator: torch.Generator) -> dict[str, Tensor]:
        index = torch.randint(self.size, (batch_size,), generator=generator)
        batch = {key: value[index] for key, value in self.tensors.items()}
        for key in ("observations", "next_observations"):  # BabyAI's one-hot view: per batch, not stored
            batch[key] = self.features(batch[key])
        return batch


# --------------------------------------------------------------------------------------------
# evaluation in the real environment


@torch.no_grad()
def evaluate(env_name: str, act: Callable[[Tensor, torch.Generator], Tensor], episodes: int, seed: int) -> np.ndarray:
    """Returns of ``episodes`` episodes (env seeds ``seed`` …) played in lockstep: ``act(observations
    (B, d), generator) -> actions (B,)`` decides for every running environment at once."""
    task = control.get_task(env_name)
    envs = [task.make() for _ in range(episodes)]
    generator = torch.Generator().manual_seed(seed)
    flat = lambda obs: control.flat_observation(task, obs)
    observations = np.stack([flat(control.reset_quietly(env, seed + i)[0]) for i, env in enumerate(envs)])
    returns, running = np.zeros(episodes), np.ones(episodes, dtype=bool)
    while running.any():
        live = np.flatnonzero(running)
        actions = act(features(env_name, torch.from_numpy(observations[live])), generator).numpy()
        for i, action in zip(live, actions):
            obs, reward, terminated, truncated, _ = envs[i].step(int(action))
            observations[i], returns[i] = flat(obs), returns[i] + float(reward)
            running[i] = not (terminated or truncated)
    for env in envs:
        env.close()
    return returns


# --------------------------------------------------------------------------------------------
# Minari (Farama's standard format for offline-RL data): ``pip install "engramlab[minari]"``


def minari_id(env_name: str, dataset: str) -> str:
    """The Minari dataset id a dataset is written to and read from: ``engramlab/<env>/<dataset>-v0``."""
    return f"engramlab/{env_name}/{dataset}-v0"


def import_minari():
    try:
        import minari
    except ImportError:
        raise DataError('Minari is not installed: pip install "engramlab[minari]"') from None
    return minari


def to_minari(data: Dataset, dataset_id: str | None = None) -> str:
    """Write ``data`` into the local Minari store (``$MINARI_DATASETS_PATH``, default
    ``~/.minari/datasets``) as ``dataset_id``; the expert and random scores become Minari's
    ``ref_max_score`` and ``ref_min_score`` (its normalised score is D4RL's, as ours), the rest of
    ``meta`` and each episode's behaviour policy go into its description as JSON."""
    task = control.TASKS.get(data.meta.get("env", ""))
    if task is not None and task.babyai:
        raise DataError("BabyAI datasets are stored as .npz only (their flat view does not match the env's Dict space)")
    minari = import_minari()
    from minari.data_collector import EpisodeBuffer

    dataset_id = dataset_id or minari_id(data.meta["env"], data.meta["dataset"])
    buffers = []
    for e in range(data.episodes):
        s, t = data.episode_starts[e], data.episode_starts[e + 1]
        steps = slice(s, t)
        buffers.append(
            EpisodeBuffer(
                id=e,
                observations=np.concatenate([data.observations[steps], data.next_observations[t - 1 : t]]),
                actions=data.actions[steps],
                rewards=list(data.rewards[steps]),
                terminations=list(data.terminals[steps]),
                truncations=list(data.timeouts[steps]),
                infos={},
            )
        )
    description = json.dumps({**data.meta, "episode_policies": data.episode_policies.tolist()})
    minari.create_dataset_from_buffers(
        dataset_id=dataset_id,
        buffer=buffers,
        env=data.meta["env_id"],
        eval_env=data.meta["env_id"],
        algorithm_name="engramlab behaviour policies: " + ", ".join(data.meta["mix"]),
        author="engramlab",
        author_email="none",
        code_permalink="engramlab.tasks.offline",
        ref_min_score=data.meta["random_score"],
        ref_max_score=data.meta["expert_score"],
        description=description,
        data_format="hdf5",
    )
    return dataset_id


def from_minari(dataset_id: str) -> Dataset:
    """A Minari dataset with discrete actions from the local store, as a :class:`Dataset`. It needs
    ``ref_min_score`` and ``ref_max_score`` (the random and expert scores of normalisation)."""
    minari = import_minari()
    try:
        source = minari.load_dataset(dataset_id)
    except Exception as exc:  # not found, or a damaged store: one line either way
        raise DataError(f"Minari dataset {dataset_id!r}: {str(exc).splitlines()[0]}") from None
    info = source.storage.metadata
    if info.get("ref_min_score") is None or info.get("ref_max_score") is None:
        raise DataError(f"Minari dataset {dataset_id!r}: no ref_min_score/ref_max_score to normalise scores by")
    try:
        meta = json.loads(info.get("description") or "{}")
    except json.JSONDecodeError:
        meta = {}
    episodes = list(source.iterate_episodes())
    lengths = np.array([len(ep.actions) for ep in episodes], dtype=np.int64)
    join = lambda key, dtype: np.concatenate([np.asarray(getattr(ep, key)) for ep in episodes]).astype(dtype)
    observations = [np.asarray(ep.observations, dtype=np.float32) for ep in episodes]
    meta |= {
        "actions": int(source.spec.action_space.n),
        "expert_score": float(info["ref_max_score"]),
        "random_score": float(info["ref_min_score"]),
        "minari_id": dataset_id,
    }
    policies = meta.pop("episode_policies", ["unknown"] * len(episodes))
    data = Dataset(
        observations=np.concatenate([o[:-1] for o in observations]),
        actions=join("actions", np.int64),
        rewards=join("rewards", np.float32),
        next_observations=np.concatenate([o[1:] for o in observations]),
        terminals=join("terminations", bool),
        timeouts=join("truncations", bool),
        episode_starts=np.concatenate([[0], np.cumsum(lengths)]),
        episode_returns=np.array([float(np.sum(ep.rewards)) for ep in episodes]),
        episode_policies=np.array(policies, dtype=str),
        meta=meta,
    )
    check_consistent(data, Path(dataset_id))
    return data

"""MinAtar games (Young & Tian 2019, arXiv 1903.03176) as a batch of environments, with a memory variant.

MinAtar (``pip install "engramlab[coberl]"``; GPL-3, so an optional extra, never vendored) renders
five Atari games on a 10 × 10 grid of binary channels. Its designers added channels that show
motion (Breakout's and Asterix's ball/enemy *trail*, Space Invaders' aliens by direction, Freeway's
car speeds) so that one frame tells the whole state. ``memory=True`` drops them: the agent sees
where things are but not where they are going, and has to remember the last frames, which is what
a recurrent or transformer core is for (CoBERL's point).

:class:`MinAtarBatch` steps ``n`` games in lock-step with automatic reset, the way CleanRL's vector
environments do, and returns tensors. We use MinAtar's own ``Environment`` class rather than its
gymnasium wrapper (which gymnasium 1.x loads only after ``minatar.gym.register_envs()``): it is the
same game code, and it lets :meth:`MinAtarBatch.state` save every game's state exactly (as JSON in
a byte tensor, no pickle), so that a resumed run continues in the middle of its episodes and ends
bit for bit where an uninterrupted one would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from engramlab.errors import ConfigError, DataError

GAMES = ("breakout", "asterix", "space_invaders", "seaquest", "freeway")
# the channels that show motion, dropped by the memory variant
MOTION_CHANNELS = {
    "breakout": ("trail",),
    "asterix": ("trail",),
    "space_invaders": ("alien_left", "alien_right"),
    "seaquest": ("trail",),
    "freeway": ("speed1", "speed2", "speed3", "speed4", "speed5"),
}
CONSTANT_FIELDS = ("channels", "action_map", "random")  # not game state (random is saved on its own)


def minatar_environment(game: str, sticky: float):
    """One MinAtar game; a missing package or an unknown game is one clear error."""
    if game not in GAMES:
        raise ConfigError(f"unknown MinAtar game {game!r}; known: {', '.join(GAMES)}")
    try:
        from minatar import Environment
    except ImportError:
        raise DataError('MinAtar is not installed: pip install "engramlab[coberl]" (MinAtar is GPL-3)') from None
    return Environment(game, sticky_action_prob=sticky)


@dataclass
class Episodes:
    """The episodes that ended since the last :meth:`clear`, in order: their returns and which
    environment each ran in."""

    returns: list[float] = field(default_factory=list)
    envs: list[int] = field(default_factory=list)

    def clear(self) -> None:
        self.returns.clear()
        self.envs.clear()


class MinAtarBatch:
    """``n`` copies of one MinAtar game stepped together.

    - ``observation()``: (n, C, 10, 10) float32, the channels kept (all, or without the motion ones);
    - ``step(actions)``: actions index the game's minimal action set; returns the next observation,
      the rewards (n,) and ``done`` (n,) bool; a finished game (or one that reached ``max_steps``,
      then cut) is reset at once, so the returned observation is the first of its next episode;
    - ``episodes``: the returns of the episodes finished and their environments (learning curve, evaluation).

    Sticky actions (probability 0.1 of repeating the last action) are MinAtar's default and stay on.
    """

    def __init__(self, game: str, n: int, seed: int, *, memory: bool, sticky: float = 0.1, max_steps: int = 10_000):
        self.envs = [minatar_environment(game, sticky) for _ in range(n)]
        for i, env in enumerate(self.envs):
            env.seed((seed * 10_007 + i) % 2**32)
            env.reset()
        channels = self.envs[0].env.channels
        dropped = MOTION_CHANNELS[game] if memory else ()
        self.channels = [index for name, index in sorted(channels.items(), key=lambda kv: kv[1]) if name not in dropped]
        self.actions = np.asarray(self.envs[0].minimal_action_set())
        self.max_steps = max_steps
        self.running_return = np.zeros(n)
        self.running_length = np.zeros(n, dtype=np.int64)
        self.episodes = Episodes()

    @property
    def n(self) -> int:
        return len(self.envs)

    @property
    def n_actions(self) -> int:
        return len(self.actions)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    def observation(self) -> Tensor:
        frames = np.stack([env.state() for env in self.envs])[..., self.channels]  # (n, 10, 10, C) bool
        return torch.from_numpy(frames.transpose(0, 3, 1, 2).astype(np.float32))

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        rewards, dones = np.zeros(self.n, dtype=np.float32), np.zeros(self.n, dtype=bool)
        for i, (env, action) in enumerate(zip(self.envs, self.actions[actions.numpy()])):
            rewards[i], dones[i] = env.act(int(action))
        self.running_return += rewards
        self.running_length += 1
        dones |= self.running_length >= self.max_steps
        for i in np.flatnonzero(dones):
            self.episodes.returns.append(float(self.running_return[i]))
            self.episodes.envs.append(int(i))
            self.running_return[i], self.running_length[i] = 0.0, 0
            self.envs[i].reset()
        return self.observation(), torch.from_numpy(rewards), torch.from_numpy(dones)

    # --- exact save and restore (resume in the middle of an episode) --------------------------
    def state(self) -> Tensor:
        """Every game's state, its random stream, its last (sticky) action and the running episode
        counters, as JSON bytes in a uint8 tensor (a checkpoint holds tensors only)."""
        games = [
            {
                "game": {k: encode(v) for k, v in vars(env.env).items() if k not in CONSTANT_FIELDS},
                "random": encode(list(env.random.get_state())),
                "last_action": int(env.last_action),
            }
            for env in self.envs
        ]
        blob = {"games": games, "return": self.running_return.tolist(), "length": self.running_length.tolist()}
        return torch.frombuffer(bytearray(json.dumps(blob).encode()), dtype=torch.uint8).clone()

    def load_state(self, state: Tensor) -> None:
        blob = json.loads(bytes(state.numpy()).decode())
        if len(blob["games"]) != self.n:
            raise DataError(f"saved environments: {len(blob['games'])} games, this run has {self.n}")
        for env, saved in zip(self.envs, blob["games"]):
            for key, value in saved["game"].items():
                setattr(env.env, key, decode(value))
            env.random.set_state(tuple(decode(saved["random"])))
            env.env.random = env.random  # MinAtar's wrapper and game share one stream
            env.last_action = saved["last_action"]
        self.running_return = np.asarray(blob["return"], dtype=np.float64)
        self.running_length = np.asarray(blob["length"], dtype=np.int64)


def encode(value):
    """A MinAtar game attribute as JSON: arrays keep their dtype, nested lists recurse."""
    if isinstance(value, np.ndarray):
        return {"array": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"dict": {k: encode(v) for k, v in value.items()}}
    return value


def decode(value):
    if isinstance(value, dict):
        if "array" in value:
            return np.asarray(value["array"], dtype=value["dtype"])
        return {k: decode(v) for k, v in value["dict"].items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value

"""Gato deployed as an agent (Reed et al. 2022, §2.4): the context is its working memory.

A prompt (a demonstration's last timesteps, §3.3 and §4) and the episode's mission are
tokenised first; then each observation is tokenised and appended, and the action is sampled
(or taken greedily) one token at a time, restricted to the environment's legal ids, decoded and
sent to the environment. ``n`` environments run in lockstep as one batch sharing a key/value
cache; their prefixes (missions differ in length) are left-padded and masked. When the context is
full, the oldest timesteps after the prefix are dropped (half of them at once, so the cache is
rebuilt rarely), as Gato keeps the most recent 1024 tokens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from engramlab.models.gato import Gato
from engramlab.tasks import control
from engramlab.tasks import gato_tokens as tok


@dataclass
class Rollouts:
    returns: np.ndarray  # (episodes,)
    lengths: np.ndarray  # (episodes,)
    frames: list[np.ndarray] | None = None  # RGB frames of the first episode, when asked for


def left_pad(rows: list[Tensor], value: int) -> tuple[Tensor, Tensor]:
    """Rows of different lengths -> (n, longest) padded on the left, and the mask of real tokens."""
    longest = max(len(r) for r in rows)
    padded = torch.full((len(rows), longest), value, dtype=torch.long)
    real = torch.zeros(len(rows), longest, dtype=torch.bool)
    for i, r in enumerate(rows):  # n environments, once per rebuild of the context
        padded[i, longest - len(r) :] = r
        real[i, longest - len(r) :] = True
    return padded, real


class Context:
    """Each environment's tokens so far: a fixed prefix (prompt, mission) and its timesteps."""

    def __init__(self, prefixes: list[tok.Tokens]):
        self.prefix = prefixes
        self.steps: list[tok.Tokens] = []  # (n, tokens) ids and local positions per timestep

    def window(self, keep: int) -> tuple[Tensor, Tensor, Tensor]:
        """The prefixes and the last ``keep`` timesteps: ids, local positions, real-token mask."""
        ids, real = left_pad([p.ids for p in self.prefix], tok.END)
        local, _ = left_pad([p.local for p in self.prefix], 0)
        recent = self.steps[len(self.steps) - keep :] if keep else []
        return (
            torch.cat([ids, *[s.ids for s in recent]], dim=1),
            torch.cat([local, *[s.local for s in recent]], dim=1),
            torch.cat([real, *[torch.ones_like(s.ids, dtype=torch.bool) for s in recent]], dim=1),
        )


def empty_tokens() -> tok.Tokens:
    return tok.Tokens(
        torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.bool)
    )


class Decoder:
    """The model and its key/value cache over ``n`` rows; ``feed`` appends tokens, returns logits."""

    def __init__(self, model: Gato):
        self.model, self.cache, self.real = model, None, None

    @property
    def length(self) -> int:
        return 0 if self.real is None else self.real.shape[1]

    def restart(self, ids: Tensor, local: Tensor, real: Tensor) -> Tensor:
        self.real = real
        logits, self.cache = self.model(ids, local, key_mask=real)
        return logits[:, -1]

    def feed(self, ids: Tensor, local: Tensor) -> Tensor:
        self.real = torch.cat([self.real, torch.ones_like(ids, dtype=torch.bool)], dim=1)
        logits, self.cache = self.model(ids, local, key_mask=self.real, cache=self.cache)
        return logits[:, -1]


def reset(task: control.ControlTask, envs: list, seed: int) -> list:
    observations = []
    for i, env in enumerate(envs):
        obs, _ = control.reset_quietly(env, seed + i)
        observations.append(obs)
    return observations


def prefix_of(task: control.ControlTask, obs, prompt: tok.Tokens | None) -> tok.Tokens:
    """What precedes an episode's timesteps: the prompt, then the mission (BabyAI)."""
    parts = [prompt] if prompt is not None else []
    mission = control.mission_of(task, obs)
    if mission:
        parts.append(tok.text(tok.text_ids(mission), end=True, target=False))
    return tok.Tokens.cat(parts) if parts else empty_tokens()


@torch.no_grad()
def run_episodes(
    model: Gato,
    task: control.ControlTask,
    episodes: int,
    seed: int,
    context: int,
    prompts: list[tok.Tokens] | None = None,
    greedy: bool = True,
    record: bool = False,
) -> Rollouts:
    """``episodes`` episodes (env seeds ``seed`` …) in lockstep; ``prompts``: one per episode, or none.
    With ``record``, the first episode's frames come back too."""
    model.eval()
    if record:  # frames are drawn off screen: no display, and no SDL complaint about a missing one
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    envs = [task.make(render_mode="rgb_array" if record and i == 0 else None) for i in range(episodes)]
    space = control.action_space(envs[0])
    low, high = space.legal_ids()
    observations = reset(task, envs, seed)
    ctx = Context([prefix_of(task, o, prompts[i] if prompts else None) for i, o in enumerate(observations)])
    decoder = Decoder(model)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    running = np.ones(episodes, dtype=bool)
    frames = [envs[0].render()] if record else None
    action_local = torch.full((episodes, 1), tok.ACTION_POSITION)
    while running.any():
        flat = np.stack([control.flat_observation(task, o) for o in observations])
        obs_ids = control.observation_ids(task, torch.from_numpy(flat))
        chunk = tok.timesteps(obs_ids, torch.zeros(episodes, 0, dtype=torch.long))  # observation, separator
        chunk_ids, chunk_local = chunk.ids.view(episodes, -1), chunk.local.view(episodes, -1)
        step_tokens = chunk_ids.shape[1] + space.tokens
        if decoder.length == 0 or decoder.length + step_tokens > context:
            room = (context - max(len(p.ids) for p in ctx.prefix)) // step_tokens - 1  # past timesteps that fit
            keep = min(len(ctx.steps), room if decoder.length == 0 else room // 2)
            ids, local, real = ctx.window(max(keep, 0))
            logits = decoder.restart(
                torch.cat([ids, chunk_ids], 1), torch.cat([local, chunk_local], 1), torch.cat([real, chunk_ids > -1], 1)
            )
        else:
            logits = decoder.feed(chunk_ids, chunk_local)
        chosen = []
        for _ in range(space.tokens):
            legal = logits[:, low:high]
            pick = legal.argmax(-1) if greedy else torch.multinomial(legal.softmax(-1), 1)[:, 0]
            chosen.append(low + pick)
            logits = decoder.feed(chosen[-1][:, None], action_local)
        actions = torch.stack(chosen, dim=1)
        ctx.steps.append(
            tok.Tokens(
                torch.cat([chunk_ids, actions], 1), torch.cat([chunk_local, action_local.expand_as(actions)], 1), None
            )
        )
        for i in np.flatnonzero(running):  # finished environments idle in the batch until all are done
            obs, reward, terminated, truncated, _ = envs[i].step(space.decode(actions[i]))
            observations[i] = obs
            returns[i] += float(reward)
            lengths[i] += 1
            running[i] = not (terminated or truncated)
            if record and i == 0 and running[0]:
                frames.append(envs[0].render())
    for env in envs:
        env.close()
    return Rollouts(returns, lengths, frames)


def caption(model: Gato, images: Tensor, patch: int, longest: int = 32) -> list[str]:
    """Greedy captions of images (N, C, H, W) in [0, 1]: the patches, then text until ``END``."""
    return [tok.text_of(row) for row in caption_ids(model, images, patch, longest)]


@torch.no_grad()
def caption_ids(model: Gato, images: Tensor, patch: int, longest: int = 32) -> Tensor:
    """(N, ≤ longest) greedy text ids after each image's patches, laid out as in training: the
    patches are one timestep, the caption is another (local positions restart at 1)."""
    model.eval()
    pixels = tok.image_patches(images, patch)
    n, patches = pixels.shape[:2]
    ids = torch.full((n, patches), tok.PATCH)
    local = torch.arange(1, patches + 1).expand(n, patches)
    intervals = tok.patch_intervals(images.shape[2], images.shape[3], patch).repeat(n, 1, 1)
    logits, cache = model(ids, local, ids == tok.PATCH, pixels.flatten(0, 1), intervals)
    written, done = [], torch.zeros(n, dtype=torch.bool)
    text_only = torch.full((tok.VOCAB_SIZE,), float("-inf"))
    text_only[tok.TEXT : tok.TEXT + 256] = 0
    text_only[tok.END] = 0
    for place in range(longest):
        choice = (logits[:, -1] + text_only).argmax(-1)
        written.append(choice)
        done |= choice == tok.END
        if done.all():
            break
        logits, cache = model(choice[:, None], torch.full((n, 1), place + 1), cache=cache)
    return torch.stack(written, dim=1)

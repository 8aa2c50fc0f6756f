"""Evolving bacteria: a vectorised 2-D world of run-and-tumble cells that eat, die, divide,
conjugate and mutate, following a moving food source (Agüera y Arcas' talk; no paper or code
was published, so every choice below is ours and grounded in E. coli where that makes sense).

Many independent worlds (restarts) run at once: every state tensor is ``(worlds, capacity, …)``
with an ``alive`` mask, and one :meth:`World.step` advances all cells of all worlds with tensor
operations (no loop over cells or worlds).

- **Motion** (Berg 1993, "Random Walks in Biology", ch. 6): a cell runs straight at
  ``speed`` (E. coli: 10–30 µm/s) or tumbles, staying in place for one step and turning by a
  random angle of mean 68° to either side (forward-biased); with a constant tumble probability of
  ``dt / 1 s`` per step, runs last about 1 s, as E. coli's.
- **Sensing** (Segall, Block & Berg 1986): a cell compares the concentration it sensed over the
  last ≈ 1 s with that over the previous ≈ 3 s (two exponential averages, τ 1 s and 3 s), as a
  relative change (E. coli senses logarithmically: Kalinin et al. 2009): its stimulus is
  "falling", "steady" or "rising", plus whether it sits in food, and, in stage 2, whether
  another cell's signal reaches it.
- **Food**: a Gaussian patch whose centre moves on a circle; a fixed supply per step is shared
  by the cells in proportion to the concentration where each is, so a world holds a bounded
  population and cells nearer the food get more.
- **Energy**: a basal cost per step (plus the signal's cost when a cell emits); death at zero;
  at ``divide_at`` a cell splits into two cells of half its energy, the daughter's genome
  mutated (Gaussian noise); a cell touching another takes a random half of its genes with some
  probability per step (conjugation).
- **Genomes** (three stages of the talk): stage 1, a Q-table from stimulus to {run, tumble};
  stage 2, a second table to {quiet, signal} (signalling costs energy, others sense it);
  stage 3, a reward map: weights of what a cell feels (food eaten, hunger, touching another,
  tumbling),
  from which a Q-table is learned within each lifetime by Q-learning (Watkins 1989), starting
  from zero at birth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from engramlab.config import Config

FEELINGS = ("food", "hunger", "touch", "tumble")  # what a stage-3 reward map weighs
DIRECTIONS = ("falling", "steady", "rising")  # how the sensed concentration changes (World.stimulus)


class WorldConfig(Config):
    stage: Literal[1, 2, 3] = Field(1, description="1: Q-table genome; 2: plus a costly signal; 3: reward-map genome")
    worlds: int = Field(16, ge=1, description="independent worlds (restarts) simulated at once")
    capacity: int = Field(128, ge=2, description="most cells a world can hold")
    start_cells: int = Field(64, ge=1, description="cells at the start, with random genomes")
    size: float = Field(400.0, gt=0, description="side of the square, periodic world (µm)")
    dt: float = Field(0.1, gt=0, description="seconds per step")
    speed: float = Field(20.0, gt=0, description="running speed (µm/s; E. coli: 10-30)")
    tumble_angle: float = Field(68.0, ge=0, le=180, description="mean turn of a tumble (degrees; E. coli: 68)")
    tumble_angle_spread: float = Field(36.0, ge=0, description="standard deviation of the turn (degrees)")
    food_width: float = Field(50.0, gt=0, description="standard deviation of the food patch (µm)")
    food_orbit: float = Field(100.0, ge=0, description="radius of the food centre's circular path (µm)")
    food_speed: float = Field(1.0, ge=0, description="speed of the food centre (µm/s)")
    food_supply: float = Field(8.0, gt=0, description="energy shared out per step by the food")
    in_food: float = Field(0.5, gt=0, lt=1, description="concentration above which a cell senses it is in food")
    sense_threshold: float = Field(1e-3, ge=0, description="smallest relative change of concentration sensed")
    basal_cost: float = Field(0.1, gt=0, description="energy spent per step by every cell")
    signal_cost: float = Field(0.1, ge=0, description="extra energy per step spent signalling (stage 2)")
    signal_range: float = Field(30.0, gt=0, description="distance a signal reaches (µm)")
    signal_sensed: bool = Field(True, description="stage 2: others sense the signal (false: the deaf control)")
    start_energy: float = Field(20.0, gt=0, description="energy of the first cells")
    divide_at: float = Field(40.0, gt=0, description="energy at which a cell divides")
    mutation: float = Field(0.2, ge=0, description="standard deviation of the noise added to a daughter's genes")
    contact: float = Field(5.0, ge=0, description="distance at which two cells touch (µm)")
    conjugation: float = Field(0.01, ge=0, le=1, description="chance per step that a touching cell takes genes")
    learning_rate: float = Field(0.1, gt=0, le=1, description="stage 3: Q-learning rate")
    discount: float = Field(0.9, ge=0, lt=1, description="stage 3: Q-learning discount")
    exploration: float = Field(0.05, ge=0, le=1, description="stage 3: chance of a random action")


@dataclass
class Census:
    """What one step did, per world: for the bookkeeping and the logs."""

    births: Tensor
    deaths: Tensor
    gained: Tensor  # energy eaten
    spent: Tensor  # energy spent by the living (basal and signal)
    lost: Tensor  # energy of the cells that died (≤ 0 left, but counted)


def uniform_distance(size: float) -> float:
    """Mean distance from a point to a uniformly placed cell on the periodic square of side
    ``size``: size (√2 + ln(1 + √2)) / 6 ≈ 0.383 size (the no-tracking reference)."""
    return size * (math.sqrt(2) + math.log(1 + math.sqrt(2))) / 6


def unit_vectors(maps: np.ndarray) -> np.ndarray:
    """Reward maps scaled to length 1: a map times a positive number teaches the same greedy
    behaviour, so only its direction is comparable across runs."""
    return maps / np.linalg.norm(maps, axis=1, keepdims=True)


def states(stage: int) -> int:
    """Stimuli: falling/steady/rising × in food or not (× signal heard or not in stage 2)."""
    return 12 if stage == 2 else 6


def genome_size(stage: int) -> int:
    if stage == 3:
        return len(FEELINGS)
    return states(stage) * (2 if stage == 1 else 4)  # Q for run/tumble (and quiet/signal)


class World(nn.Module):
    """``worlds`` independent worlds advanced together; see the module docstring."""

    def __init__(self, cfg: WorldConfig, generator: torch.Generator, genomes: Tensor | None = None):
        super().__init__()
        self.cfg, self.g = cfg, generator
        w, n, c = cfg.worlds, cfg.capacity, cfg.start_cells
        alive = torch.zeros(w, n, dtype=torch.bool)
        alive[:, :c] = True
        start = torch.randn(w, n, genome_size(cfg.stage), generator=generator) if genomes is None else genomes
        # every piece of state is a buffer, so the world's state_dict is a checkpoint of it (with self.g's state)
        state = {
            "alive": alive,
            "position": torch.rand(w, n, 2, generator=generator) * cfg.size,
            "heading": torch.rand(w, n, generator=generator) * 2 * math.pi,
            "energy": torch.where(alive, cfg.start_energy, 0.0),
            "genome": start * alive[..., None],
            "fast": torch.zeros(w, n),  # concentration averaged over ≈ 1 s
            "slow": torch.zeros(w, n),  # … and over ≈ 3 s
            "signalling": torch.zeros(w, n, dtype=torch.bool),
            "q": torch.zeros(w, n, states(cfg.stage), 2),  # stage 3: learned within a lifetime
            "last_state": torch.zeros(w, n, dtype=torch.long),
            "last_action": torch.zeros(w, n, dtype=torch.long),
            "last_gain": torch.zeros(w, n),
            "food_phase": torch.rand(w, generator=generator) * 2 * math.pi,
            "time": torch.zeros((), dtype=torch.long),
        }
        for name, value in state.items():
            self.register_buffer(name, value)
        self.register_buffer("not_self", ~torch.eye(n, dtype=torch.bool), persistent=False)
        self.register_buffer("concentration", self.sense())

    # --- the world --------------------------------------------------------------------------
    def food_centre(self) -> Tensor:
        cfg = self.cfg
        angle = self.food_phase + cfg.food_speed * self.time * cfg.dt / max(cfg.food_orbit, 1e-9)
        circle = torch.stack([angle.cos(), angle.sin()], -1) * cfg.food_orbit
        return cfg.size / 2 + circle  # (W, 2)

    def offset(self, a: Tensor, b: Tensor) -> Tensor:
        """Shortest vector from b to a on the periodic square."""
        d = a - b
        return d - self.cfg.size * torch.round(d / self.cfg.size)

    def sense(self) -> Tensor:
        d = self.offset(self.position, self.food_centre()[:, None])
        return torch.exp(-(d**2).sum(-1) / (2 * self.cfg.food_width**2))

    def distance_to_food(self) -> Tensor:
        return self.offset(self.position, self.food_centre()[:, None]).norm(dim=-1)

    def squared_distances(self) -> Tensor:
        """(W, N, N) squared distances between cells on the periodic square; inf to oneself and to
        dead cells. One coordinate at a time, without square roots: the cost of a step."""
        size, total = self.cfg.size, 0.0
        for axis in range(2):
            x = self.position[..., axis]
            d = (x[:, :, None] - x[:, None]).abs_()
            d = torch.minimum(d, size - d)  # the shorter way round the periodic square
            total = total + d.mul_(d)
        pair = self.alive[:, :, None] & self.alive[:, None] & self.not_self
        return total.masked_fill(~pair, math.inf)

    # --- a cell's view ----------------------------------------------------------------------
    def stimulus(self, signal_heard: Tensor) -> Tensor:
        trend = torch.log(self.fast + 1e-30) - torch.log(self.slow + 1e-30)  # a relative change (Weber's law)
        eps = self.cfg.sense_threshold
        direction = torch.where(trend > eps, 2, torch.where(trend < -eps, 0, 1))  # falling, steady, rising
        state = direction + 3 * (self.concentration > self.cfg.in_food)
        if self.cfg.stage == 2:
            state = state + 6 * signal_heard
        return state

    def act(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """(tumble, signal) booleans from the genome's tables or, in stage 3, the learned Q."""
        uniform = torch.rand(*state.shape, 2, generator=self.g)
        if self.cfg.stage == 3:
            values = self.q.gather(2, state[..., None, None].expand(*state.shape, 1, 2))[:, :, 0]
            greedy = values[..., 1] > values[..., 0]
            explore = uniform[..., 0] < self.cfg.exploration
            tumble = torch.where(explore, uniform[..., 1] < 0.5, greedy)
            return tumble, torch.zeros_like(tumble)
        table = self.genome.view(*state.shape, states(self.cfg.stage), -1)
        row = table.gather(2, state[..., None, None].expand(*state.shape, 1, table.shape[-1]))[:, :, 0]
        tumble = uniform[..., 0] < torch.sigmoid(row[..., 1] - row[..., 0])  # a softmax over run/tumble
        if self.cfg.stage == 1:
            return tumble, torch.zeros_like(tumble)
        return tumble, uniform[..., 1] < torch.sigmoid(row[..., 3] - row[..., 2])  # quiet/signal

    # --- one step ---------------------------------------------------------------------------
    def step(self) -> Census:
        cfg = self.cfg
        distances = self.squared_distances()
        heard = torch.zeros_like(self.alive)
        if cfg.stage == 2 and cfg.signal_sensed:
            heard = ((distances < cfg.signal_range**2) & self.signalling[:, None, :]).any(-1)
        state = self.stimulus(heard)
        if cfg.stage == 3:
            self.learn(state, distances)
        tumble, signal = self.act(state)
        tumble, signal = tumble & self.alive, signal & self.alive
        self.move(tumble)
        self.signalling = signal
        self.time += 1

        self.concentration = self.sense() * self.alive
        fast, slow = cfg.dt / 1.0, cfg.dt / 3.0
        # the dead sense nothing (left to decay, their averages would pass through slow subnormal floats)
        self.fast = (self.fast + fast * (self.concentration - self.fast)) * self.alive
        self.slow = (self.slow + slow * (self.concentration - self.slow)) * self.alive
        share = self.concentration / (self.concentration.sum(1, keepdim=True) + 1e-9)
        gained = cfg.food_supply * share
        spent = (cfg.basal_cost + cfg.signal_cost * signal) * self.alive
        self.energy = self.energy + gained - spent
        self.last_state, self.last_action, self.last_gain = state, tumble.long(), gained

        dying = self.alive & (self.energy <= 0)
        census = Census(
            torch.zeros_like(dying[:, 0], dtype=torch.long),
            dying.sum(1),
            gained.sum(1),
            spent.sum(1),
            (self.energy * dying).sum(1),
        )
        self.alive &= ~dying
        self.energy = self.energy * self.alive
        census.births = self.divide()
        self.conjugate(distances)
        return census

    def move(self, tumble: Tensor) -> None:
        cfg = self.cfg
        side = torch.where(torch.rand(tumble.shape, generator=self.g) < 0.5, -1.0, 1.0)
        turn = torch.randn(tumble.shape, generator=self.g) * cfg.tumble_angle_spread + cfg.tumble_angle
        self.heading = torch.where(tumble, self.heading + side * turn.abs() * math.pi / 180, self.heading)
        running = (~tumble & self.alive)[..., None]
        velocity = torch.stack([self.heading.cos(), self.heading.sin()], -1) * cfg.speed * cfg.dt
        self.position = torch.where(running, self.position + velocity, self.position) % cfg.size

    def learn(self, state: Tensor, distances: Tensor) -> None:
        """Stage 3: one Q-learning update of the previous step's (state, action) with the reward the
        genome gives to what the cell feels now."""
        cfg = self.cfg
        feelings = torch.stack(
            [
                self.last_gain,
                (self.energy < 0.2 * cfg.divide_at).float(),
                (distances < cfg.contact**2).any(-1).float(),
                self.last_action.float(),
            ],
            -1,
        )
        reward = (feelings * self.genome).sum(-1)
        best_next = self.q.gather(2, state[..., None, None].expand(*state.shape, 1, 2))[:, :, 0].amax(-1)
        index = (self.last_state * 2 + self.last_action)[..., None]
        q = self.q.flatten(2)
        old = q.gather(2, index)[..., 0]
        new = old + cfg.learning_rate * (reward + cfg.discount * best_next - old)
        self.q = q.scatter(2, index, torch.where(self.alive, new, old)[..., None]).view_as(self.q)

    def divide(self) -> Tensor:
        """Cells at ``divide_at`` split into free slots of their world (the rest wait for room)."""
        cfg = self.cfg
        parents = self.alive & (self.energy >= cfg.divide_at)
        free = ~self.alive
        parent_rank = parents.long().cumsum(1) - 1
        dividing = parents & (parent_rank < free.sum(1, keepdim=True))
        slot_of = torch.sort(self.alive.long(), dim=1, stable=True).indices  # [w, r]: the r-th free slot
        w, p = dividing.nonzero(as_tuple=True)
        child = slot_of[w, parent_rank[w, p]]
        half = self.energy[w, p] / 2
        self.energy[w, p] = half
        self.energy[w, child] = half
        noise = torch.randn(len(p), self.genome.shape[-1], generator=self.g) * cfg.mutation
        self.genome[w, child] = self.genome[w, p] + noise
        self.position[w, child] = self.position[w, p]
        self.heading[w, child] = torch.rand(len(p), generator=self.g) * 2 * math.pi
        self.fast[w, child], self.slow[w, child] = self.fast[w, p], self.slow[w, p]
        self.q[w, child] = 0.0  # stage 3: a newborn learns from scratch
        self.last_state[w, child], self.last_action[w, child] = self.last_state[w, p], self.last_action[w, p]
        self.last_gain[w, child] = 0.0
        self.alive[w, child] = True
        return dividing.sum(1)

    def conjugate(self, distances: Tensor) -> None:
        """A cell touching another takes each of the nearest one's genes with probability 1/2."""
        cfg = self.cfg
        nearest, partner = distances.min(-1)
        takes = (nearest < cfg.contact**2) & (torch.rand(nearest.shape, generator=self.g) < cfg.conjugation)
        genes = torch.rand(self.genome.shape, generator=self.g) < 0.5
        donor = self.genome.gather(1, partner[..., None].expand_as(self.genome))
        self.genome = torch.where(takes[..., None] & genes, donor, self.genome)

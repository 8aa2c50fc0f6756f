"""Evolving bacteria (Agüera y Arcas' talk): run-and-tumble cells that live, die, divide,
conjugate and mutate in a world with moving food, in three stages; no paper or code was published,
so the world (:mod:`engramlab.evolve.bacteria`) and these measurements are ours.

Arms (each simulates ``world.worlds`` independent restarts at once, from random genomes):

- ``stage1``: the genome is a Q-table from stimulus to {run, tumble}. The talk's claim:
  chemotaxis emerges and the colony follows the food.
- ``random-walk``: the control for stage 1. Every cell tumbles at E. coli's unbiased rate
  (``dt`` / 1 s per step, runs of about 1 s) whatever it senses, and nothing mutates, so
  selection has nothing to act on. Its cells are fed, divide and die as any others.
- ``blind-walk``: a second control for stage 1, added after the first published runs showed
  evolved stage-1 cells tumbling on about 60 % of steps whatever they sense. Every cell tumbles
  with probability ``blind_tumble`` (default 0.6, that measured rate) in every state and
  nothing mutates: a colony that moves as little as the evolved ones but senses nothing. The
  gap between its distance and stage 1's is what sensing adds.
- ``stage2``: a second table chooses {quiet, signal}; signalling costs energy and cells within
  ``world.signal_range`` sense it. The talk's claim: signalling persists across restarts.
- ``stage2-deaf``: the same, but nobody senses the signal (``world.signal_sensed = false``),
  so signalling is pure cost: the control for stage 2.
- ``stage3``: the genome is a reward map over what a cell feels (food eaten, hunger, touching
  another cell, tumbling); behaviour is learned within each lifetime by Q-learning from zero.
  The talk's claim: the means of the evolved reward maps are sensible, the spread across viable
  runs is huge.

Evolution is the simulation itself (births near food, deaths away from it); it runs for
``simulation.steps`` steps, checkpointed atomically with the world's random state, so a run
killed mid-way resumes to the same world. Then the one evaluation path continues every world for
``simulation.eval_steps`` steps from a fixed seed and measures: the mean distance of living cells
to the food centre (the random-walk control's is the reference), tumbling given the stimulus,
the share of cells signalling in each restart, and each viable restart's mean reward map.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from engramlab.config import Config
from engramlab.engine.checkpoint import Checkpoint
from engramlab.engine.experiment import Experiment, PaperNumber
from engramlab.engine.loop import Schedule, Stepper, run_loop
from engramlab.evolve.bacteria import (
    DIRECTIONS,
    FEELINGS,
    Census,
    World,
    WorldConfig,
    states,
    uniform_distance,
    unit_vectors,
)
from engramlab.experiments.evolution import bacteria_plots as plots

Arm = Literal["stage1", "random-walk", "stage2", "stage2-deaf", "stage3", "blind-walk"]  # new arms go last (seeds)
ARMS: tuple[str, ...] = Arm.__args__
STAGE = {"stage1": 1, "random-walk": 1, "stage2": 2, "stage2-deaf": 2, "stage3": 3, "blind-walk": 1}
WALKERS = ("random-walk", "blind-walk")  # fixed, blind genomes that do not mutate
# what one step adds to a world's running totals; the history holds their per-window means
TOTALS = ("cell_steps", "distance", "signalling", "births", "deaths")
HISTORY = ("population", "distance", "signalling", "births", "deaths")


class SimulationConfig(Config):
    steps: int = Field(40_000, ge=1, description="steps of evolution (world.dt seconds each)")
    eval_steps: int = Field(2000, ge=1, description="steps measured after evolution, from eval_seed")
    eval_seed: int = Field(999, description="seed of the measured steps (the same for every arm)")
    log_every: int = Field(500, ge=1, description="steps per history point (means over the window)")
    checkpoint_every: int = Field(5000, ge=1, description="write a checkpoint every this many steps")
    gif_frames: int = Field(120, ge=0, description="frames of the colony animation (0: none)")
    gif_every: int = Field(10, ge=1, description="steps between animation frames")

    @model_validator(mode="after")
    def _whole_windows(self):
        if self.steps % self.log_every:
            raise ValueError(f"simulation.steps ({self.steps}) must be a multiple of simulation.log_every")
        return self


class BacteriaConfig(Config):
    seed: int = Field(0, description="seed of the first genomes, positions and every random event")
    methods: list[Arm] = Field(list(ARMS), min_length=1, description="arms: " + ", ".join(ARMS))
    world: WorldConfig = WorldConfig()
    simulation: SimulationConfig = SimulationConfig()
    signalling_share: float = Field(
        0.5, gt=0, le=1, description="a restart keeps signalling when at least this share of its cells signal"
    )
    blind_tumble: float = Field(
        0.6, gt=0, lt=1, description="blind-walk: chance of tumbling per step, whatever a cell senses"
    )

    @property
    def simulated_minutes(self) -> float:
        """Bacterial time of the evolution, in minutes (for the deviations' text)."""
        return self.simulation.steps * self.world.dt / 60

    @model_validator(mode="after")
    def _stage_comes_from_the_arm(self):
        for name, default in (("stage", 1), ("signal_sensed", True)):
            if getattr(self.world, name) != default:
                raise ValueError(f"world.{name} is set by each arm (methods: {', '.join(ARMS)}); leave it unset")
        return self


def world_config(cfg: BacteriaConfig, arm: str) -> WorldConfig:
    update: dict[str, Any] = {"stage": STAGE[arm], "signal_sensed": arm != "stage2-deaf"}
    if arm in WALKERS:
        update["mutation"] = 0.0
    return cfg.world.model_copy(update=update)


def blind_walker(p: float) -> Tensor:
    """A stage-1 genome that tumbles with probability ``p`` in every state, blind to the food."""
    return torch.tensor([0.0, math.log(p / (1 - p))] * states(1))


def walker_tumble(cfg: BacteriaConfig, arm: str) -> float:
    """random-walk: dt / 1 s, E. coli's runs of about 1 s (Berg 1993); blind-walk: ``blind_tumble``."""
    return min(cfg.world.dt / 1.0, 0.5) if arm == "random-walk" else cfg.blind_tumble


def arm_seed(cfg: BacteriaConfig, arm: str) -> int:
    """Each arm its own worlds: the same seed gives the same run, arms do not share random draws."""
    return cfg.seed * 1000 + ARMS.index(arm)


class Colony(nn.Module):
    """The worlds of one arm with their history; its state_dict is a checkpoint of both."""

    def __init__(self, world: World, records: int, window_steps: int):
        super().__init__()
        self.world, self.window_steps = world, window_steps
        self.register_buffer("history", torch.full((records, world.cfg.worlds, len(HISTORY)), math.nan))
        self.register_buffer("window", torch.zeros(world.cfg.worlds, len(TOTALS)))  # running TOTALS

    def close_window(self, index: int) -> Tensor:
        """Turn the window's totals into history row ``index`` (means per world) and start a new one."""
        cells, distance, signalling, births, deaths = self.window.unbind(-1)
        row = torch.stack([cells / self.window_steps, distance / cells, signalling / cells, births, deaths], -1)
        self.history[index] = row  # distance and signalling are NaN where a world has died out
        self.window.zero_()
        return row


def totals(world: World, census: Census) -> Tensor:
    """(worlds, TOTALS) of one step: living cells, their summed distance to the food, signallers,
    births and deaths."""
    alive = world.alive
    return torch.stack(
        [
            alive.sum(1).float(),
            (world.distance_to_food() * alive).sum(1),
            (world.signalling & alive).sum(1).float(),
            census.births.float(),
            census.deaths.float(),
        ],
        -1,
    )


class Simulation(Stepper):
    """Evolution as the one loop's stepper: one world step per step, a history window closed every
    ``log_every`` steps, the whole colony and the world's random state checkpointed."""

    def __init__(self, colony: Colony):
        self.model, self.world = colony, colony.world

    def step(self, n: int) -> None:
        self.model.window += totals(self.world, self.world.step())

    def window(self, n: int, steps: int, seconds: float) -> dict[str, float]:
        row = self.model.close_window(n // self.model.window_steps - 1)
        metrics = {f"colony/{k}": float(v) for k, v in zip(HISTORY, row.nanmean(0)) if not math.isnan(v)}
        metrics["colony/viable"] = float((row[:, 0] > 0).float().mean())
        return metrics

    def state(self) -> Checkpoint:
        return Checkpoint(0, dict(self.model.state_dict()), None, {"world": self.world.g.get_state()})

    def restore(self, ckpt: Checkpoint) -> None:
        self.model.load_state_dict(ckpt.model)
        self.world.g.set_state(ckpt.rng["world"])

    def postfix(self, metrics: dict[str, float], monitor_metrics: dict[str, float]) -> dict[str, str]:
        return {k: f"{metrics[f'colony/{k}']:.0f}" for k in ("population", "distance") if f"colony/{k}" in metrics}


def measure(world: World, steps: int, seed: int) -> dict[str, Any]:
    """The one evaluation path: continue every world for ``steps`` steps from ``seed`` and
    measure distance to food, population, signalling, tumbling by stimulus and the reward maps."""
    world.g.manual_seed(seed)
    w, s = world.cfg.worlds, states(world.cfg.stage)
    total = torch.zeros(w, len(TOTALS))
    acted, tumbled = torch.zeros(w, s), torch.zeros(w, s)  # cells that acted in each stimulus, and tumbled
    with torch.no_grad():
        for _ in range(steps):
            before = world.alive.clone()  # the cells that acted this step (newborns did not)
            total += totals(world, world.step())
            acted.scatter_add_(1, world.last_state, before.float())
            tumbled.scatter_add_(1, world.last_state, (before & (world.last_action == 1)).float())
    cells = total[:, 0]
    viable = world.alive.any(1)
    pooled = acted.sum(0).view(-1, 2, 3), tumbled.sum(0).view(-1, 2, 3)  # (heard?, in food?, direction)
    results: dict[str, Any] = {
        "viable": viable.tolist(),
        "population": (cells / steps).tolist(),
        "distance": (total[:, 1] / cells).tolist(),
        "signalling": (total[:, 2] / cells).tolist(),
        "births": total[:, 3].tolist(),
        "deaths": total[:, 4].tolist(),
        "tumble": {d: float(pooled[1][..., i].sum() / pooled[0][..., i].sum()) for i, d in enumerate(DIRECTIONS)},
        "tumble_in_food": (pooled[1].sum(0) / pooled[0].sum(0)).tolist(),  # [out, in] x direction
    }
    if world.cfg.stage == 3:
        alive = world.alive[..., None].float()
        maps = (world.genome * alive).sum(1) / alive.sum(1)  # each world's mean reward map (NaN if extinct)
        results["reward_maps"] = maps.tolist()
    return results


def spread(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std())


class Bacteria(Experiment):
    name = "bacteria"
    description = "Evolving run-and-tumble bacteria: chemotaxis, a costly signal, evolved reward maps"
    Config = BacteriaConfig
    eval_keys = ("simulation.eval_", "simulation.gif_", "signalling_share")
    presets = {
        "quick": {},
        "paper": {
            "world": {"worlds": 64, "capacity": 512, "start_cells": 256, "food_supply": 32.0},
            "simulation": {"steps": 200_000, "eval_steps": 5000, "log_every": 2000, "checkpoint_every": 10_000},
        },
    }
    deviations = {
        "quick": [
            "the talk published no parameters: world, energy and food are ours; motion and sensing follow E. coli",
            "{cfg.world.worlds} restarts of at most {cfg.world.capacity} cells for {cfg.simulation.steps:,} steps of "
            "{cfg.world.dt:g} s (about {cfg.simulated_minutes:.0f} minutes of bacterial time)",
        ],
        "paper": [
            "the talk published no parameters: world, energy and food are ours; motion and sensing follow E. coli",
            "{cfg.world.worlds} restarts of at most {cfg.world.capacity} cells for {cfg.simulation.steps:,} steps of "
            "{cfg.world.dt:g} s",
        ],
    }
    paper = [
        PaperNumber(
            "stage1/distance_vs_random_walk",
            "stage 1: distance to food / the random walk's",
            None,
            "the colony follows the food (chemotaxis emerges)",
            "talk",
        ),
        PaperNumber(
            "stage2/restarts_signalling",
            "stage 2: share of restarts that keep signalling",
            None,
            "signalling persists despite its cost",
            "talk",
        ),
        PaperNumber(
            "stage3/viable_runs", "stage 3: viable runs (reward maps)", None, "huge variance, sensible means", "talk"
        ),
    ]

    def arms(self, cfg: BacteriaConfig) -> list[str]:
        return list(cfg.methods)

    def arm_cost(self, cfg: BacteriaConfig, arm: str) -> float:
        return float(STAGE[arm])  # hearing a signal and learning within a lifetime cost extra per step

    def build(self, cfg: BacteriaConfig, arm: str) -> Colony:
        wcfg = world_config(cfg, arm)
        genomes = None
        if arm in WALKERS:
            genomes = blind_walker(walker_tumble(cfg, arm)).expand(wcfg.worlds, wcfg.capacity, -1).clone()
        world = World(wcfg, torch.Generator().manual_seed(arm_seed(cfg, arm)), genomes)
        sim = cfg.simulation
        return Colony(world, sim.steps // sim.log_every, sim.log_every)

    def fit(self, cfg: BacteriaConfig, arm: str, model: Colony, directory: Path, *, progress, resume, device):
        """Evolution is the simulation itself, run by the one loop for ``simulation.steps`` steps."""
        sim = cfg.simulation
        schedule = Schedule(sim.steps, sim.log_every, sim.checkpoint_every)
        return run_loop(Simulation(model), schedule, directory, progress=progress, resume=resume)

    def evaluate(self, cfg: BacteriaConfig, arm: str, model: Colony) -> dict[str, Any]:
        world = copy.deepcopy(model.world)  # measured on a copy: the trained world stays as evolution left it
        results = measure(world, cfg.simulation.eval_steps, cfg.simulation.eval_seed)
        history = model.history
        results["history"] = {
            "step": [(i + 1) * cfg.simulation.log_every for i in range(len(history))],
            **{k: history[..., i].tolist() for i, k in enumerate(HISTORY)},
        }
        return results

    def summarize(self, cfg: BacteriaConfig, results: dict[str, dict[str, Any]]) -> dict[str, float]:
        metrics: dict[str, float] = {"uniform_distance": uniform_distance(cfg.world.size)}
        for arm, r in results.items():
            viable = np.asarray(r["viable"])
            metrics[f"{arm}/viable"] = float(viable.mean())
            if not viable.any():
                continue
            per_world = {k: np.asarray(r[k], dtype=float)[viable] for k in ("distance", "population", "signalling")}
            metrics[f"{arm}/distance_to_food"], metrics[f"{arm}/distance_to_food_std"] = spread(per_world["distance"])
            metrics[f"{arm}/population"] = float(per_world["population"].mean())
            metrics.update({f"{arm}/tumble_{d}": p for d, p in r["tumble"].items()})
            if STAGE[arm] == 2:
                share = per_world["signalling"]
                metrics[f"{arm}/signalling"], metrics[f"{arm}/signalling_std"] = spread(share)
                metrics[f"{arm}/restarts_signalling"] = float((share >= cfg.signalling_share).mean())
            if STAGE[arm] == 3:
                metrics.update(reward_map_metrics(arm, np.asarray(r["reward_maps"], dtype=float)[viable]))
        for walker in WALKERS:  # stage 1 against each control: stage1/distance_vs_random_walk, …_blind_walk
            if "stage1/distance_to_food" in metrics and f"{walker}/distance_to_food" in metrics:
                ratio = metrics["stage1/distance_to_food"] / metrics[f"{walker}/distance_to_food"]
                metrics[f"stage1/distance_vs_{walker.replace('-', '_')}"] = ratio
        return metrics

    def record(self, cfg: BacteriaConfig, arm: str, model: Colony, out_dir: Path) -> list[Path]:
        """An animation of the first restart of the first evolving arm, after evolution, following the
        food from the evaluation seed (a copy of the world: the trained one stays as it is)."""
        animated = next((a for a in cfg.methods if a in ("stage1", "stage2", "stage3")), None)
        if arm != animated or not cfg.simulation.gif_frames:
            return []
        world = copy.deepcopy(model.world)
        world.g.manual_seed(cfg.simulation.eval_seed)
        return [
            plots.colony_gif(world, arm, cfg.simulation.gif_frames, cfg.simulation.gif_every, out_dir / "colony.gif")
        ]

    def plot(self, cfg: BacteriaConfig, results: dict[str, dict[str, Any]], run_dir: Path, out_dir: Path):
        return plots.all_plots(cfg, results, {arm: STAGE[arm] for arm in results}, out_dir)


def reward_map_metrics(arm: str, maps: np.ndarray) -> dict[str, float]:
    """Per-feeling mean and spread of the viable runs' reward maps, raw and as unit vectors (a
    reward map times a positive number teaches the same greedy behaviour, so only its direction
    is comparable across runs)."""
    metrics = {f"{arm}/viable_runs": float(len(maps))}
    direction = unit_vectors(maps)
    for i, feeling in enumerate(FEELINGS):
        metrics[f"{arm}/reward_{feeling}"], metrics[f"{arm}/reward_{feeling}_std"] = spread(maps[:, i])
        metrics[f"{arm}/direction_{feeling}"], metrics[f"{arm}/direction_{feeling}_std"] = spread(direction[:, i])
        metrics[f"{arm}/positive_{feeling}"] = float((maps[:, i] > 0).mean())
    return metrics


EXPERIMENT = Bacteria()

"""Evolution: the stepper of the one loop (:mod:`engramlab.engine.loop`) for genomes that are
evolved rather than trained by gradient; the counterpart of :func:`engramlab.engine.train.train`.

``evolve(model, fitness, cfg, directory, …)`` needs only:

- ``model``: an ``nn.Module`` whose parameters, flattened in order, are the genome (its
  parameters hold the strategy's mean when the loop returns, so the runner evaluates and saves it
  like any trained model);
- ``fitness(population, generator) -> (population,)``: every genome of a ``(population, dim)``
  tensor scored in one batched call (higher is better), on data drawn from ``generator``;
- optionally ``monitor(model) -> metrics``: a cheap evaluation of the mean genome every
  ``eval_every`` generations.

It writes the same run directory as gradient training: ``metrics.jsonl`` and TensorBoard (best,
mean and spread of the population's fitness, step size), an atomic ``checkpoint.safetensors``
(mean genome, strategy state, RNG states, generation) and a progress bar; ``resume`` continues an
evolution killed mid-run from its saved strategy state, to the same result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from engramlab.config import Config
from engramlab.engine.checkpoint import Checkpoint
from engramlab.engine.loop import Monitor, NonFinite, Schedule, Stepper, TrainResult, run_loop
from engramlab.engine.progress import Progress
from engramlab.evolve.strategies import CMAES, AntitheticES, Strategy

Fitness = Callable[[Tensor, torch.Generator], Tensor]  # (population, dim) genomes -> (population,) scores


class EvolveConfig(Config):
    strategy: Literal["cma", "sep-cma", "antithetic"] = Field(
        "sep-cma",
        description="cma: full-covariance CMA-ES; sep-cma: diagonal CMA-ES (pycma CMA_diagonal, linear in the "
        "genome's size); antithetic: mirrored-sampling ES with Adam (Salimans et al. 2017)",
    )
    generations: int = Field(100, ge=1, description="number of generations (ask/tell rounds)")
    population: int = Field(64, ge=2, description="genomes evaluated per generation")
    sigma: float = Field(0.1, gt=0, description="initial (CMA) or fixed (antithetic) mutation step size")
    lr: float = Field(0.025, gt=0, description="Adam learning rate of the antithetic ES (VSML: 0.025)")
    log_every: int = Field(1, ge=1, description="write fitness statistics every this many generations")
    eval_every: int = Field(10, ge=1, description="run the monitoring evaluation every this many generations")
    checkpoint_every: int = Field(10, ge=1, description="write a checkpoint every this many generations")

    @model_validator(mode="after")
    def _check(self):
        if self.strategy == "antithetic" and self.population % 2:
            raise ValueError(f"evolve.population ({self.population}) must be even for the antithetic strategy")
        return self


def make_strategy(cfg: EvolveConfig, x0: Tensor, seed: int) -> Strategy:
    if cfg.strategy == "antithetic":
        return AntitheticES(x0, cfg.sigma, cfg.population, lr=cfg.lr, seed=seed)
    return CMAES(x0, cfg.sigma, cfg.population, diagonal=cfg.strategy == "sep-cma", seed=seed)


def fitness_statistics(fitness: Tensor) -> dict[str, float]:
    finite = fitness[torch.isfinite(fitness)]
    return {
        "fitness/best": float(finite.max()),
        "fitness/mean": float(finite.mean()),
        "fitness/median": float(finite.median()),
        "fitness/std": float(finite.std()) if len(finite) > 1 else 0.0,
        "fitness/non_finite": float(len(fitness) - len(finite)),
    }


class EvolutionStepper(Stepper):
    """One generation per step: ask the strategy for a population, score it in one batched call, tell
    the strategy; logs the latest generation's fitness statistics and the step size."""

    unit = "generations"

    def __init__(self, model: nn.Module, fitness: Fitness, cfg: EvolveConfig, *, seed: int):
        self.model, self.fitness = model, fitness
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed * 1_000_003)
        self.strategy = make_strategy(cfg, parameters_to_vector(model.parameters()).detach(), seed)
        self.stats: dict[str, float] = {}

    def step(self, n: int) -> None:
        population = self.strategy.ask()
        with torch.no_grad():
            scores = self.fitness(population, self.generator).detach().double()
        finite = torch.isfinite(scores)
        if not finite.any():
            raise NonFinite("every fitness is NaN or inf")
        self.stats = fitness_statistics(scores)
        # a genome whose lifetime blew up ranks below the whole generation; it does not stop the run
        self.strategy.tell(torch.where(finite, scores, scores[finite].min() - 1))

    def window(self, n: int, steps: int, seconds: float) -> dict[str, float]:
        return {**self.stats, "evolve/sigma": self.strategy.sigma}

    def monitored(self) -> nn.Module:
        """The model holding the strategy's mean genome."""
        vector_to_parameters(self.strategy.mean, self.model.parameters())
        return self.model

    def state(self) -> Checkpoint:
        rng = {"torch": torch.get_rng_state(), "data0": self.generator.get_state()}
        return Checkpoint(0, dict(self.monitored().state_dict()), None, rng, strategy=self.strategy.state_dict())

    def restore(self, ckpt: Checkpoint) -> None:
        self.model.load_state_dict(ckpt.model)
        self.strategy.load_state_dict(ckpt.strategy)
        torch.set_rng_state(ckpt.rng["torch"])
        self.generator.set_state(ckpt.rng["data0"])

    def postfix(self, metrics: dict[str, float], monitor_metrics: dict[str, float]) -> dict[str, str]:
        return {k: f"{self.stats[f'fitness/{k}']:.3f}" for k in ("best", "mean") if f"fitness/{k}" in self.stats}


def evolve(
    model: nn.Module,
    fitness: Fitness,
    cfg: EvolveConfig,
    directory,
    *,
    seed: int,
    monitor: Monitor | None = None,
    progress: Progress | None = None,
    resume: bool = False,
) -> TrainResult:
    """Evolve ``model``'s parameters for ``cfg.generations`` generations; with ``resume``,
    continue from the checkpoint in ``directory`` and end as an uninterrupted run would. The model
    holds the strategy's mean genome when it returns."""
    stepper = EvolutionStepper(model, fitness, cfg, seed=seed)
    schedule = Schedule(cfg.generations, cfg.log_every, cfg.checkpoint_every, cfg.eval_every)
    result = run_loop(stepper, schedule, directory, monitor=monitor, progress=progress, resume=resume)
    stepper.monitored()
    return result

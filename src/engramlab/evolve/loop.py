"""The one evolution loop: the counterpart of :func:`engramlab.engine.train.train` for genomes that
are evolved rather than trained by gradient.

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
from engramlab.engine.checkpoint import CHECKPOINT_NAME, Checkpoint, load_checkpoint, save_checkpoint
from engramlab.engine.progress import Progress
from engramlab.engine.rundir import MetricsLog, Stopwatch
from engramlab.engine.train import TrainResult, run_monitor
from engramlab.errors import NonFiniteLossError
from engramlab.evolve.strategies import CMAES, AntitheticES, Strategy


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


def evolve(
    model: nn.Module,
    fitness: Callable[[Tensor, torch.Generator], Tensor],
    cfg: EvolveConfig,
    directory,
    *,
    seed: int,
    monitor: Callable[[nn.Module], dict[str, float]] | None = None,
    progress: Progress | None = None,
    resume: bool = False,
) -> TrainResult:
    """Evolve ``model``'s parameters for ``cfg.generations`` generations; with ``resume``,
    continue from the checkpoint in ``directory`` and end as an uninterrupted run would."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed * 1_000_003)
    strategy = make_strategy(cfg, parameters_to_vector(model.parameters()).detach(), seed)
    start, elapsed, monitor_metrics, train_metrics = 0, 0.0, {}, {}
    checkpoint_path = directory / CHECKPOINT_NAME
    if resume and checkpoint_path.exists():
        ckpt = load_checkpoint(checkpoint_path)
        model.load_state_dict(ckpt.model)
        strategy.load_state_dict(ckpt.strategy)
        torch.set_rng_state(ckpt.rng["torch"])
        generator.set_state(ckpt.rng["data0"])
        start, elapsed = ckpt.step, float(ckpt.extra.get("wall_time_s", 0.0))
        monitor_metrics = ckpt.extra.get("monitor", {})

    log = MetricsLog(directory, resume_step=start)
    clock, window_clock, window = Stopwatch(offset=elapsed), Stopwatch(), 0
    if progress is not None:
        progress.start(total=cfg.generations, initial=start)

    def checkpoint(generation: int) -> None:
        vector_to_parameters(strategy.mean, model.parameters())
        rng = {"torch": torch.get_rng_state(), "data0": generator.get_state()}
        extra = {"wall_time_s": clock.elapsed, "monitor": monitor_metrics}
        save_checkpoint(
            checkpoint_path, Checkpoint(generation, dict(model.state_dict()), None, rng, extra, strategy.state_dict())
        )

    try:
        for generation in range(start + 1, cfg.generations + 1):
            population = strategy.ask()
            with torch.no_grad():
                scores = fitness(population, generator).detach().double()
            if not torch.isfinite(scores).any():
                kept = f"last good checkpoint kept: {checkpoint_path}" if checkpoint_path.exists() else "no checkpoint"
                raise NonFiniteLossError(f"every fitness is NaN or inf at generation {generation}; stopped ({kept})")
            stats = fitness_statistics(scores)
            finite = torch.isfinite(scores)
            # a genome whose lifetime blew up ranks below the whole generation; it does not stop the run
            strategy.tell(torch.where(finite, scores, scores[finite].min() - 1))
            window += 1
            if generation % cfg.log_every == 0 or generation == cfg.generations:
                train_metrics = {**stats, "evolve/sigma": strategy.sigma}
                train_metrics["time/generations_per_s"] = window / max(window_clock.elapsed, 1e-9)
                train_metrics["time/elapsed_s"] = clock.elapsed
                log.log(generation, train_metrics)
                window, window_clock = 0, Stopwatch()
            if monitor is not None and (generation % cfg.eval_every == 0 or generation == cfg.generations):
                vector_to_parameters(strategy.mean, model.parameters())
                monitor_metrics = run_monitor(monitor, model)
                log.log(generation, monitor_metrics)
            if generation % cfg.checkpoint_every == 0 or generation == cfg.generations:
                checkpoint(generation)
            if progress is not None:
                shown = {"best": stats["fitness/best"], "mean": stats["fitness/mean"]}
                progress.update(generation, {k: f"{v:.3f}" for k, v in shown.items()})
    finally:
        log.close()
        if progress is not None:
            progress.close()
    vector_to_parameters(strategy.mean, model.parameters())
    return TrainResult(cfg.generations, clock.elapsed, train_metrics, monitor_metrics, start)

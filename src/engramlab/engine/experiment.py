"""What an experiment is: a config, presets, the models it trains ("arms"), and the paper's numbers.

An experiment file subclasses :class:`Experiment` and fills in a handful of methods; the runner
(``engramlab.engine.runner``) does the rest with the one training loop and the one
evaluation path. Every arm is trained on the same seeded data stream, so arms are compared on
identical data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from engramlab.config import Config
from engramlab.engine.deviations import format_deviations
from engramlab.engine.train import train


@dataclass(frozen=True)
class PaperNumber:
    """A number the paper reports, for the report table next to ours.

    ``key`` names a metric in the run's ``summary.json`` (``metrics`` section); ``value`` is
    the paper's number (None when the paper states it only in words); ``text`` qualifies it or,
    without a value, says it in the paper's words.
    """

    key: str
    label: str
    value: float | None
    text: str
    source: str


class Experiment:
    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[Config]]
    presets: ClassVar[dict[str, dict[str, Any]]]
    paper: ClassVar[list[PaperNumber]] = []
    # per preset: every way it differs from the paper, as templates of the run's config (deviations_of)
    deviations: ClassVar[dict[str, list[str]]] = {}
    # keys `engram eval --set` may change: none of them may change a trained model's parameters
    eval_keys: ClassVar[tuple[str, ...]] = ("task.", "eval.")
    # old dotted key -> new dotted key: a saved config.yaml is read under today's names
    # (engramlab.config.rename_keys), so run directories written before a rename still load
    renamed_keys: ClassVar[dict[str, str]] = {}

    # --- what to train -------------------------------------------------------------------
    def prepare(self, cfg: Config) -> Config:
        """Complete the config before a new run writes it (e.g. the vocabulary of a data set, so that
        the saved config alone rebuilds the models). Must be idempotent: the command line calls it
        before making the run directory, the runner again. Default: unchanged."""
        return cfg

    def arms(self, cfg: Config) -> list[str]:
        """Names of the models this experiment trains (each in its own sub-directory)."""
        raise NotImplementedError

    def first_arms(self, cfg: Config) -> list[str]:
        """Arms to train and evaluate before any other starts (the others may read their
        checkpoints, e.g. Frozen's language model). Default: none."""
        return []

    def build(self, cfg: Config, arm: str) -> nn.Module:
        """A fresh model whose ``forward(batch)`` returns ``(loss, logs)``."""
        raise NotImplementedError

    def train_config(self, cfg: Config, arm: str) -> Any:
        """The training schedule (a ``TrainConfig``) of one arm. Default: ``cfg.train`` for every arm."""
        return cfg.train

    def fit(self, cfg: Config, arm: str, model: nn.Module, directory: Path, *, progress, resume: bool, device: str):
        """Train one arm into ``directory`` and return a ``TrainResult``. Default: the one loop with
        the gradient stepper (:func:`engramlab.engine.train.train`) on :meth:`sampler` with
        :meth:`train_config`; arms trained otherwise run the same loop with their own stepper
        (evolution: :func:`engramlab.evolve.loop.evolve`; the bacteria's simulation)."""
        return train(
            model,
            self.sampler(cfg, arm),
            self.train_config(cfg, arm),
            directory,
            seed=self.seed_of(cfg),
            monitor=self.monitor(cfg, arm),
            progress=progress,
            resume=resume,
            device=device,
        )

    def sampler(self, cfg: Config, arm: str) -> Callable[[int, torch.Generator], Any]:
        """``sample(batch_size, generator) -> batch`` for training."""
        raise NotImplementedError

    def monitor(self, cfg: Config, arm: str) -> Callable[[nn.Module], dict[str, float]] | None:
        """A cheap evaluation run during training (learning curves)."""
        return None

    # --- the one evaluation path ---------------------------------------------------------
    def evaluate(self, cfg: Config, arm: str, model: nn.Module) -> dict[str, Any]:
        """Full evaluation of a trained arm: JSON-able results (goes into the arm's summary)."""
        raise NotImplementedError

    def summarize(self, cfg: Config, results: dict[str, dict[str, Any]]) -> dict[str, float]:
        """Headline metrics of the whole run (flat ``{key: number}``; keys match ``paper``)."""
        raise NotImplementedError

    def record(self, cfg: Config, arm: str, model: nn.Module, out_dir: Path) -> list[Path]:
        """Evaluation outputs that are not numbers, e.g. an animation of the trained ``model`` acting,
        written into ``out_dir``; called after :meth:`evaluate` with the same model (which
        ``evaluate`` must leave as trained). Returns their paths. Default: none."""
        return []

    def plot(self, cfg: Config, results: dict[str, dict[str, Any]], run_dir: Path, out_dir: Path) -> list[Path]:
        """Write PNG plots of the results of every arm into ``out_dir``; return their paths."""
        return []

    # --- helpers -------------------------------------------------------------------------
    def deviations_of(self, cfg: Config, preset: str | None) -> list[str]:
        """The preset's deviations from the paper, with the values of ``cfg``, the run's resolved config
        (``--set`` overrides included): each line of :attr:`deviations` is a template such as
        ``"n = {cfg.task.n} (paper: 96)"``, formatted by :mod:`engramlab.engine.deviations`."""
        return format_deviations(self.deviations.get(preset or "", []), cfg)

    def seed_of(self, cfg: Config) -> int:
        return int(cfg.seed)

    def arm_cost(self, cfg: Config, arm: str) -> float:
        """Relative training cost, to start the slowest arms first."""
        return 1.0

"""What the memory experiments share: one model per kind of memory, trained and evaluated on one task.

A memory experiment (``copy.py``, ``recall.py``, ``mqar.py``, ``passkey.py``) names a task,
its presets and the paper's numbers; this module supplies
the rest, so that every kind of memory is trained by the one loop and measured by the one
evaluation path on identical data:

- **arms** are kinds of memory (``methods: [lstm, ntm, attention, ...]``); every arm starts from
  the shared ``model`` config, changed by ``arm_models[kind]`` (e.g. one layer without
  feed-forward for the NTM);
- **matched budgets**: with ``budget`` set, each arm's width ``d_model`` is chosen so that its
  parameter count is as close to ``budget`` as the width allows (:func:`match_budget`);
- **evaluation** runs every setting in ``eval.settings`` (task keys changed without retraining:
  longer sequences, more items, more pairs, longer contexts) on ``eval.samples`` fresh sequences.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field, ValidationError, model_validator

from engramlab.config import Config
from engramlab.engine.experiment import Experiment
from engramlab.engine.train import TrainConfig
from engramlab.experiments.memory import plots as memory_plots
from engramlab.memory import MEMORY_KINDS
from engramlab.models.sequence import MemoryModel, MemoryModelConfig

# Training recipes of the NTM tasks (copy, recall). The paper (Graves et al. 2014, §4) used RMSProp
# with momentum 0.9, lr 1e-4, gradients clipped to (-10, 10) and batch 1; Adam with the gradient norm
# clipped to 10 and batch 16 is the practical equivalent (see the deviations of each experiment).
NTM_QUICK_TRAIN = {
    "steps": 4000,
    "batch_size": 16,
    "lr": 1e-3,
    "optimizer": "adam",
    "grad_clip": 10.0,
    "eval_every": 250,
    "checkpoint_every": 250,
    "log_every": 50,
}
NTM_PAPER_TRAIN = {**NTM_QUICK_TRAIN, "steps": 100_000, "lr": 1e-4, "eval_every": 2000, "checkpoint_every": 2000}
# Graves et al. 2014, §4: one NTM layer, a 128 x 20 memory, a controller of 100 units (the
# experiment picks its kind), against a 3 x 256 LSTM
NTM_PAPER_MODEL = {"d_model": 100, "layers": 1, "ffn": False, "slots": 128, "slot_width": 20, "controller_size": 100}
NTM_PAPER_ARMS = {"lstm": {"layers": 3, "d_model": 256}}
ONE_LAYER = {"layers": 1, "ffn": False}  # a bare recurrent or NTM layer, no feed-forward sublayer


class MemoryEvalConfig(Config):
    samples: int = Field(1000, ge=1, description="fresh sequences per evaluation setting")
    batch_size: int = Field(100, ge=1, description="sequences per evaluation batch")
    monitor_samples: int = Field(200, ge=1, description="sequences in the cheap evaluation during training")
    seed: int = Field(1234, description="seed of the evaluation data (the same for every arm)")
    settings: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"train": {}},
        description="name -> task keys changed for that evaluation (e.g. {2x: {min_length: 40, max_length: 40}}); "
        "'train' is the training distribution",
    )


class MemoryExperimentConfig(Config):
    """Fields every memory experiment has; each experiment adds ``task``."""

    seed: int = Field(0, description="seed of initialisation and training data (the same for every arm)")
    model: MemoryModelConfig = MemoryModelConfig()
    methods: list[str] = Field(
        ["lstm", "attention"], min_length=1, description=f"arms: kinds of memory ({', '.join(MEMORY_KINDS)})"
    )
    arm_models: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="model keys that differ per arm, e.g. {ntm: {layers: 1, ffn: false}}"
    )
    budget: int | None = Field(None, ge=100, description="target parameter count: each arm's d_model is fitted to it")
    train: TrainConfig = TrainConfig()
    eval: MemoryEvalConfig = MemoryEvalConfig()

    @model_validator(mode="after")
    def _check(self):
        for field, kinds in (("methods", self.methods), ("arm_models", self.arm_models)):
            for kind in kinds:
                if kind not in MEMORY_KINDS:
                    raise ValueError(f"{field}: unknown memory kind '{kind}' (allowed: {', '.join(MEMORY_KINDS)})")
        for kind in self.methods:  # arm_models of kinds not in methods are kept for a later --set methods=...
            arm_model_config(self, kind)
        task = getattr(self, "task", None)
        for setting in self.eval.settings if task is not None else ():
            changed_task(task, self.eval.settings, setting)
        return self


def first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return (f"{where}: " if where else "") + error["msg"].removeprefix("Value error, ")


def changed_task(task: Config, settings: dict[str, dict[str, Any]], name: str) -> Config:
    """The task config of one evaluation setting (its keys changed, validated)."""
    try:
        return type(task).model_validate({**task.model_dump(), **settings[name]})
    except ValidationError as exc:
        raise ValueError(f"eval.settings.{name}: {first_error(exc)}") from None


def arm_model_config(cfg: MemoryExperimentConfig, kind: str) -> MemoryModelConfig:
    """The shared model config with this arm's memory kind and its own changes."""
    try:
        return MemoryModelConfig.model_validate(
            {**cfg.model.model_dump(), "memory": kind, **cfg.arm_models.get(kind, {})}
        )
    except ValidationError as exc:
        raise ValueError(f"arm_models.{kind}: {first_error(exc)}") from None


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def match_budget(
    build: Callable[[int], torch.nn.Module], budget: int, step: int, low: int = 4, high: int = 2048
) -> int:
    """The width (a multiple of ``step``) whose model's parameter count is closest to ``budget``.

    Parameters grow monotonically with width, so a bisection over multiples of ``step`` finds
    the two widths around the budget; the closer one wins.
    """
    lo, hi = max(1, low // step), max(1, high // step)
    while lo < hi:
        mid = (lo + hi) // 2
        if count_parameters(build(mid * step)) < budget:
            lo = mid + 1
        else:
            hi = mid
    candidates = [w for w in (lo - 1, lo) if w >= max(1, low // step)]
    return step * min(candidates, key=lambda w: abs(count_parameters(build(w * step)) - budget))


class MemoryTaskExperiment(Experiment):
    """Base of the memory experiments: subclasses set ``name``, ``description``, ``Config``, presets,
    ``paper``, ``deviations`` and :meth:`make_task`."""

    headline_metric: ClassVar[str] = "accuracy"  # or "bit_errors" for the NTM tasks
    # the options a trained model can be evaluated with (MemoryKind.eval_options): XL's cache length
    # (Dai et al. 2019, §3.2 lengthen it at evaluation), the kNN memory's index, neighbours and capacity
    eval_keys: ClassVar[tuple[str, ...]] = (
        ("task.", "eval.")
        + tuple(f"model.{key}" for kind in MEMORY_KINDS.values() for key in kind.eval_options)
        + tuple(f"arm_models.{kind.name}.{key}" for kind in MEMORY_KINDS.values() for key in kind.eval_options)
    )

    def make_task(self, task_cfg: Config):
        raise NotImplementedError

    # --- what to train -------------------------------------------------------------------
    def arms(self, cfg: MemoryExperimentConfig) -> list[str]:
        return list(dict.fromkeys(cfg.methods))

    def model_config(self, cfg: MemoryExperimentConfig, arm: str) -> MemoryModelConfig:
        arm_cfg = arm_model_config(cfg, arm)
        if cfg.budget is None or "d_model" in cfg.arm_models.get(arm, {}):
            return arm_cfg
        step = 2 * arm_cfg.heads if arm_cfg.splits_width() else 2
        width = match_budget(lambda d: self._model(cfg, arm_cfg.model_copy(update={"d_model": d})), cfg.budget, step)
        return arm_cfg.model_copy(update={"d_model": width})

    def _model(self, cfg: MemoryExperimentConfig, model_cfg: MemoryModelConfig) -> MemoryModel:
        task = self.make_task(cfg.task)
        return MemoryModel(model_cfg, task.input_size, task.output_size, tokens=task.tokens)

    def build(self, cfg: MemoryExperimentConfig, arm: str) -> MemoryModel:
        model_cfg = self.model_config(cfg, arm)  # may build models to match the budget: seed after it
        torch.manual_seed(cfg.seed)  # the run's seed decides the initial weights (every arm draws from it)
        return self._model(cfg, model_cfg)

    def sampler(self, cfg: MemoryExperimentConfig, arm: str) -> Callable:
        task = self.make_task(cfg.task)
        return lambda batch_size, generator: task.sample(batch_size, generator)

    def monitor(self, cfg: MemoryExperimentConfig, arm: str) -> Callable:
        task = self.make_task(cfg.task)

        def monitor(model: MemoryModel) -> dict[str, float]:
            generator = torch.Generator().manual_seed(cfg.eval.seed)
            metrics = model.evaluate(task.sample(cfg.eval.monitor_samples, generator))
            return {{"correct": "accuracy"}.get(key, key): value.mean().item() for key, value in metrics.items()}

        return monitor

    # --- the one evaluation path ---------------------------------------------------------
    def task_for(self, cfg: MemoryExperimentConfig, setting: str):
        return self.make_task(changed_task(cfg.task, cfg.eval.settings, setting))

    def evaluate(self, cfg: MemoryExperimentConfig, arm: str, model: MemoryModel) -> dict[str, Any]:
        results: dict[str, Any] = {"parameters": count_parameters(model), "d_model": model.cfg.d_model}
        for setting in cfg.eval.settings:
            task = self.task_for(cfg, setting)
            generator = torch.Generator().manual_seed(cfg.eval.seed)
            sums: dict[str, float] = {}
            for start in range(0, cfg.eval.samples, cfg.eval.batch_size):
                size = min(cfg.eval.batch_size, cfg.eval.samples - start)
                for key, value in model.evaluate(task.sample(size, generator)).items():
                    sums[key] = sums.get(key, 0.0) + value.sum().item()
            results[setting] = {key: total / cfg.eval.samples for key, total in sums.items()}
            results[setting]["task"] = task.cfg.model_dump()
        return results

    def summarize(self, cfg: MemoryExperimentConfig, results: dict[str, dict[str, Any]]) -> dict[str, float]:
        metrics = {}
        for arm, r in results.items():
            metrics[f"{arm}/parameters"] = r["parameters"]
            for setting in cfg.eval.settings:
                for key in ("correct", "solved", "bit_errors"):
                    if key in r[setting]:
                        name = {"correct": "accuracy"}.get(key, key)
                        metrics[f"{arm}/{setting}_{name}"] = r[setting][key]
        return metrics

    def plot(self, cfg: MemoryExperimentConfig, results: dict[str, dict[str, Any]], run_dir: Path, out_dir: Path):
        return memory_plots.plot_all(self, cfg, results, run_dir, out_dir)

"""The experiment registry: one module per experiment, imported on demand."""

from __future__ import annotations

import importlib

from engramlab.errors import ConfigError
from engramlab.experiments.base import Experiment, PaperNumber

# name -> module defining ``EXPERIMENT``; add a line here to register a new experiment
REGISTRY: dict[str, str] = {
    "pondernet-parity": "engramlab.experiments.pondernet_parity",
    "memory-copy": "engramlab.experiments.memory_copy",
    "memory-recall": "engramlab.experiments.memory_recall",
    "memory-mqar": "engramlab.experiments.memory_mqar",
    "memory-passkey": "engramlab.experiments.memory_passkey",
    "memn2n-babi": "engramlab.experiments.memn2n_babi",
    "memo-pai": "engramlab.experiments.memo_pai",
    "pondernet-babi": "engramlab.experiments.pondernet_babi",
    "memo-babi": "engramlab.experiments.memo_babi",
    "generalist": "engramlab.experiments.generalist",
    "generalist-finetune": "engramlab.experiments.generalist_finetune",
    "evolved-rule": "engramlab.experiments.evolved_rule",
    "bacteria": "engramlab.experiments.bacteria",
}

__all__ = ["Experiment", "PaperNumber", "REGISTRY", "get_experiment", "all_experiments"]


def get_experiment(name: str) -> Experiment:
    if name not in REGISTRY:
        raise ConfigError(f"unknown experiment '{name}' (available: {', '.join(sorted(REGISTRY))})")
    return importlib.import_module(REGISTRY[name]).EXPERIMENT


def all_experiments() -> list[Experiment]:
    return [get_experiment(name) for name in sorted(REGISTRY)]

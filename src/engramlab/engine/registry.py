"""The registry: experiment names, each mapped to the module that defines it (``EXPERIMENT``).

A module is imported only when its experiment is asked for, so ``engram list`` or a run of one
experiment does not import every other experiment's dependencies (gymnasium, FAISS, ...). The
catalogue itself lives with the experiments (``engramlab.experiments``); the engine only reads it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from engramlab.errors import ConfigError

if TYPE_CHECKING:  # the registry names experiments without importing them (or PyTorch)
    from engramlab.engine.experiment import Experiment


class Registry(Mapping[str, str]):
    """``name -> module`` of every experiment; :meth:`experiment` imports one on demand."""

    def __init__(self, modules: Mapping[str, str]):
        self.modules = dict(modules)

    def __getitem__(self, name: str) -> str:
        return self.modules[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.modules)

    def __len__(self) -> int:
        return len(self.modules)

    def experiment(self, name: str) -> Experiment:
        if name not in self.modules:
            raise ConfigError(f"unknown experiment '{name}' (available: {', '.join(sorted(self.modules))})")
        return importlib.import_module(self.modules[name]).EXPERIMENT

    def experiments(self) -> list[Experiment]:
        return [self.experiment(name) for name in sorted(self.modules)]

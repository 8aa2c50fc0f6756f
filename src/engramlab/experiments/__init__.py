"""The catalogue of reproduced experiments, grouped by family; each family is a package holding
its experiments (one file each), the code they share and their plots:

- ``ponder/``: adaptive computation (PonderNet, ACT, fixed depth on parity; MEMO on paired
  associative inference);
- ``memory/``: every kind of memory on the NTM tasks, MQAR and passkey retrieval;
- ``babi/``: MemN2N, a Universal Transformer with PonderNet, and MEMO on bAbI;
- ``generalist/``: the Gato-style generalist and its transfer to held-out tasks;
- ``evolution/``: the evolved learning rule and the evolving bacteria;
- ``offline/``: offline RL on mixed-skill data (BC, filtered and return-conditioned BC, the
  AlphaStar Unplugged recipe, IQL);
- ``multimodal/``: Frozen and Flamingo (a frozen LM learns to see from captions and binds new
  words to images in context).

To register a new experiment, add one line to ``REGISTRY`` below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engramlab.engine.registry import Registry

if TYPE_CHECKING:  # importing the engine's Experiment imports PyTorch: not needed to name experiments
    from engramlab.engine.experiment import Experiment

# name -> module defining ``EXPERIMENT``
REGISTRY = Registry(
    {
        "pondernet-parity": "engramlab.experiments.ponder.pondernet_parity",
        "memo-pai": "engramlab.experiments.ponder.memo_pai",
        "memory-copy": "engramlab.experiments.memory.copy",
        "memory-recall": "engramlab.experiments.memory.recall",
        "memory-mqar": "engramlab.experiments.memory.mqar",
        "memory-passkey": "engramlab.experiments.memory.passkey",
        "memn2n-babi": "engramlab.experiments.babi.memn2n",
        "pondernet-babi": "engramlab.experiments.babi.pondernet",
        "memo-babi": "engramlab.experiments.babi.memo",
        "generalist": "engramlab.experiments.generalist.generalist",
        "generalist-finetune": "engramlab.experiments.generalist.finetune",
        "evolved-rule": "engramlab.experiments.evolution.evolved_rule",
        "bacteria": "engramlab.experiments.evolution.bacteria",
        "frozen": "engramlab.experiments.multimodal.frozen",
        "offline-rl": "engramlab.experiments.offline.offline_rl",
        "grid-cells": "engramlab.experiments.space.grid_cells",
        "coberl": "engramlab.experiments.rl.coberl",
    }
)

__all__ = ["REGISTRY", "get_experiment", "all_experiments"]


def get_experiment(name: str) -> Experiment:
    return REGISTRY.experiment(name)


def all_experiments() -> list[Experiment]:
    return REGISTRY.experiments()

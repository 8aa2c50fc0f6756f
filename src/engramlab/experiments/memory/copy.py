"""The NTM copy task: external memory vs a recurrent state, and copying beyond the training lengths.

Paper: Graves, Wayne & Danihelka 2014, "Neural Turing Machines", arXiv 1410.5401, §4.1: random
sequences of 8-bit vectors, length 1–20, then a delimiter; the model must output the sequence
again. The NTM learns it fast and keeps copying at lengths 30, 50 and 120, never seen in
training; the LSTM degrades beyond 20 (Fig. 3–5). Cost: wrong bits per sequence.

Presets
- ``paper``: §4.1 as published: 8 bits, lengths 1–20, memory 128 × 20, one read and one write
  head, LSTM controller with 100 units; batch 1 in the paper (here 16), RMSProp (here Adam with
  gradient clipping); evaluated at lengths 1–20, 40 and 100 (the paper shows 10, 20, 30, 50, 120).
- ``quick``: the same task and memory, fewer updates and a smaller controller; see ``deviations``.
"""

from __future__ import annotations

from engramlab.engine.experiment import PaperNumber
from engramlab.experiments.memory.common import (
    NTM_PAPER_ARMS,
    NTM_PAPER_MODEL,
    NTM_PAPER_TRAIN,
    NTM_QUICK_TRAIN,
    ONE_LAYER,
    MemoryExperimentConfig,
    MemoryTaskExperiment,
)
from engramlab.tasks.copy import CopyConfig, CopyTask


class CopyExperimentConfig(MemoryExperimentConfig):
    task: CopyConfig = CopyConfig()


LONGER = {
    "train": {},
    "length40": {"min_length": 40, "max_length": 40},
    "length100": {"min_length": 100, "max_length": 100},
}


class MemoryCopy(MemoryTaskExperiment):
    name = "memory-copy"
    description = "NTM copy task (Graves et al. 2014 §4.1): external memory vs LSTM and attention, 2x and 5x longer"
    Config = CopyExperimentConfig
    headline_metric = "bit_errors"
    presets = {
        "quick": {
            "task": {"bits": 8, "min_length": 1, "max_length": 20},
            "model": {"d_model": 64, "layers": 2, "slots": 128, "slot_width": 20, "controller_size": 64},
            "budget": 50_000,
            "methods": ["ntm", "lstm", "attention", "memn2n"],
            "arm_models": {"ntm": ONE_LAYER, "lstm": ONE_LAYER},
            "train": NTM_QUICK_TRAIN,
            "eval": {"samples": 500, "settings": LONGER},
        },
        "paper": {
            "task": {"bits": 8, "min_length": 1, "max_length": 20},
            "model": NTM_PAPER_MODEL,
            "methods": ["ntm", "lstm"],
            "arm_models": NTM_PAPER_ARMS,
            "train": NTM_PAPER_TRAIN,
            "eval": {"samples": 1000, "settings": LONGER},
        },
    }
    deviations = {
        "quick": [
            "{cfg.train.optimizer:name} lr {cfg.train.lr:sci} and gradient-norm clipping {cfg.train.grad_clip:g}, "
            "batch {cfg.train.batch_size} (paper: RMSProp with momentum 0.9, lr 1e-4, gradients clipped "
            "elementwise to (-10, 10), batch 1); {cfg.train.steps:k} updates",
            "NTM controller {cfg.model.controller_size} units (paper: 100)",
            "baselines of matched size: a {cfg.arm_models[lstm][layers]}-layer LSTM and a {cfg.model.layers}-layer "
            "attention model with sinusoidal positions (paper: a 3 x 256 LSTM with 1.3M parameters)",
        ],
        "paper": [
            "{cfg.train.optimizer:name} with gradient-norm clipping (paper: RMSProp with momentum, elementwise "
            "clipping); batch {cfg.train.batch_size} (paper: 1); {cfg.train.steps:k} updates (paper: until "
            "convergence)",
        ],
    }
    paper = [
        PaperNumber(
            "ntm/train_bit_errors",
            "NTM, wrong bits per sequence, lengths 1-20",
            0.0,
            "≈ 0 after training",
            "§4.1, Fig. 3",
        ),
        PaperNumber(
            "ntm/length40_bit_errors",
            "NTM, length 40 (never trained)",
            None,
            "copies well; errors grow slowly with length",
            "§4.1, Fig. 4 (lengths 30, 50, 120)",
        ),
        PaperNumber("lstm/length40_bit_errors", "LSTM, length 40", None, "fails beyond 20", "§4.1, Fig. 5"),
    ]

    def make_task(self, task_cfg: CopyConfig) -> CopyTask:
        return CopyTask(task_cfg)


EXPERIMENT = MemoryCopy()

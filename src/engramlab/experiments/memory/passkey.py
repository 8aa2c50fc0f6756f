"""Passkey retrieval beyond the attention window: episodic kNN memory and segment recurrence.

The model reads the sequence window by window. A windowed transformer cannot see a passkey
stated in an earlier window; Transformer-XL sees the previous window's states at every layer
(reach: layers × window; Dai et al. 2019, §3.2); a Memorizing Transformer layer retrieves
keys and values from every earlier window of the document with kNN search (Wu et al. 2022,
§3); an LSTM must carry the passkey in its state.

Papers: Wu et al. 2022 (arXiv 2203.08913) and Dai et al. 2019 (arXiv 1901.02860) do not
report this probe; the expectation (memory retrieves at 4× and 16× the window, the windowed
transformer is at chance) is this project's target. Passkey task after Mohtashami & Jaggi 2023.

Presets
- ``quick``: window 64, trained on 128-token sequences (two windows, passkey anywhere),
  evaluated with the passkey at least one window before the question in sequences of 2×, 4×
  and 16× the window.
- ``paper``: a larger configuration in the spirit of the Memorizing Transformer (top-k 32,
  window 512, memory in one layer of 4); not a published setting.
"""

from __future__ import annotations

from engramlab.engine.experiment import PaperNumber
from engramlab.experiments.memory.common import MemoryExperimentConfig, MemoryTaskExperiment
from engramlab.tasks.passkey import PasskeyConfig, PasskeyTask


class PasskeyExperimentConfig(MemoryExperimentConfig):
    task: PasskeyConfig = PasskeyConfig()


def settings(window: int) -> dict[str, dict]:
    """The training distribution, then the passkey at least one window back at 2x, 4x and 16x the window."""
    return {
        "train": {},
        **{f"window{n}x": {"length": n * window, "min_distance": window} for n in (2, 4, 16)},
    }


class MemoryPasskey(MemoryTaskExperiment):
    name = "memory-passkey"
    description = "passkey retrieval across windows: kNN memory and Transformer-XL vs windowed attention and LSTM"
    Config = PasskeyExperimentConfig
    headline_metric = "accuracy"
    presets = {
        "quick": {
            "task": {"length": 128, "keys": 64, "filler": 64},
            "model": {"d_model": 64, "layers": 2, "heads": 4, "window": 64, "top_k": 32},
            "budget": 120_000,
            "methods": ["attention", "xl", "knn", "memn2n", "lstm"],
            # XL's cache and MemN2N's memory hold the last 4 windows (256 steps); training sequences
            # are 2 windows, so this changes only evaluation (Dai et al. 2019, §3.2: the cache is
            # lengthened at evaluation)
            "arm_models": {"xl": {"mem_len": 256}, "memn2n": {"memory_size": 256}},
            "train": {
                "steps": 3000,
                "batch_size": 32,
                "lr": 1e-3,
                "optimizer": "adamw",
                "weight_decay": 0.1,
                "decay": "cosine",
                "warmup_steps": 100,
                "eval_every": 250,
                "checkpoint_every": 250,
                "log_every": 50,
            },
            "eval": {"samples": 500, "batch_size": 50, "settings": settings(64)},
        },
        "paper": {
            "task": {"length": 2048, "keys": 1000, "filler": 1000},
            "model": {"d_model": 256, "layers": 4, "heads": 8, "window": 512, "top_k": 32, "knn_layer": 2},
            "methods": ["attention", "xl", "knn", "memn2n", "lstm"],
            "arm_models": {"xl": {"mem_len": 2048}, "memn2n": {"memory_size": 2048}},
            "train": {
                "steps": 20_000,
                "batch_size": 32,
                "lr": 3e-4,
                "optimizer": "adamw",
                "weight_decay": 0.1,
                "decay": "cosine",
                "warmup_steps": 1000,
                "eval_every": 1000,
                "checkpoint_every": 1000,
            },
            "eval": {"samples": 1000, "batch_size": 20, "settings": settings(512)},
        },
    }
    deviations = {
        "quick": ["not a published experiment: a small probe of memory beyond the window"],
        "paper": ["not a published experiment: a larger probe in the Memorizing Transformer's proportions"],
    }
    paper = [
        PaperNumber(
            "attention/window4x_accuracy",
            "windowed attention, passkey ≥ 1 window back",
            None,
            "at chance (1/keys) by construction",
            "—",
        ),
    ]

    def make_task(self, task_cfg: PasskeyConfig) -> PasskeyTask:
        return PasskeyTask(task_cfg)


EXPERIMENT = MemoryPasskey()

"""Multi-query associative recall: attention as associative memory vs a recurrent state.

Paper: Arora et al. 2023, "Zoology: Measuring and Improving Recall in Efficient Language Models",
arXiv 2312.04927, §3 and Fig. 2: with vocabulary 8,192 and (length, pairs) up to (256, 16), a
2-layer attention model solves MQAR already at width 64, while recurrent and gated-convolution
models need growing width. The softmax read ``Σ softmax(Kᵀq) V`` can look a key up exactly; a
fixed-size state has to compress every pair it has seen.

Presets
- ``paper``: Zoology's hardest setting, vocabulary 8,192, length 256, 16 pairs, 2 layers,
  width 64, 100k training sequences (here: 100k / batch 64 ≈ 1,563 updates per epoch; Zoology
  trains 64 epochs with a learning-rate sweep; ``train.steps`` and ``lr`` are ours).
- ``quick``: the same task and widths, fewer updates; every deviation in ``deviations``.
"""

from __future__ import annotations

from engramlab.engine.experiment import PaperNumber
from engramlab.experiments.memory.common import MemoryExperimentConfig, MemoryTaskExperiment
from engramlab.tasks.mqar import MQARConfig, MQARTask


class MQARExperimentConfig(MemoryExperimentConfig):
    task: MQARConfig = MQARConfig()


MIX = [[64, 4], [128, 8], [256, 16]]  # Zoology's lengths, trained together
# evaluated at length 256 only: 16 pairs as in training, then more pairs than ever trained
MORE_PAIRS = {
    "pairs16": {"mix": None},
    "pairs32": {"mix": None, "kv_pairs": 32},
    "pairs64": {"mix": None, "kv_pairs": 64},
}


class MemoryMQAR(MemoryTaskExperiment):
    name = "memory-mqar"
    description = "multi-query associative recall (Zoology): attention vs recurrent memory at width 64"
    Config = MQARExperimentConfig
    headline_metric = "accuracy"
    presets = {
        "quick": {
            "task": {"vocab": 256, "length": 256, "kv_pairs": 16, "mix": MIX},
            "model": {"d_model": 64, "layers": 2, "heads": 4},
            "methods": ["attention", "lstm", "memn2n"],
            "train": {
                "steps": 3000,
                "batch_size": 32,
                "lr": 3e-3,
                "optimizer": "adamw",
                "weight_decay": 0.1,
                "decay": "cosine",
                "warmup_steps": 100,
                "eval_every": 250,
                "checkpoint_every": 250,
                "log_every": 50,
            },
            "eval": {"samples": 1000, "settings": MORE_PAIRS},
        },
        "paper": {
            "task": {"vocab": 8192, "length": 256, "kv_pairs": 16, "mix": MIX},
            "model": {"d_model": 64, "layers": 2},
            "methods": ["attention", "lstm"],
            "train": {
                "steps": 100_000,
                "batch_size": 64,
                "lr": 1e-3,
                "optimizer": "adamw",
                "weight_decay": 0.1,
                "decay": "cosine",
                "eval_every": 2000,
                "checkpoint_every": 2000,
            },
            "eval": {"samples": 3000, "settings": MORE_PAIRS},
        },
    }
    deviations = {
        "quick": [
            "vocabulary {cfg.task.vocab} instead of 8,192: with 4,096 value tokens each value is seen too rarely to be "
            "learned in minutes on a CPU",
            "{cfg.train.steps:k} updates of batch {cfg.train.batch_size}, lr {cfg.train.lr:sci} (Zoology: 64 epochs "
            "of 100k sequences and a learning-rate sweep)",
        ],
        "paper": [
            "{cfg.train.steps:k} updates of batch {cfg.train.batch_size} and lr {cfg.train.lr:sci} are ours "
            "(Zoology sweeps learning rates)"
        ],
    }
    paper = [
        PaperNumber(
            "attention/pairs16_accuracy", "attention, 2 layers, width 64", None, "solves it (≈ 1.0)", "Zoology Fig. 2"
        ),
        PaperNumber(
            "lstm/pairs16_accuracy", "recurrent state, width 64", None, "fails at 256/16", "Zoology Fig. 2 (RNNs)"
        ),
    ]

    def make_task(self, task_cfg: MQARConfig) -> MQARTask:
        return MQARTask(task_cfg)


EXPERIMENT = MemoryMQAR()

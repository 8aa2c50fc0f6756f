"""MEMO on paired associative inference: halting by PonderNet and by REINFORCE, against a Universal Transformer.

Papers: Banino et al., "MEMO: a deep network for flexible combination of episodic memories",
ICLR 2020 (§2: the model, §3: PAI); Banino, Balaguer, Blundell, "PonderNet", arXiv 2107.05407,
App. D and Table 2 (PAI length 3: MEMO 98.26 %, PonderNet 97.86 %, UT 85.60 % on A–C
inference queries). Task: :mod:`engramlab.tasks.pai`; model: :mod:`engramlab.models.memo`.

Arms (every arm sees the same seeded stream of memories and queries):

- ``memo-pondernet``: MEMO hops, the number of hops chosen by PonderNet (§2 of PonderNet);
- ``memo-reinforce``: the same hops, halting learned by REINFORCE as in the MEMO paper;
- ``ut``: a Universal Transformer over the same inputs (rows, cue, candidates as tokens),
  a fixed number of layer applications, no slot memory or recirculation (the paper's baseline).

Evaluation uses memories built from the **test item pool**, disjoint from the training pool, so
accuracy measures use of the memory rather than memorised items. Reported per query type (A–B,
B–C, … and the A–C inference query), with the hops taken per type.

Deviations from the papers (both presets): items are random unit vectors, not ResNet embeddings
of ImageNet images (no image data here; the pools are disjoint as the paper's are); the target
is which of the two candidates is the match (chance 50 %) rather than the item's class;
MEMO's halting unit reads the hop state, the cue and the candidate scores (the paper's read
attention weights and a Bhattacharyya distance) and its reward is the negative task loss, not correct/incorrect; the
``ut`` arm has a fixed depth (the paper's UT used its own dynamic halting).
``quick``: 16 sequences of length 3 as in the paper, but smaller items and model (item_dim 32,
hidden 64) and 4k updates of batch 64.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from engramlab.config import Config, HeadsDivideWidth
from engramlab.engine.experiment import Experiment, PaperNumber
from engramlab.engine.train import TrainConfig
from engramlab.experiments.ponder import memo_plots
from engramlab.models.memo import MEMOStep, PAITransformerStep, pack
from engramlab.ponder import HaltingConfig, HaltingMethod, build_halting, halting_renames
from engramlab.tasks.pai import PAIBatch, PAIConfig, PAITask

Arm = Literal["memo-pondernet", "memo-reinforce", "memo-fixed", "ut", "ut-pondernet"]
METHOD_OF_ARM: dict[str, HaltingMethod] = {
    "memo-pondernet": "pondernet",
    "memo-reinforce": "reinforce",
    "memo-fixed": "fixed",
    "ut": "fixed",
    "ut-pondernet": "pondernet",
}


class ModelConfig(HeadsDivideWidth):
    hidden: int = Field(64, ge=1, description="width of embeddings and hop state")
    heads: int = Field(4, ge=1, description="attention heads")
    # memo arms: a hop is a step (max_steps: PonderNet's N and REINFORCE's limit; fixed_steps: memo-fixed)
    halting: HaltingConfig = HaltingConfig(max_steps=6, lambda_p=0.5, beta=0.01, hop_cost=0.0, fixed_steps=2)
    aligned_start: bool = Field(True, description="MEMO's item embeddings start aligned (false: default init)")
    ut_steps: int = Field(
        4, ge=1, le=1000, description="layer applications of the ut arm (fixed), and the most for ut-pondernet"
    )
    ut_ff: int = Field(128, ge=1, description="feed-forward width of the UT layer")


class EvalConfig(Config):
    samples: int = Field(4000, ge=2, description="test queries in the final evaluation (half inference)")
    monitor_samples: int = Field(1000, ge=2, description="test queries in the evaluations during training")
    halting: Literal["sample", "greedy"] = Field("sample", description="halting at evaluation (PonderNet §2.5: sample)")
    seed: int = Field(4321, description="seed of the evaluation memories and queries")


class MemoPAIConfig(Config):
    seed: int = Field(0, description="seed of initialisation and training data (the same for every arm)")
    task: PAIConfig = PAIConfig()
    model: ModelConfig = ModelConfig()
    methods: list[Arm] = Field(["memo-pondernet", "memo-reinforce", "ut"], min_length=1, description="arms")
    train: TrainConfig = TrainConfig(steps=20_000, batch_size=64, lr=1e-3, eval_every=500, checkpoint_every=500)
    eval: EvalConfig = EvalConfig()


class PAIModel(nn.Module):
    """A halting wrapper around a PAI step: ``forward(batch) -> (loss, logs)``, ``predict`` (with
    ``halting_mode`` and, unless None, ``eval_max_steps`` as the step limit)."""

    def __init__(self, halting: nn.Module, halting_mode: str = "sample", eval_max_steps: int | None = None):
        super().__init__()
        self.halting, self.halting_mode, self.eval_max_steps = halting, halting_mode, eval_max_steps

    def forward(self, batch: PAIBatch):
        out = self.halting(pack(batch.memory, batch.query))
        return self.halting.loss(out, batch.target, lambda y, t: F.cross_entropy(y, t, reduction="none"))

    @torch.no_grad()
    def predict(self, batch: PAIBatch, generator: torch.Generator | None = None):
        x = pack(batch.memory, batch.query)
        logits, steps = self.halting.predict(
            x, halting=self.halting_mode, max_steps=self.eval_max_steps, generator=generator
        )
        return logits.argmax(-1), steps


def query_types(length: int) -> list[tuple[int, int]]:
    """(cue position, match position) of every query: the direct pairs, then the inference query."""
    return [(p, p + 1) for p in range(length - 1)] + [(0, length - 1)]


def type_name(cue: int, match: int) -> str:
    return f"{string.ascii_uppercase[cue]}-{string.ascii_uppercase[match]}"


class MemoPAI(Experiment):
    name = "memo-pai"
    description = "MEMO with PonderNet or REINFORCE halting vs a Universal Transformer on paired associative inference"
    Config = MemoPAIConfig
    eval_keys = ("eval.", "task.split", "task.test_items", "task.indirect_fraction", "model.halting.eval_max_steps")
    # runs written before model.halting existed name these keys by their old names
    renamed_keys = {
        **halting_renames("lambda_p", "beta", "hop_cost", max_hops="max_steps", fixed_hops="fixed_steps"),
        "model.ut_depth": "model.ut_steps",
    }
    presets = {
        "quick": {
            "task": {"length": 3, "sequences": 16, "item_dim": 32},
            "model": {"hidden": 64, "heads": 4, "halting": {"max_steps": 6, "lambda_p": 0.5, "hop_cost": 0.01}},
            "train": {"steps": 4000, "batch_size": 64, "lr": 1e-3, "eval_every": 500, "checkpoint_every": 500},
        },
        "paper": {
            # PonderNet App. D (its UT-with-PonderNet model): input embedding 256, 8 heads, batch 128,
            # Adam 3e-4 with warm-up and polynomial decay, beta 0.01, N in [7, 10], lambda_p in (0, 0.5]
            "task": {"length": 3, "sequences": 16, "item_dim": 256, "train_items": 100_000, "test_items": 20_000},
            "model": {
                "hidden": 256,
                "heads": 8,
                "halting": {"max_steps": 10, "lambda_p": 0.2, "hop_cost": 0.01},
                "ut_steps": 8,
                "ut_ff": 512,
            },
            "train": {
                "steps": 200_000,
                "batch_size": 128,
                "lr": 3e-4,
                "warmup_steps": 2000,
                "decay": "linear",
                "eval_every": 2000,
                "checkpoint_every": 2000,
            },
        },
    }
    deviations = {
        "quick": [
            "items are random unit vectors from disjoint train/test pools (paper: ResNet embeddings of ImageNet)",
            "target: which of the two candidates is the match (chance 50 %), not the item's class",
            "item_dim {cfg.task.item_dim}, hidden {cfg.model.hidden}, {cfg.train.steps:k} updates of batch "
            "{cfg.train.batch_size}: a 2-core CPU budget",
            "REINFORCE reward = negative task loss; halting reads the hop state, cue and candidate scores",
            "ut arm: fixed depth {cfg.model.ut_steps} (the paper's UT used ACT halting)",
        ],
        "paper": [
            "items are random unit vectors from disjoint train/test pools (paper: ResNet embeddings of ImageNet)",
            "target: which of the two candidates is the match (chance 50 %), not the item's class",
            "number of updates ({cfg.train.steps:k}) and pool sizes are ours: not stated in the papers",
            "REINFORCE reward = negative task loss; halting reads the hop state, cue and candidate scores",
        ],
    }
    paper = [
        PaperNumber("memo-reinforce/accuracy_A-B", "MEMO accuracy A-B", 0.9982, "±0.0030", "PonderNet Table 2"),
        PaperNumber("memo-reinforce/accuracy_B-C", "MEMO accuracy B-C", 0.9976, "±0.0038", "PonderNet Table 2"),
        PaperNumber("memo-reinforce/accuracy_A-C", "MEMO accuracy A-C", 0.9826, "±0.0067", "PonderNet Table 2"),
        PaperNumber("memo-pondernet/accuracy_A-C", "PonderNet accuracy A-C", 0.9786, "±0.0378", "PonderNet Table 2"),
        PaperNumber("ut/accuracy_A-C", "UT accuracy A-C", 0.8560, "", "PonderNet Table 2"),
    ]

    def arms(self, cfg: MemoPAIConfig) -> list[str]:
        return list(dict.fromkeys(cfg.methods))

    def arm_cost(self, cfg: MemoPAIConfig, arm: str) -> float:
        return {"ut": 3.0, "ut-pondernet": 3.0}.get(arm, 1.0)

    def build(self, cfg: MemoPAIConfig, arm: str) -> PAIModel:
        torch.manual_seed(cfg.seed)
        m, t = cfg.model, cfg.task
        rows = t.sequences * (t.length - 1)
        if arm.startswith("memo"):
            step = MEMOStep(
                2 * t.item_dim, t.item_dim, rows, hidden=m.hidden, heads=m.heads, aligned_start=m.aligned_start
            )
        else:
            step = PAITransformerStep(2 * t.item_dim, t.item_dim, rows, hidden=m.hidden, heads=m.heads, ff=m.ut_ff)
        halting = m.halting
        if arm.startswith("ut"):  # the UT's own depth: ut_steps layer applications (ut), at most (ut-pondernet)
            halting = halting.model_copy(update={"max_steps": m.ut_steps, "fixed_steps": m.ut_steps})
        return PAIModel(build_halting(METHOD_OF_ARM[arm], step, halting), cfg.eval.halting, halting.eval_max_steps)

    def sampler(self, cfg: MemoPAIConfig, arm: str) -> Callable:
        task = PAITask(cfg.task.model_copy(update={"split": "train"}))
        return lambda batch_size, generator: task.sample(batch_size, generator)

    def monitor(self, cfg: MemoPAIConfig, arm: str) -> Callable:
        task = PAITask(cfg.task.model_copy(update={"split": "test"}))

        def run(model: PAIModel) -> dict[str, float]:
            generator = torch.Generator().manual_seed(cfg.eval.seed)
            batch = task.sample(cfg.eval.monitor_samples, generator)
            predicted, steps = model.predict(batch, generator)
            correct = (predicted == batch.target).float()
            indirect = batch.indirect
            return {
                "direct_accuracy": correct[~indirect].mean().item(),
                "indirect_accuracy": correct[indirect].mean().item(),
                "hops_direct": steps[~indirect].float().mean().item(),
                "hops_indirect": steps[indirect].float().mean().item(),
            }

        return run

    def evaluate(self, cfg: MemoPAIConfig, arm: str, model: PAIModel) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for split in ("test", "train"):
            task = PAITask(cfg.task.model_copy(update={"split": split}))
            generator = torch.Generator().manual_seed(cfg.eval.seed)
            batch = task.sample(cfg.eval.samples, generator)
            predicted, steps = model.predict(batch, generator)
            results[split] = by_query_type(batch, predicted == batch.target, steps, cfg.task.length)
        return results

    def summarize(self, cfg: MemoPAIConfig, results: dict[str, dict[str, Any]]) -> dict[str, float]:
        metrics = {}
        for arm, r in results.items():
            test = r["test"]
            for name, entry in test["types"].items():
                metrics[f"{arm}/accuracy_{name}"] = entry["accuracy"]
                metrics[f"{arm}/hops_{name}"] = entry["mean_hops"]
            for kind in ("direct", "indirect"):
                metrics[f"{arm}/{kind}_accuracy"] = test[kind]["accuracy"]
                metrics[f"{arm}/{kind}_hops"] = test[kind]["mean_hops"]
            metrics[f"{arm}/train_pool_accuracy"] = r["train"]["accuracy"]
        return metrics

    def plot(self, cfg: MemoPAIConfig, results: dict[str, dict[str, Any]], run_dir: Path, out_dir: Path):
        return memo_plots.plot_all(cfg, results, run_dir, out_dir)


def by_query_type(batch: PAIBatch, correct: torch.Tensor, steps: torch.Tensor, length: int) -> dict[str, Any]:
    """Accuracy, mean hops and the hop histogram per query type, direct vs indirect, and overall."""

    def entry(rows: torch.Tensor) -> dict[str, Any]:
        counts = torch.bincount(steps[rows] - 1, minlength=int(steps.max())) if rows.any() else torch.zeros(0)
        return {
            "accuracy": correct[rows].float().mean().item(),
            "mean_hops": steps[rows].float().mean().item(),
            "hop_counts": counts.tolist(),
            "queries": int(rows.sum()),
        }

    types = {}
    for cue, match in query_types(length):
        rows = (batch.cue_position == cue) & (batch.match_position == match)
        types[type_name(cue, match)] = entry(rows)
    indirect = batch.indirect
    everything = torch.ones_like(indirect)
    return {"types": types, "direct": entry(~indirect), "indirect": entry(indirect), **entry(everything)}


EXPERIMENT = MemoPAI()

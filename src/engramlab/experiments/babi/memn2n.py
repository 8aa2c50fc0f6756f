"""End-to-end memory network on bAbI, 1k examples per task, the 20 tasks trained jointly.

Paper: Sukhbaatar, Szlam, Weston, Fergus, "End-To-End Memory Networks", arXiv 1503.08895, §4
(set-up), §4.1 (position and temporal encoding), §4.2 (training) and Table 1 (the "PE LS RN"
model, 1k joint column: mean error 12.4 %, 11 failed tasks). The model is
:class:`engramlab.memory.memn2n.MemN2N`; this file only trains it on the official files.

The ``paper`` preset is the published configuration as the authors' released code sets it
(MemN2N-babi-matlab, ``config_babi_joint.m``, ``build_model.m``, ``train.m``): 3 hops, adjacent
weight tying, position encoding (PE), temporal encoding with random noise (RN), linear start (LS),
embedding d = 50 for joint training, memory of the last 50 sentences, 10 % of the training set
held out for validation, SGD with batch 32, gradient norm clipped to 40, weights from N(0, 0.1).
Where the paper's text leaves room, the code decides, and each choice made a measured difference
here (docs/babi.md):

- **the loss is summed over the batch** (``size_average = false``), so η applies to the summed
  gradient (``summed_loss``); with the mean, the same η is 32 times smaller;
- **schedule**: 30 epochs of linear start at η = 0.005 (§4.2 ends LS "when the validation loss
  stopped decreasing"; the joint configuration fixes 30 epochs), then 60 epochs starting again
  at 0.005, halved at the start of their 15th, 30th, 45th and 60th epoch: 90 epochs in all;
- **position encoding** in the code's centred form over a fixed padded sentence length
  (``model.position_span``; :func:`engramlab.memory.memn2n.position_weights`): the §4.1 formula
  over each sentence's own length left the two-step deductions (tasks 15 and 16) unsolved;
- **blank memories**: every one of the 50 slots stays in the softmax, an unfilled one with key
  and value 0 (``model.blank_memories``).

Linear start can also end as §4.2 words it (``model.linear_start_epochs=0``): the validation loss
is checked after every epoch (``train.eval_every``), and the switch is saved in the model's state,
so a resumed run continues in the same mode. ``quick`` equals ``paper``: it takes about 14 minutes
on one CPU core.

Deviations, every preset: examples are drawn with replacement (as in the authors' code; an
"epoch" is len(train) / batch updates); the paper repeats each training 10 times and keeps the
run with the lowest *training* error; we report every seed and their mean (each run's summary
also holds its validation error, for anyone who wants to pick among runs); answers are scored
among the answer words only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from engramlab.config import Config
from engramlab.engine.experiment import Experiment, PaperNumber
from engramlab.engine.plots import learning_curves
from engramlab.engine.train import TrainConfig
from engramlab.experiments.babi import common as babi
from engramlab.memory.memn2n import MemN2N

# Table 1 of Sukhbaatar et al. 2015, "PE LS RN" (joint training, 1k), test error % per task, as
# transcribed by us: they average to the paper's 12.4 and give its 11 failed tasks (the project's
# reference notes hold only those two numbers); check the paper before quoting one task
PAPER_PER_TASK = {
    1: 0.0, 2: 11.4, 3: 21.9, 4: 13.4, 5: 14.4, 6: 2.8, 7: 18.3, 8: 9.3, 9: 1.9, 10: 6.5,
    11: 0.3, 12: 0.1, 13: 0.2, 14: 6.9, 15: 0.0, 16: 2.7, 17: 40.4, 18: 9.4, 19: 88.0, 20: 0.0,
}  # fmt: skip
EPOCH = 563  # updates per epoch: 18,000 training examples (90 % of 20 x 1000) / batch 32


class ModelConfig(Config):
    d: int = Field(50, ge=1, description="embedding dimension (paper: 20 per task, 50 joint)")
    hops: int = Field(3, ge=1, description="memory hops K (paper: 3)")
    tying: Literal["adjacent", "layerwise"] = Field("adjacent", description="weight tying (§2.2)")
    position_encoding: bool = Field(True, description="PE (§4.1); else bag of words")
    position_span: int = Field(
        12,
        ge=0,
        description="PE in the centred form of the authors' code over a padded sentence length (their longest "
        "sentence, 11 words, + 1 for the time word); 0: the formula of §4.1 over each sentence's own length",
    )
    temporal_encoding: bool = Field(True, description="temporal encoding T_A, T_C (§4.1)")
    random_noise: float = Field(0.1, ge=0, lt=1, description="RN: share of empty memories added in training (§4.1)")
    linear_start: bool = Field(True, description="LS: start without the memory softmaxes (§4.2)")
    linear_start_epochs: int = Field(
        30,
        ge=0,
        description="epochs of linear start, as in the authors' joint configuration (30); 0: until the "
        "validation loss stops decreasing, as §4.2 describes it",
    )
    blank_memories: bool = Field(
        True,
        description="unfilled slots of the 50-slot memory stay in the softmax with score 0 and read nothing, "
        "as in the authors' code; false: only told sentences are weighed",
    )


class MemN2NBabiConfig(Config):
    seed: int = Field(0, description="seed of initialisation and training data")
    task: babi.BabiDataConfig = babi.BabiDataConfig()
    model: ModelConfig = ModelConfig()
    summed_loss: bool = Field(
        True,
        description="sum the cross-entropy over the batch, as the authors' code does (size_average = "
        "false), so the learning rate and the clipping norm apply to the summed gradient; false: mean",
    )
    # the authors' joint schedule: 30 linear-start epochs at 0.005, then 60 epochs starting again
    # at 0.005 and halved at the start of their 15th, 30th, 45th and 60th epoch
    train: TrainConfig = TrainConfig(
        steps=90 * EPOCH,
        batch_size=32,
        optimizer="sgd",
        lr=0.005,
        decay="step",
        decay_every=15 * EPOCH,
        decay_start=29 * EPOCH,
        decay_factor=0.5,
        grad_clip=40.0,
        log_every=EPOCH,
        eval_every=EPOCH,
        checkpoint_every=5 * EPOCH,
    )
    # linear start watches the loss on the whole validation split (§4.2)
    eval: babi.BabiEvalConfig = babi.BabiEvalConfig(monitor_examples=100_000)


class MemN2NQA(nn.Module):
    """MemN2N answering bAbI questions; answers are words (``Wᵀ = C_K`` scores every word, §2.2)
    and the answer logits are the rows of the answer words. Linear start state lives in buffers."""

    def __init__(self, cfg: MemN2NBabiConfig):
        super().__init__()
        m, task = cfg.model, cfg.task
        vocab = babi.vocabulary(task)
        self.net = MemN2N(
            len(vocab.words),
            d=m.d,
            hops=m.hops,
            memory_size=task.memory_size,
            tying=m.tying,
            position_encoding=m.position_encoding,
            temporal_encoding=m.temporal_encoding,
            random_noise=m.random_noise,
            blank_memories=m.blank_memories,
            position_span=m.position_span,
        )
        # answer id -> word id (answer 0, never seen in training, maps to padding: never predicted)
        self.register_buffer("answer_words", torch.tensor([vocab.word_id.get(a, 0) for a in vocab.answers]))
        self.register_buffer("linear", torch.tensor(m.linear_start))
        self.register_buffer("best_valid_loss", torch.tensor(float("inf")))
        self.register_buffer("updates", torch.tensor(0))  # training forward passes: one per update
        self.linear_start_updates = m.linear_start_epochs * EPOCH
        self.loss_reduction = "sum" if cfg.summed_loss else "mean"

    def logits(self, batch: babi.BabiBatch) -> torch.Tensor:
        self.net.linear = bool(self.linear)
        words = self.net(batch.story, batch.question)
        logits = words[:, self.answer_words]
        logits[:, 0] = torch.finfo(logits.dtype).min  # <unk> is never an answer
        return logits

    def forward(self, batch: babi.BabiBatch):
        if self.training:
            if self.linear_start_updates and int(self.updates) >= self.linear_start_updates:
                self.linear.fill_(False)
            self.updates += 1
        logits = self.logits(batch)
        loss = F.cross_entropy(logits, batch.answer, reduction=self.loss_reduction)
        accuracy = (logits.argmax(-1) == batch.answer).float().mean()
        mean_loss = loss.item() / (len(batch.answer) if self.loss_reduction == "sum" else 1)
        return loss, {"loss": mean_loss, "accuracy": accuracy.item(), "linear": float(self.linear)}

    @torch.no_grad()
    def predict(self, batch: babi.BabiBatch):
        return self.logits(batch).argmax(-1), {}

    @torch.no_grad()
    def end_linear_start(self, valid_loss: float) -> None:
        """Put the softmaxes back once the validation loss stops decreasing (§4.2), unless linear
        start lasts a fixed number of epochs (see :meth:`forward`)."""
        if not self.linear_start_updates and bool(self.linear) and valid_loss >= float(self.best_valid_loss):
            self.linear.fill_(False)
        self.best_valid_loss.fill_(min(valid_loss, float(self.best_valid_loss)))


class MemN2NBabi(Experiment):
    name = "memn2n-babi"
    description = "End-to-end memory network on bAbI 1k, 20 tasks jointly (Sukhbaatar et al. 2015, Table 1)"
    Config = MemN2NBabiConfig
    presets = {
        # the published configuration runs in about 14 minutes on one CPU core: quick is paper
        "quick": {},
        "paper": {},
    }
    deviations = {
        preset: [
            "examples drawn with replacement instead of shuffled epochs (an epoch = 563 updates), "
            "as in the authors' code",
            "one training run per seed; the paper keeps the best of 10 runs by training error",
            "answers scored among the answer words only (the authors' code scores every word)",
        ]
        for preset in ("quick", "paper")
    }
    paper = [
        PaperNumber("memn2n/mean_error", "mean test error % (20 tasks)", 12.4, "PE LS RN, best of 10 runs", "Table 1"),
        PaperNumber("memn2n/failed_tasks", "failed tasks (error > 5 %)", 11.0, "", "Table 1"),
        *[
            PaperNumber(f"memn2n/task{task}_error", f"task {task} test error %", error, "", "Table 1")
            for task, error in PAPER_PER_TASK.items()
        ],
    ]
    eval_keys = ("eval.",)

    def prepare(self, cfg: MemN2NBabiConfig) -> MemN2NBabiConfig:
        return cfg.model_copy(update={"task": babi.with_vocabulary(cfg.task, answers_as_words=True)})

    def arms(self, cfg: MemN2NBabiConfig) -> list[str]:
        return ["memn2n"]

    def build(self, cfg: MemN2NBabiConfig, arm: str) -> MemN2NQA:
        torch.manual_seed(cfg.seed)
        return MemN2NQA(cfg)

    def sampler(self, cfg: MemN2NBabiConfig, arm: str) -> Callable:
        return babi.sampler(cfg.task)

    def monitor(self, cfg: MemN2NBabiConfig, arm: str) -> Callable:
        _, valid = babi.splits(cfg.task)

        def run(model: MemN2NQA) -> dict[str, float]:
            accuracy, loss = validation_metrics(model, valid, cfg)
            model.end_linear_start(loss)
            return {"valid_accuracy": accuracy, "valid_loss": loss, "linear": float(model.linear)}

        return run

    def evaluate(self, cfg: MemN2NBabiConfig, arm: str, model: MemN2NQA) -> dict[str, Any]:
        return babi.evaluate(cfg, model)

    def summarize(self, cfg: MemN2NBabiConfig, results: dict[str, dict[str, Any]]) -> dict[str, float]:
        return babi.summarize(results, cfg.task.tasks)

    def plot(self, cfg: MemN2NBabiConfig, results: dict[str, dict[str, Any]], run_dir: Path, out_dir: Path):
        return [
            babi.plot_errors(
                results, {"MemN2N PE LS RN": PAPER_PER_TASK}, out_dir / "task_errors.png", "bAbI 1k joint"
            ),
            learning_curves(
                run_dir,
                list(results),
                [
                    ("validation accuracy", [("eval/valid_accuracy", "-", "")]),
                    ("training loss", [("train/loss", "-", "")]),
                ],
                out_dir / "learning_curves.png",
            ),
        ]


@torch.no_grad()
def validation_metrics(model: MemN2NQA, valid, cfg: MemN2NBabiConfig) -> tuple[float, float]:
    """Accuracy and mean cross-entropy on the first ``eval.monitor_examples`` validation examples, one pass."""
    count = min(len(valid), cfg.eval.monitor_examples)
    correct, total = 0, 0.0
    for start in range(0, count, cfg.eval.batch_size):
        rows = torch.arange(start, min(count, start + cfg.eval.batch_size))
        batch = babi.batch_of(valid, rows, cfg.task.memory_size)
        logits = model.logits(batch)
        correct += int((logits.argmax(-1) == batch.answer).sum())
        total += F.cross_entropy(logits, batch.answer, reduction="sum").item()
    return correct / count, total / count


EXPERIMENT = MemN2NBabi()

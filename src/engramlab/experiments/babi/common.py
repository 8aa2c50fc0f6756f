"""What the bAbI experiments share: data, batches, the per-task evaluation, the report and the plots.

A bAbI experiment (``memn2n.py``, ``pondernet.py``, ``memo.py``) names its models and presets; this
module supplies the rest:

- **data**: the official files of one release directory (``task.data_dir``: ``en`` for 1k
  examples per task, ``en-10k`` for 10k), all tasks trained jointly, a seeded
  ``task.validation_fraction`` of every task's training file held out for validation;
- **vocabulary**: read from the training files when a run starts and saved in the run's
  config (``task.words``, ``task.answers``), so a trained run is evaluated with nothing but its
  directory and a copy of the test files (``engram eval RUN --data-dir DIR``);
- **batches**: examples drawn uniformly from the training split (with replacement), each
  story cut to its last ``task.memory_size`` sentences (one gather per batch);
- **evaluation**: error % per task on the official test files, the mean over tasks, and the
  failed tasks (error > 5 %, the bAbI convention of Weston et al. 2015); the same on the
  validation split (the paper's rule for picking among repeated runs).

Every bAbI model module has ``forward(batch) -> (loss, logs)`` and
``predict(batch) -> (answer ids (B,), extras {name: (B,) tensor})``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from engramlab.config import Config
from engramlab.engine.plots import color, plt, save
from engramlab.errors import ConfigError
from engramlab.models.babi_ut import pack_story
from engramlab.tasks.babi import TASKS, BabiTensors, BabiVocab, load_babi, split_validation, task_file
from engramlab.tasks.cache import data_cache

BABI_ROOT = "../shared/data/babi/tasks_1-20_v1-2"
FAILED_ABOVE = 5.0  # a task is failed when its test error exceeds 5 % (Weston et al. 2015)


class BabiDataConfig(Config):
    data_dir: str = Field(
        f"{BABI_ROOT}/en", description="bAbI release directory trained on (en: 1k examples per task; en-10k: 10k)"
    )
    fallback_dir: str | None = Field(
        None,
        description="release directory whose training file is used for a task that data_dir lacks "
        "(e.g. the en-10k qa3 file missing from some copies); null: such a task is an error",
    )
    tasks: list[int] = Field(list(TASKS), min_length=1, description="tasks trained jointly (1-20)")
    validation_fraction: float = Field(
        0.1, ge=0, lt=1, description="fraction of every task's training file held out (MemN2N: 10 %)"
    )
    validation_seed: int = Field(0, description="seed of the validation split (the same for every run seed)")
    memory_size: int = Field(50, ge=1, description="most recent story sentences a model sees (MemN2N: 50)")
    max_words: int = Field(11, ge=1, description="words kept per sentence and question (PonderNet: 11)")
    words: list[str] = Field([], description="vocabulary; filled from the training files when a run starts")
    answers: list[str] = Field([], description="answer labels; filled from the training files when a run starts")

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: list[int]) -> list[int]:
        bad = [t for t in tasks if t not in TASKS]
        if bad or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be distinct numbers from 1 to 20, got {tasks}")
        return tasks


class BabiEvalConfig(Config):
    data_dir: str | None = Field(
        None, description="directory with the official qa*_test.txt files to evaluate on (null: task.data_dir)"
    )
    batch_size: int = Field(500, ge=1, description="examples per evaluation batch")
    monitor_examples: int = Field(
        2000, ge=1, description="validation examples (spread evenly over the tasks) in the evaluations during training"
    )


class BabiBatch(NamedTuple):
    story: torch.Tensor  # (B, memory_size, max_words) word ids, oldest sentence first, front-padded
    question: torch.Tensor  # (B, max_words)
    answer: torch.Tensor  # (B,) answer ids
    task: torch.Tensor  # (B,)


# --------------------------------------------------------------------------- data


def training_examples(task: BabiDataConfig) -> list:
    """The training files' examples; a task missing from ``data_dir`` comes from ``fallback_dir``."""
    examples = []
    for t in task.tasks:
        directory = task.data_dir
        if task.fallback_dir is not None and not has_file(task.data_dir, t, "train"):
            directory = task.fallback_dir
        examples += load_babi(directory, "train", [t])
    return examples


def has_file(data_dir: str, task: int, split: str) -> bool:
    return any(Path(data_dir).glob(f"qa{task}_*_{split}.txt"))


def with_vocabulary(task: BabiDataConfig, answers_as_words: bool) -> BabiDataConfig:
    """``task`` with ``words``/``answers`` read from its training files (unless already set)."""
    if task.words:
        return task
    if not Path(task.data_dir).is_dir():
        raise ConfigError(
            f"task.data_dir = {task.data_dir} is not a directory: point it at a bAbI release "
            "(tasks_1-20_v1-2/en or en-10k), e.g. --set task.data_dir=/path/to/tasks_1-20_v1-2/en"
        )
    vocab = BabiVocab(training_examples(task), answers_as_words=answers_as_words)
    return task.model_copy(update={"words": vocab.words[1:], "answers": vocab.answers[1:]})


def vocabulary(task: BabiDataConfig) -> BabiVocab:
    if not task.words:
        raise ConfigError("task.words is empty: the vocabulary is filled when a run starts (engram run)")
    return BabiVocab.from_lists(task.words, task.answers)


@data_cache(maxsize=4)
def _splits(task_json: str) -> tuple[BabiTensors, BabiTensors]:
    task = BabiDataConfig.model_validate(json.loads(task_json))
    train, valid = split_validation(training_examples(task), task.validation_fraction, task.validation_seed)
    vocab = vocabulary(task)
    return vocab.encode(train, task.max_words), vocab.encode(valid, task.max_words)


def splits(task: BabiDataConfig) -> tuple[BabiTensors, BabiTensors]:
    """(train, validation) tensors, encoded once per process."""
    return _splits(task.model_dump_json())


def test_split(task: BabiDataConfig, data_dir: str | None = None) -> BabiTensors:
    """The official test files of ``task.tasks`` in ``data_dir`` (default ``task.data_dir``),
    read and encoded once per process (every arm of a run is evaluated on them)."""
    directory = data_dir or task.data_dir
    for t in task.tasks:
        task_file(directory, t, "test")  # one clear error for a missing file
    return _test_split(task.model_dump_json(), directory)


@data_cache(maxsize=2)
def _test_split(task_json: str, directory: str) -> BabiTensors:
    task = BabiDataConfig.model_validate(json.loads(task_json))
    return vocabulary(task).encode(load_babi(directory, "test", task.tasks), task.max_words)


def batch_of(data: BabiTensors, rows: torch.Tensor, memory_size: int) -> BabiBatch:
    story, _ = data.stories(rows, memory_size)
    return BabiBatch(story, data.question[rows], data.answer[rows], data.task[rows])


def sampler(task: BabiDataConfig) -> Callable[[int, torch.Generator], BabiBatch]:
    train, _ = splits(task)

    def sample(batch_size: int, generator: torch.Generator) -> BabiBatch:
        rows = torch.randint(len(train), (batch_size,), generator=generator)
        return batch_of(train, rows, task.memory_size)

    return sample


# --------------------------------------------------------------------------- pondering models


def packed_story(batch: BabiBatch) -> torch.Tensor:
    """The question and the story as one (B, 1 + M', W) tensor, M' the longest story in the batch.

    Stories are front-padded, so the slots that no story of the batch fills come first; the UT and
    MEMO steps mask empty slots and count a sentence's age from the end, so dropping those slots
    changes no output and saves their compute (a batch of 64 from bAbI 10k fills 35 of the 50
    slots on average).
    """
    told = (batch.story != 0).any(dim=-1).any(dim=0)  # (M,): slots some story fills
    first = int(told.long().argmax()) if bool(told.any()) else batch.story.shape[1] - 1
    return pack_story(batch.story[:, first:], batch.question)


class HaltingQA(nn.Module):
    """A halting wrapper (PonderNet, ACT, REINFORCE, fixed depth) around a bAbI step (UT or MEMO):
    ``forward(batch) -> (loss, logs)``; ``predict(batch) -> (answers, {"steps": ...})``, with
    ``eval_max_steps`` as the step limit unless it is None."""

    def __init__(self, halting: nn.Module, eval_max_steps: int | None = None):
        super().__init__()
        self.halting, self.eval_max_steps = halting, eval_max_steps

    def forward(self, batch: BabiBatch):
        out = self.halting(packed_story(batch))
        return self.halting.loss(out, batch.answer, lambda y, t: F.cross_entropy(y, t, reduction="none"))

    @torch.no_grad()
    def predict(self, batch: BabiBatch):
        logits, steps = self.halting.predict(packed_story(batch), halting="sample", max_steps=self.eval_max_steps)
        logits[:, 0] = torch.finfo(logits.dtype).min  # <unk> is never an answer
        return logits.argmax(-1), {"steps": steps}


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict_split(
    model: nn.Module, data: BabiTensors, memory_size: int, batch_size: int, rows: torch.Tensor | None = None
):
    """Predicted answer ids and extras (e.g. ponder steps) for ``rows`` of ``data`` (default: all)."""
    rows = torch.arange(len(data)) if rows is None else rows
    answers, extras = [], {}
    for chunk in rows.split(batch_size):
        predicted, extra = model.predict(batch_of(data, chunk, memory_size))
        answers.append(predicted)
        for key, value in extra.items():
            extras.setdefault(key, []).append(value.float())
    return torch.cat(answers), {k: torch.cat(v) for k, v in extras.items()}


def per_task(data: BabiTensors, correct: torch.Tensor, extras: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Error % per task, its mean over tasks, the failed tasks, and per-task means of the extras."""
    tasks = data.task[: len(correct)]
    result: dict[str, Any] = {"error_per_task": {}, "examples_per_task": {}}
    for key in extras:
        result[f"{key}_per_task"] = {}
    for t in sorted(set(tasks.tolist())):
        rows = tasks == t
        result["error_per_task"][str(t)] = 100.0 * (1.0 - correct[rows].float().mean().item())
        result["examples_per_task"][str(t)] = int(rows.sum())
        for key, value in extras.items():
            result[f"{key}_per_task"][str(t)] = value[rows].mean().item()
    errors = list(result["error_per_task"].values())
    result["mean_error"] = sum(errors) / len(errors)
    result["failed_tasks"] = [int(t) for t, e in result["error_per_task"].items() if e > FAILED_ABOVE]
    for key, value in extras.items():
        result[f"mean_{key}"] = value.mean().item()
    return result


def evaluate(cfg: Config, model: nn.Module) -> dict[str, Any]:
    """The one evaluation path of a bAbI model: test (official files) and validation splits."""
    _, valid = splits(cfg.task)
    results = {}
    for name, data in (("test", test_split(cfg.task, cfg.eval.data_dir)), ("validation", valid)):
        predicted, extras = predict_split(model, data, cfg.task.memory_size, cfg.eval.batch_size)
        results[name] = per_task(data, predicted == data.answer, extras)
    results["test"]["data_dir"] = str(cfg.eval.data_dir or cfg.task.data_dir)
    return results


def monitor(cfg: Config) -> Callable[[nn.Module], dict[str, float]]:
    """Validation accuracy (and the model's extras) on ``eval.monitor_examples`` examples spread
    evenly over the validation split, which is ordered by task, so that every task counts."""
    _, valid = splits(cfg.task)
    rows = torch.linspace(0, len(valid) - 1, min(len(valid), cfg.eval.monitor_examples)).round().long().unique()

    def run(model: nn.Module) -> dict[str, float]:
        predicted, extras = predict_split(model, valid, cfg.task.memory_size, cfg.eval.batch_size, rows)
        metrics = {"valid_accuracy": (predicted == valid.answer[rows]).float().mean().item()}
        metrics.update({f"valid_{k}": v.mean().item() for k, v in extras.items()})
        return metrics

    return run


def summarize(results: dict[str, dict[str, Any]], tasks: list[int], headline: list[int] | None = None):
    """Per arm: mean test error over ``headline`` tasks (default all), failed tasks, per-task errors."""
    metrics: dict[str, float] = {}
    for arm, r in results.items():
        errors = r["test"]["error_per_task"]
        chosen = [str(t) for t in (headline or tasks) if str(t) in errors]
        metrics[f"{arm}/mean_error"] = sum(errors[t] for t in chosen) / len(chosen)
        metrics[f"{arm}/failed_tasks"] = float(sum(errors[t] > FAILED_ABOVE for t in chosen))
        metrics[f"{arm}/validation_mean_error"] = r["validation"]["mean_error"]
        for t, e in errors.items():
            metrics[f"{arm}/task{t}_error"] = e
        for key in ("steps",):
            if f"mean_{key}" in r["test"]:
                metrics[f"{arm}/mean_{key}"] = r["test"][f"mean_{key}"]
    return metrics


def plot_errors(results: dict[str, dict[str, Any]], paper: dict[str, dict[int, float]], path: Path, title: str):
    """Per-task test error bars of every arm, with the paper's per-task errors where known."""
    import numpy as np

    tasks = sorted({int(t) for r in results.values() for t in r["test"]["error_per_task"]})
    series = [(arm, [r["test"]["error_per_task"].get(str(t), np.nan) for t in tasks]) for arm, r in results.items()]
    series += [(f"paper: {name}", [values.get(t, np.nan) for t in tasks]) for name, values in paper.items()]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(tasks) * len(series) ** 0.5), 3.8))
    x = np.arange(len(tasks))
    for i, (name, values) in enumerate(series):
        style = {"hatch": "//", "alpha": 0.5} if name.startswith("paper") else {}
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name, color=color(name, i), **style)
    ax.axhline(FAILED_ABOVE, color="k", lw=0.8, ls="--", label="failed above 5 %")
    ax.set_xticks(x, [str(t) for t in tasks])
    ax.set_xlabel("bAbI task")
    ax.set_ylabel("test error %")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)

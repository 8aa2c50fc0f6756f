"""A Gato-style generalist: one transformer, one set of weights, acting in many environments and
captioning digits (Reed et al. 2022, "A Generalist Agent", arXiv 2205.06175).

Data (generated on the first run and cached in ``data.cache_dir``): expert episodes of gymnasium
classic control, LunarLander and BabyAI levels (:mod:`engramlab.tasks.control`), only episodes
≥ 80 % of the expert's score kept (§3); MNIST test images with captions ("the digit seven"),
the first ``data.caption_images`` for training and the last ``eval.caption_images`` held out;
BabyAI's mission strings as text. Tokens: :mod:`engramlab.tasks.gato_tokens`; batches:
:mod:`engramlab.tasks.generalist` (25 % of control sequences prompted by a demonstration, §3.3);
model: :class:`engramlab.models.gato.Gato` (the ``model:`` section is its
:class:`~engramlab.models.gato.GatoConfig`; its patch side is ``data.patch``); deployment:
:mod:`engramlab.models.gato_agent`.

Arms:

- ``generalist``: every training task, captions and text in one model;
- ``specialist-<task>``: the same model trained on one task only, for as many updates as the
  generalist spends on that task (its share of the batch rows), so each task's data is seen
  about as often by both (interference is then the only difference);

and, evaluated inside the generalist's arm, a 1-nearest-neighbour retrieval agent over the same
expert data (:mod:`engramlab.models.nearest_neighbour`).

Evaluation (§4.1): ``eval.episodes`` rollouts per task in the real environment, with a prompt
(timesteps of a successful expert episode of the task, drawn as training's prompts are: half
from the episode's end, half from anywhere in it, §3.3) and without;
the normalised score is 0 for the random policy and 1 for the expert (both measured on our
environments); the headline is the fraction of training tasks ≥ 50 % (and ≥ 80 %) with
prompts. Captioning: exact-match accuracy of greedy captions of held-out images (chance: 10 %).
Held-out tasks (``data.held_out``) are not trained on here; ``generalist-finetune`` measures
transfer to them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from engramlab.config import Config
from engramlab.engine.experiment import Experiment, PaperNumber
from engramlab.engine.plots import save_gif
from engramlab.engine.train import TrainConfig
from engramlab.experiments.generalist import plots
from engramlab.models.gato import Gato, GatoConfig
from engramlab.models.gato_agent import caption, run_episodes
from engramlab.tasks import control
from engramlab.tasks import generalist as data_lib

DIGITS = "zero one two three four five six seven eight nine".split()
TRAINING_TASKS = [
    "cartpole",
    "acrobot",
    "mountaincar",
    "pendulum",
    "lunarlander",
    "babyai-gotoredballgrey",
    "babyai-gotoredball",
    "babyai-gotoobj",
    "babyai-gotolocal",
    "babyai-gotodoor",
    "babyai-opendoor",
]
HELD_OUT = ["mountaincar-continuous", "babyai-pickuploc"]
COMMON_DEVIATIONS = [
    "12 small tasks (classic control, LunarLander, BabyAI) instead of 604; experts are hand-coded or bots",
    "text as UTF-8 bytes, not SentencePiece; discrete values in their own id range",
    "continuous actions scaled linearly to [-1, 1] (no mu-law); BabyAI cells as one id each",
    "MNIST 28x28 in {cfg.data.patch}x{cfg.data.patch} patches (paper: 16x16); GroupNorm with "
    "{cfg.model.patch_groups} groups (paper: 32)",
    "{cfg.model.smooth_bins:if}continuous-bin embeddings start smooth in the bin value (initialisation only)",
]


class DataConfig(Config):
    tasks: list[str] = Field(TRAINING_TASKS, min_length=1, description="control tasks trained on")
    held_out: list[str] = Field(HELD_OUT, description="control tasks kept out of training (generalist-finetune)")
    episodes: int = Field(300, ge=1, description="expert episodes generated per classic-control task")
    babyai_episodes: int = Field(2000, ge=1, description="expert episodes generated per BabyAI level")
    data_seed: int = Field(0, description="seed of the generated episodes (the same for every run seed)")
    cache_dir: str = Field("data/generalist", description="where generated episodes are cached")
    mnist_dir: str = Field("../shared/data/mnist", description="MNIST in IDX format (t10k files)")
    caption_images: int = Field(9000, ge=0, description="MNIST images trained on (the first ones; 0: no captions)")
    patch: int = Field(7, ge=1, description="image patch side, in the data and the model (paper: 16; MNIST: 28 x 28)")
    missions_as_text: bool = Field(True, description="BabyAI's mission strings as text rows")

    @field_validator("tasks", "held_out")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        for name in names:
            control.get_task(name)
        return names


class MixConfig(Config):
    control: float = Field(0.8, ge=0, description="share of batch rows from control episodes")
    caption: float = Field(0.1, ge=0, description="share of rows of image-caption pairs")
    text: float = Field(0.1, ge=0, description="share of rows of text")
    prompt_fraction: float = Field(0.25, ge=0, le=1, description="control rows prompted by a demonstration (§3.3)")


class EvalConfig(Config):
    episodes: int = Field(50, ge=1, description="rollouts per task and condition (paper: 50)")
    greedy: bool = Field(False, description="take the most likely action token (false: sample, as Gato)")
    caption_images: int = Field(1000, ge=1, description="held-out MNIST images captioned (the last ones)")
    nearest_neighbour: bool = Field(True, description="also evaluate the 1-NN retrieval agent")
    record: str = Field("lunarlander", description="task of the GIF of the generalist acting ('': none)")


class GeneralistConfig(Config):
    seed: int = Field(0, description="seed of initialisation and batches")
    data: DataConfig = DataConfig()
    model: GatoConfig = GatoConfig()
    mix: MixConfig = MixConfig()
    specialists: bool = Field(True, description="train one specialist per training task")
    train: TrainConfig = TrainConfig(
        steps=1_000_000, batch_size=512, optimizer="adamw", lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
        warmup_steps=15_000, decay="cosine", min_lr_ratio=0.1, eval_every=10_000, checkpoint_every=1000,
    )  # fmt: skip
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _check(self):
        if self.eval.record and self.eval.record not in self.data.tasks:
            raise ValueError(f"eval.record ({self.eval.record!r}) must be one of data.tasks or ''")
        if overlap := set(self.data.tasks) & set(self.data.held_out):
            raise ValueError(f"data.held_out shares {sorted(overlap)} with data.tasks")
        if self.model.channels != 1:
            raise ValueError(f"model.channels ({self.model.channels}) must be 1: the images are MNIST digits (grey)")
        return self


class GatoLearner(nn.Module):
    """``forward(batch) -> (loss, logs)`` for the training loop."""

    def __init__(self, gato: Gato):
        super().__init__()
        self.gato = gato

    def forward(self, batch: data_lib.Batch):
        loss = self.gato.loss(batch.ids, batch.local, batch.target, batch.is_patch, batch.pixels, batch.intervals)
        return loss, {"loss": loss.detach()}


def task_data(cfg: GeneralistConfig, name: str) -> control.TaskData:
    task = control.get_task(name)
    episodes = cfg.data.babyai_episodes if task.babyai else cfg.data.episodes
    return control.load_or_generate(task, episodes, cfg.data.data_seed, cfg.data.cache_dir)


def captioned_images(cfg: GeneralistConfig, split: Literal["train", "test"]):
    from engramlab.tasks.mnist import load_mnist

    images, labels = load_mnist(cfg.data.mnist_dir)
    rows = slice(0, cfg.data.caption_images) if split == "train" else slice(len(images) - cfg.eval.caption_images, None)
    return images[rows], [f"the digit {DIGITS[int(d)]}" for d in labels[rows]]


def build_sampler(cfg: GeneralistConfig, tasks: list[str], with_other_modalities: bool) -> data_lib.Sampler:
    builder = data_lib.CorpusBuilder()
    datas = [task_data(cfg, name) for name in tasks]
    table = data_lib.episode_table([data_lib.add_control_task(builder, d) for d in datas])
    captions = texts = None
    if with_other_modalities and cfg.data.caption_images:
        captions = data_lib.add_captions(builder, *captioned_images(cfg, "train"), cfg.data.patch)
    if with_other_modalities and cfg.data.missions_as_text:
        missions = sorted({m for d in datas for m in d.episodes.missions if m})
        texts = data_lib.add_texts(builder, missions) if missions else None
    mix = data_lib.Mix(cfg.mix.control, cfg.mix.caption, cfg.mix.text)
    patch_shape = (1, cfg.data.patch, cfg.data.patch)
    return data_lib.Sampler(
        builder.build(patch_shape), table, captions, texts, cfg.model.context, mix, cfg.mix.prompt_fraction
    )


def evaluation_seed(cfg: GeneralistConfig, task: str) -> int:
    """First environment seed of a task's evaluation episodes: apart from the data's seeds and
    from every other task's, the same for every arm (and for the GIF)."""
    return 10_000 + 1000 * cfg.data.tasks.index(task)


def demonstration_prompts(data: control.TaskData, count: int, context: int, seed: int):
    """One prompt per episode: timesteps (≤ half the context) of a random expert episode with its
    mission, drawn exactly as training's prompts (half from the episode's end, half from anywhere
    in it, §3.3), so evaluation conditions the model as training did."""
    builder = data_lib.CorpusBuilder()
    table = data_lib.episode_table([data_lib.add_control_task(builder, data)])
    corpus = builder.build()
    generator = torch.Generator().manual_seed(seed)
    start, length = data_lib.control_segments(table, torch.zeros(count, dtype=torch.long), context, 1.0, generator)
    prompts = []
    for i in range(count):  # a row's prompt is its first two segments, from the episode's end or not
        spans = [(int(s), int(n)) for s, n in zip(start[i, :2], length[i, :2]) if n]
        ids = torch.cat([corpus.ids[s : s + n] for s, n in spans])
        local = torch.cat([corpus.local[s : s + n] for s, n in spans])
        prompts.append(data_lib.tok.Tokens(ids, local, torch.zeros_like(ids, dtype=torch.bool)))
    return prompts


class Generalist(Experiment):
    name = "generalist"
    description = "A Gato-style generalist: control, BabyAI, captions and text in one transformer (Reed et al. 2022)"
    Config = GeneralistConfig
    presets = {
        "quick": {
            "model": {"layers": 4, "width": 128, "heads": 4, "mlp": 512, "dropout": 0, "context": 256, "rotary": True},
            "train": {
                "steps": 4000,
                "batch_size": 16,
                "optimizer": "adamw",
                "lr": 1e-3,
                "warmup_steps": 200,
                "decay": "cosine",
                "min_lr_ratio": 0.1,
                "eval_every": 500,
                "checkpoint_every": 500,
            },  # fmt: skip
            "eval": {"episodes": 20},
        },
        "paper": {},
    }
    deviations = {
        "quick": [
            "{cfg.model.layers} layers x {cfg.model.width} (about 1M parameters), context {cfg.model.context}, "
            "{cfg.train.steps:k} updates of batch {cfg.train.batch_size} (paper: 79M+, 1024, 1M x 512)",
            "{cfg.model.dropout:unless}no dropout (paper: 0.1): on a CPU the dropout masks took half of a training "
            "step (torch.profiler)",
            "{cfg.model.rotary:if}rotary positions on queries and keys (RoFormer) give the tokens' order; the paper "
            "names only local and patch positions, and without an order the model cannot tell the latest "
            "observation from older ones",
            "{cfg.eval.episodes} rollouts per task and condition (paper: 50)",
            *COMMON_DEVIATIONS,
        ],
        "paper": COMMON_DEVIATIONS,
    }
    paper = [
        PaperNumber(
            "generalist/tasks_above_50", "share of tasks >= 50 % of expert", 450 / 604, "> 450 of 604 tasks", "§4.1"
        ),
    ]

    def arms(self, cfg: GeneralistConfig) -> list[str]:
        specialists = [f"specialist-{t}" for t in cfg.data.tasks] if cfg.specialists else []
        return ["generalist", *specialists]

    def arm_cost(self, cfg: GeneralistConfig, arm: str) -> float:
        return self.train_config(cfg, arm).steps

    def prepare(self, cfg: GeneralistConfig) -> GeneralistConfig:
        for name in [*cfg.data.tasks, *cfg.data.held_out]:  # generate (or find) every task's episodes once
            task_data(cfg, name)
        return cfg

    def train_config(self, cfg: GeneralistConfig, arm: str) -> TrainConfig:
        if arm == "generalist":
            return cfg.train
        share = cfg.mix.control / (cfg.mix.control + cfg.mix.caption + cfg.mix.text) / len(cfg.data.tasks)
        t = cfg.train
        scale = lambda steps: max(1, round(steps * share))  # noqa: E731
        return t.model_copy(
            update={
                "steps": max(t.log_every, scale(t.steps)),
                "warmup_steps": scale(t.warmup_steps),
                "eval_every": scale(t.eval_every),
                "checkpoint_every": t.log_every * max(1, scale(t.checkpoint_every) // t.log_every),
            }
        )

    def build(self, cfg: GeneralistConfig, arm: str) -> GatoLearner:
        torch.manual_seed(cfg.seed)
        return GatoLearner(Gato(cfg.model, patch=cfg.data.patch))

    def sampler(self, cfg: GeneralistConfig, arm: str) -> Callable:
        tasks = cfg.data.tasks if arm == "generalist" else [arm.removeprefix("specialist-")]
        return build_sampler(cfg, tasks, with_other_modalities=arm == "generalist")

    def monitor(self, cfg: GeneralistConfig, arm: str) -> Callable:
        """Teacher-forced loss on one fixed batch (a cheap learning curve; rollouts are the real test)."""
        batch = self.sampler(cfg, arm)(64, torch.Generator().manual_seed(12345))

        def run(model: GatoLearner) -> dict[str, float]:
            with torch.no_grad():
                return {"fixed_batch_loss": float(model(batch)[0])}

        return run

    def evaluate(self, cfg: GeneralistConfig, arm: str, model: GatoLearner) -> dict[str, Any]:
        gato = model.gato
        tasks = cfg.data.tasks if arm == "generalist" else [arm.removeprefix("specialist-")]
        datas = {name: task_data(cfg, name) for name in tasks}  # each task's cache read once
        results: dict[str, Any] = {
            "tasks": {name: self.rollouts(cfg, gato, data, evaluation_seed(cfg, name)) for name, data in datas.items()}
        }
        if arm == "generalist":
            if cfg.data.caption_images:
                images, captions = captioned_images(cfg, "test")
                written = caption(gato, images, cfg.data.patch)
                results["caption_accuracy"] = float(np.mean([w == c for w, c in zip(written, captions)]))
                results["caption_examples"] = [[c, w] for c, w in zip(captions[:10], written[:10])]
            if cfg.eval.nearest_neighbour:
                from engramlab.models.nearest_neighbour import NearestNeighbourAgent
                from engramlab.models.nearest_neighbour import run_episodes as nn_episodes

                results["nearest_neighbour"] = {}
                for name, data in datas.items():
                    returns = nn_episodes(NearestNeighbourAgent(data), cfg.eval.episodes, evaluation_seed(cfg, name))
                    results["nearest_neighbour"][name] = float(data.normalised(returns.mean()))
        return results

    def rollouts(self, cfg: GeneralistConfig, gato: Gato, data: control.TaskData, seed: int) -> dict[str, Any]:
        n, context = cfg.eval.episodes, cfg.model.context
        plain = run_episodes(gato, data.task, n, seed, context, greedy=cfg.eval.greedy)
        prompts = demonstration_prompts(data, n, context, seed)
        prompted = run_episodes(gato, data.task, n, seed, context, prompts, cfg.eval.greedy)
        out = {
            "normalised": float(data.normalised(plain.returns.mean())),
            "normalised_prompted": float(data.normalised(prompted.returns.mean())),
            "return": float(plain.returns.mean()),
            "return_prompted": float(prompted.returns.mean()),
            "return_std_prompted": float(prompted.returns.std()),
            "expert_score": data.expert_score,
            "random_score": data.random_score,
        }
        return out

    def summarize(self, cfg: GeneralistConfig, results: dict[str, dict[str, Any]]) -> dict[str, float]:
        general = results["generalist"]
        metrics: dict[str, float] = {}
        for condition, key in (("", "normalised_prompted"), ("_no_prompt", "normalised")):
            scores = np.array([general["tasks"][t][key] for t in cfg.data.tasks])
            metrics[f"generalist/tasks_above_50{condition}"] = float((scores >= 0.5).mean())
            metrics[f"generalist/tasks_above_80{condition}"] = float((scores >= 0.8).mean())
            metrics[f"generalist/mean_normalised{condition}"] = float(scores.mean())
        for t in cfg.data.tasks:
            metrics[f"generalist/{t}"] = general["tasks"][t]["normalised_prompted"]
            metrics[f"generalist/{t}_no_prompt"] = general["tasks"][t]["normalised"]
            if f"specialist-{t}" in results:
                metrics[f"specialist/{t}"] = results[f"specialist-{t}"]["tasks"][t]["normalised_prompted"]
            if "nearest_neighbour" in general:
                metrics[f"nearest-neighbour/{t}"] = general["nearest_neighbour"][t]
        if cfg.specialists:
            specialist = np.mean([metrics[f"specialist/{t}"] for t in cfg.data.tasks])
            metrics["specialist/mean_normalised"] = float(specialist)
            metrics["generalist/points_below_specialists"] = float(
                100 * (specialist - metrics["generalist/mean_normalised"])
            )
        if "nearest_neighbour" in general:
            metrics["nearest-neighbour/mean_normalised"] = float(np.mean(list(general["nearest_neighbour"].values())))
        if "caption_accuracy" in general:
            metrics["generalist/caption_accuracy"] = general["caption_accuracy"]
        return metrics

    def record(self, cfg: GeneralistConfig, arm: str, model: GatoLearner, out_dir: Path) -> list[Path]:
        """The trained generalist's first prompted evaluation episode of ``eval.record``, as a GIF."""
        if arm != "generalist" or not cfg.eval.record:
            return []
        data = task_data(cfg, cfg.eval.record)
        seed = evaluation_seed(cfg, cfg.eval.record)
        prompts = demonstration_prompts(data, 1, cfg.model.context, seed)
        episode = run_episodes(model.gato, data.task, 1, seed, cfg.model.context, prompts, cfg.eval.greedy, record=True)
        return [save_gif(episode.frames[::2], out_dir / "agent.gif", milliseconds=80, shrink=2)]  # every other frame

    def plot(self, cfg: GeneralistConfig, results: dict[str, dict[str, Any]], run_dir: Path, out_dir: Path):
        return [
            plots.threshold_curve(cfg, results, out_dir / "threshold_curve.png"),
            plots.task_bars(cfg, results, out_dir / "task_scores.png"),
            plots.learning_curves(run_dir, list(results), out_dir / "learning_curves.png"),
        ]


EXPERIMENT = Generalist()

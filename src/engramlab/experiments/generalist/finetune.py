"""Transfer to held-out tasks: fine-tune the generalist on a few demonstrations, against the same
model trained from scratch on them (Reed et al. 2022, "A Generalist Agent", §5.2).

``pretrained`` names a finished ``engram run generalist`` directory; its config fixes the model's
shape and the data settings. ``tasks`` are the tasks to transfer to (by default its
``data.held_out``); none of them may be one it trained on. For each such task and each number of
demonstrations (the first expert episodes of the task's
cached data, kept ≥ 80 % of the expert as in training), two arms train on the same batches:

- ``<task>-<n>demos-pretrained``: starts from the generalist's weights;
- ``<task>-<n>demos-scratch``: starts from a fresh initialisation.

Both are evaluated as the generalist is: rollouts with a demonstration prompt (taken from the same
n demonstrations) and without, normalised between the random policy and the expert. The paper
fine-tunes for its own number of steps per task; ours is ``train.steps`` for every arm.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from engramlab.config import Config, load_yaml
from engramlab.engine.checkpoint import load_checkpoint
from engramlab.engine.experiment import Experiment, PaperNumber
from engramlab.engine.plots import plt, save
from engramlab.engine.train import TrainConfig
from engramlab.errors import ConfigError
from engramlab.experiments.generalist.generalist import Generalist, GeneralistConfig, demonstration_prompts, task_data
from engramlab.models.gato_agent import run_episodes
from engramlab.tasks import control
from engramlab.tasks import generalist as data_lib


class EvalConfig(Config):
    episodes: int = Field(50, ge=1, description="rollouts per arm and condition (paper: 50)")
    greedy: bool = Field(False, description="take the most likely action token (false: sample, as Gato)")


class FinetuneConfig(Config):
    seed: int = Field(0, description="seed of initialisation (scratch arms) and batches")
    pretrained: str = Field("", description="run directory of a finished `engram run generalist`")
    tasks: list[str] = Field(
        [], description="tasks fine-tuned on ([]: the pretrained run's data.held_out); none may be one it trained on"
    )
    demonstrations: list[int] = Field([10, 100], min_length=1, description="expert episodes fine-tuned on")
    train: TrainConfig = TrainConfig(steps=1000, batch_size=32, optimizer="adamw", lr=1e-4, eval_every=250)
    eval: EvalConfig = EvalConfig()

    @field_validator("tasks")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        for name in names:
            control.get_task(name)  # an unknown name is one clear error, before a run directory exists
        return names


def pretrained_config(cfg: FinetuneConfig) -> GeneralistConfig:
    run = Path(cfg.pretrained)
    if not cfg.pretrained or not (run / "generalist" / "checkpoint.safetensors").is_file():
        raise ConfigError(
            f"pretrained = {cfg.pretrained!r}: not a finished `engram run generalist` directory "
            "(it needs config.yaml and generalist/checkpoint.safetensors)"
        )
    return GeneralistConfig.model_validate(load_yaml(run / "config.yaml"))


def parse_arm(arm: str) -> tuple[str, int, bool]:
    """``"babyai-pickuploc-10demos-pretrained"`` -> (task, 10, True)."""
    task, demos, start = arm.rsplit("-", 2)
    return task, int(demos.removesuffix("demos")), start == "pretrained"


class GeneralistFinetune(Experiment):
    name = "generalist-finetune"
    description = "Fine-tuning the generalist on held-out tasks from 10 and 100 demonstrations vs from scratch"
    Config = FinetuneConfig
    presets = {
        "quick": {"train": {"steps": 500, "lr": 3e-4, "warmup_steps": 50, "eval_every": 100}, "eval": {"episodes": 20}},
        "paper": {},
    }
    deviations = {
        "quick": [
            "{cfg.train.steps:k} updates of batch {cfg.train.batch_size} for every arm; {cfg.eval.episodes} rollouts "
            "per condition (paper: 50)"
        ],
        "paper": ["the same number of updates for every arm (the paper's schedule per task is not in our notes)"],
    }
    paper = [
        PaperNumber("pretrained_beats_scratch", "fine-tuned beats scratch", None, "on most held-out tasks", "§5.2")
    ]

    def prepare(self, cfg: FinetuneConfig) -> FinetuneConfig:
        base = pretrained_config(cfg)
        for task in {parse_arm(arm)[0] for arm in self.arms(cfg)}:  # generate (or find) their episodes once
            task_data(base, task)
        return cfg

    def arms(self, cfg: FinetuneConfig) -> list[str]:
        base = pretrained_config(cfg)
        tasks = cfg.tasks or base.data.held_out
        if not tasks:
            raise ConfigError(
                f"{cfg.pretrained}: its data.held_out is empty and no tasks are given, nothing to fine-tune on"
            )
        if trained := sorted(set(tasks) & set(base.data.tasks)):
            raise ConfigError(f"tasks {trained}: the pretrained generalist trained on them (they must be held out)")
        return [
            f"{t}-{n}demos-{start}" for t in tasks for n in cfg.demonstrations for start in ("pretrained", "scratch")
        ]

    def build(self, cfg: FinetuneConfig, arm: str):
        base = pretrained_config(cfg)
        model = Generalist().build(base.model_copy(update={"seed": cfg.seed}), "generalist")
        if parse_arm(arm)[2]:
            weights = load_checkpoint(Path(cfg.pretrained) / "generalist" / "checkpoint.safetensors", with_state=False)
            model.load_state_dict(weights.model)
        return model

    def demonstrations(self, cfg: FinetuneConfig, arm: str):
        task, n, _ = parse_arm(arm)
        data = task_data(pretrained_config(cfg), task)
        if len(data.episodes) < n:
            raise ConfigError(f"{task}: {len(data.episodes)} cached demonstrations, fewer than the {n} asked for")
        data.episodes = data.episodes.select(np.arange(n))
        return data

    def sampler(self, cfg: FinetuneConfig, arm: str) -> Callable:
        base = pretrained_config(cfg)
        builder = data_lib.CorpusBuilder()
        table = data_lib.episode_table([data_lib.add_control_task(builder, self.demonstrations(cfg, arm))])
        return data_lib.Sampler(builder.build(), table, None, None, base.model.context, None, base.mix.prompt_fraction)

    def evaluate(self, cfg: FinetuneConfig, arm: str, model) -> dict[str, Any]:
        base = pretrained_config(cfg)
        data = self.demonstrations(cfg, arm)
        n, context, seed = cfg.eval.episodes, base.model.context, 50_000
        plain = run_episodes(model.gato, data.task, n, seed, context, greedy=cfg.eval.greedy)
        prompts = demonstration_prompts(data, n, context, seed)
        prompted = run_episodes(model.gato, data.task, n, seed, context, prompts, cfg.eval.greedy)
        return {
            "normalised": float(data.normalised(plain.returns.mean())),
            "normalised_prompted": float(data.normalised(prompted.returns.mean())),
            "return": float(plain.returns.mean()),
            "return_prompted": float(prompted.returns.mean()),
        }

    def summarize(self, cfg: FinetuneConfig, results: dict[str, dict[str, Any]]) -> dict[str, float]:
        metrics = {f"{arm}/{key}": value for arm, r in results.items() for key, value in r.items()}
        wins = [
            results[arm]["normalised_prompted"] > results[arm.replace("-pretrained", "-scratch")]["normalised_prompted"]
            for arm in results
            if arm.endswith("-pretrained")
        ]
        metrics["pretrained_beats_scratch"] = float(np.mean(wins))
        return metrics

    def plot(self, cfg: FinetuneConfig, results: dict[str, dict[str, Any]], run_dir: Path, out_dir: Path):
        tasks = sorted({parse_arm(a)[0] for a in results})
        fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.4), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            for i, start in enumerate(("pretrained", "scratch")):
                for style, key in (("-o", "normalised_prompted"), (":o", "normalised")):
                    values = [100 * results[f"{task}-{n}demos-{start}"][key] for n in cfg.demonstrations]
                    label = f"{'from the generalist' if start == 'pretrained' else 'from scratch'}"
                    label += ", prompted" if key == "normalised_prompted" else ", no prompt"
                    ax.plot(cfg.demonstrations, values, style, color=f"C{i}", label=label)
            ax.set_xscale("log")
            ax.set_xlabel("demonstrations")
            ax.set_ylabel("normalised score (% of expert)")
            ax.set_title(task)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        return [save(fig, out_dir / "finetune.png")]


EXPERIMENT = GeneralistFinetune()

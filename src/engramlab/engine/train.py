"""The one training loop used by every gradient-trained experiment.

``train(model, sample, cfg, directory, …)`` needs only:

- ``model(batch) -> (loss, logs)``: the module computes its own training loss (so the loop and
  DistributedDataParallel do not need to know what a batch contains);
- ``sample(batch_size, generator) -> batch``: data drawn from a seeded ``torch.Generator``;
- optionally ``monitor(model) -> metrics``: a cheap evaluation run every ``eval_every`` steps.

It does: Adam/AdamW with warm-up and decay, gradient clipping, a NaN/inf guard, metrics to
``metrics.jsonl`` and TensorBoard, atomic checkpoints (model, optimizer, RNG states, step),
``resume`` that continues bit for bit, a progress bar and DDP under ``torchrun``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from engramlab.config import Config
from engramlab.engine import distributed as dist
from engramlab.engine.checkpoint import CHECKPOINT_NAME, Checkpoint, load_checkpoint, save_checkpoint, unwrap
from engramlab.engine.progress import Progress
from engramlab.engine.rundir import MetricsLog, Stopwatch
from engramlab.errors import NonFiniteLossError


class TrainConfig(Config):
    steps: int = Field(10_000, ge=1, description="number of optimizer updates")
    batch_size: int = Field(128, ge=1, description="samples per update, summed over all processes")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="optimizer (sgd: plain SGD, no momentum)")
    lr: float = Field(3e-4, gt=0, description="peak learning rate")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas")
    weight_decay: float = Field(0.0, ge=0, description="weight decay (decoupled for adamw)")
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warm-up from 0")
    decay: Literal["constant", "cosine", "linear", "step"] = Field(
        "constant",
        description="learning-rate schedule after warm-up: cosine/linear down to min_lr_ratio * lr, "
        "or step: times decay_factor every decay_every steps",
    )
    decay_every: int = Field(1000, ge=1, description="steps between learning-rate cuts (decay = step)")
    decay_factor: float = Field(0.5, gt=0, le=1, description="learning-rate factor per cut (decay = step)")
    decay_start: int = Field(
        0, ge=0, description="steps after warm-up before the first decay_every starts (decay = step)"
    )
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final learning rate as a fraction of lr")
    grad_clip: float = Field(1.0, ge=0, description="clip the global gradient norm to this (0: off)")
    log_every: int = Field(100, ge=1, description="write averaged training metrics every this many steps")
    eval_every: int = Field(1000, ge=1, description="run the monitoring evaluation every this many steps")
    checkpoint_every: int = Field(1000, ge=1, description="write a checkpoint every this many steps")

    @model_validator(mode="after")
    def _check(self):
        if self.checkpoint_every % self.log_every:
            raise ValueError(
                f"train.checkpoint_every ({self.checkpoint_every}) must be a multiple of train.log_every "
                f"({self.log_every}) so that a resumed run logs the same windows"
            )
        return self


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Learning rate at 1-based ``step``: linear warm-up, then constant, cosine, linear or step decay."""
    if cfg.warmup_steps and step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    if cfg.decay == "constant":
        return cfg.lr
    if cfg.decay == "step":
        return cfg.lr * cfg.decay_factor ** (max(0, step - 1 - cfg.warmup_steps - cfg.decay_start) // cfg.decay_every)
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.decay == "cosine" else 1 - progress
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


@dataclass
class TrainResult:
    steps: int
    wall_time_s: float  # training time summed over resumed segments
    train_metrics: dict[str, float]  # last logged window
    monitor_metrics: dict[str, float]  # last monitoring evaluation
    resumed_from: int


def to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(to_device(b, device) for b in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def train(
    model: nn.Module,
    sample: Callable[[int, torch.Generator], Any],
    cfg: TrainConfig,
    directory: Path,
    *,
    seed: int,
    monitor: Callable[[nn.Module], dict[str, float]] | None = None,
    progress: Progress | None = None,
    resume: bool = False,
    device: torch.device | str = "cpu",
) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` updates; with ``resume``, continue from the checkpoint in
    ``directory`` and end in the same state as an uninterrupted run with the same seed."""
    device = torch.device(device)
    directory = Path(directory)
    rank, world = dist.rank(), dist.world_size()
    if cfg.batch_size % world:
        raise ValueError(f"train.batch_size {cfg.batch_size} is not divisible by the {world} processes")
    local_batch = cfg.batch_size // world
    main = rank == 0

    model.to(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + rank)  # each rank its own data
    optimizer = make_optimizer(model, cfg)
    start, elapsed, monitor_metrics = 0, 0.0, {}
    checkpoint_path = directory / CHECKPOINT_NAME
    if resume and checkpoint_path.exists():
        ckpt = load_checkpoint(checkpoint_path)
        model.load_state_dict(ckpt.model)
        optimizer.load_state_dict(ckpt.optimizer)
        torch.set_rng_state(ckpt.rng["torch"])
        generator.set_state(ckpt.rng[f"data{rank}"] if f"data{rank}" in ckpt.rng else ckpt.rng["data0"])
        start, elapsed = ckpt.step, float(ckpt.extra.get("wall_time_s", 0.0))
        monitor_metrics = ckpt.extra.get("monitor", {})
    # find_unused_parameters: a fixed-depth model never uses its halting unit
    trained = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model

    log = MetricsLog(directory, resume_step=start) if main else None
    window: dict[str, float] = defaultdict(float)
    window_steps, train_metrics = 0, {}
    clock = Stopwatch(offset=elapsed)
    window_clock = Stopwatch()
    if progress is not None:
        progress.start(total=cfg.steps, initial=start)

    def checkpoint(step: int) -> None:
        rng = {"torch": torch.get_rng_state()}
        for r, state in enumerate(gather_generator_states(generator)):
            rng[f"data{r}"] = state
        if main:
            extra = {"wall_time_s": clock.elapsed, "monitor": monitor_metrics}
            save_checkpoint(
                checkpoint_path, Checkpoint(step, unwrap(model).state_dict(), optimizer.state_dict(), rng, extra)
            )
        dist.barrier()

    model.train()
    try:
        for step in range(start + 1, cfg.steps + 1):
            lr = learning_rate(cfg, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = to_device(sample(local_batch, generator), device)
            loss, logs = trained(batch)
            if not dist.all_true(bool(torch.isfinite(loss))):
                raise NonFiniteLossError(non_finite_message("loss", loss, step, checkpoint_path))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            if not dist.all_true(bool(torch.isfinite(grad_norm))):
                raise NonFiniteLossError(non_finite_message("gradient norm", grad_norm, step, checkpoint_path))
            optimizer.step()

            for key, value in logs.items():
                window[key] += float(value)
            window["grad_norm"] += float(grad_norm)
            window_steps += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                seconds = window_clock.elapsed
                train_metrics = {f"train/{k}": v / window_steps for k, v in window.items()}
                train_metrics.update(
                    {"train/lr": lr, "time/steps_per_s": window_steps / seconds, "time/elapsed_s": clock.elapsed}
                )
                train_metrics["time/samples_per_s"] = train_metrics["time/steps_per_s"] * cfg.batch_size
                if log is not None:
                    log.log(step, train_metrics)
                window.clear()
                window_steps, window_clock = 0, Stopwatch()
            if monitor is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
                if main:
                    monitor_metrics = run_monitor(monitor, model)
                    log.log(step, monitor_metrics)
                dist.barrier()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                checkpoint(step)
            if progress is not None:
                progress.update(step, postfix_of(train_metrics, monitor_metrics))
    finally:
        if log is not None:
            log.close()
        if progress is not None:
            progress.close()
    return TrainResult(cfg.steps, clock.elapsed, train_metrics, monitor_metrics, start)


def run_monitor(monitor: Callable[[nn.Module], dict[str, float]], model: nn.Module) -> dict[str, float]:
    model.eval()
    try:
        return {f"eval/{k}": float(v) for k, v in monitor(model).items()}
    finally:
        model.train()


def gather_generator_states(generator: torch.Generator) -> list[torch.Tensor]:
    """Every rank's data-generator state (so that each rank resumes its own data stream)."""
    state = generator.get_state()
    if not dist.is_distributed():
        return [state]
    import torch.distributed as tdist

    states = [None] * dist.world_size()
    tdist.all_gather_object(states, state)
    return states


def non_finite_message(what: str, value: torch.Tensor, step: int, checkpoint_path: Path) -> str:
    kept = f"last good checkpoint kept: {checkpoint_path}" if checkpoint_path.exists() else "no checkpoint yet"
    return f"{what} is {value.item()} at step {step}; training stopped ({kept})"


def postfix_of(train_metrics: dict[str, float], monitor_metrics: dict[str, float]) -> dict[str, str]:
    shown = {}
    if "train/loss" in train_metrics:
        shown["loss"] = f"{train_metrics['train/loss']:.3f}"
    if "train/expected_steps" in train_metrics:
        shown["steps"] = f"{train_metrics['train/expected_steps']:.1f}"
    for key, value in monitor_metrics.items():
        if key.endswith("accuracy"):
            shown[key.removeprefix("eval/").removesuffix("_accuracy")[:6]] = f"{value:.3f}"
    return shown

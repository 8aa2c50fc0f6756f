"""Gradient training: the stepper of the one loop (:mod:`engramlab.engine.loop`) for every
gradient-trained experiment.

``train(model, sample, cfg, directory, …)`` needs only:

- ``model(batch) -> (loss, logs)``: the module computes its own training loss (so the loop and
  DistributedDataParallel do not need to know what a batch contains);
- ``sample(batch_size, generator) -> batch``: data drawn from a seeded ``torch.Generator``; a
  sampler with a ``step`` parameter is also given the 1-based update the batch is for (a
  curriculum: the step comes from the loop, so a resumed run draws the same data);
- optionally ``monitor(model) -> metrics``: a cheap evaluation run every ``eval_every`` steps.

One step (:class:`GradientStepper`): Adam/AdamW/SGD with warm-up and decay, gradient clipping, a
NaN/inf guard, DDP under ``torchrun``. The loop around it writes metrics, atomic checkpoints
(model, optimizer, RNG states, step) and progress, and resumes bit for bit.
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from engramlab.config import Config
from engramlab.engine import distributed as dist
from engramlab.engine.checkpoint import Checkpoint, unwrap
from engramlab.engine.loop import Monitor, NonFinite, Schedule, Stepper, TrainResult, run_loop
from engramlab.engine.progress import Progress


class TrainConfig(Config):
    steps: int = Field(10_000, ge=1, description="number of optimizer updates")
    batch_size: int = Field(128, ge=1, description="samples per update, summed over all processes")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop-tf1"] = Field(
        "adam",
        description="optimizer (sgd: SGD with `momentum`; rmsprop-tf1: TensorFlow 1's RMSPropOptimizer, decay 0.9, "
        "epsilon 1e-10 inside the square root, mean square starting at 1, with `momentum`, as Banino et al. 2018)",
    )
    momentum: float = Field(0.0, ge=0, lt=1, description="momentum of sgd and rmsprop-tf1 (0: none)")
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
    grad_value_clip: float = Field(
        0.0, ge=0, description="then clip every gradient element to [-this, this] (0: off; Banino et al. 2018: 1e-5)"
    )
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
    """The optimizer over the model's parameters. A model may instead name the ones it trains, in
    groups, with ``parameter_groups() -> [{"params": …, "lr_scale": s}, …]``: each group then
    follows the schedule times its ``lr_scale`` (Frozen's fine-tuned LM at 1/30 of the lr)."""
    params = model.parameter_groups() if hasattr(model, "parameter_groups") else model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop-tf1":
        return RMSpropTF1(params, lr=cfg.lr, momentum=cfg.momentum)
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


class RMSpropTF1(torch.optim.Optimizer):
    """TensorFlow 1's ``RMSPropOptimizer`` (non-centred), which Banino et al. 2018 trained with:
    ``ms = decay·ms + (1 - decay)·g²``, ``mom = momentum·mom + lr·g / sqrt(ms + eps)``, ``w -= mom``,
    with ``ms`` starting at 1. PyTorch's RMSprop differs where it matters for gradients clipped to
    1e-5 (pytorch/pytorch#32545): its epsilon sits outside the square root and its mean square
    starts at 0, so its first steps are full-size where TensorFlow's are tiny."""

    def __init__(self, params, lr: float, decay: float = 0.9, momentum: float = 0.0, eps: float = 1e-10):
        super().__init__(params, {"lr": lr, "decay": decay, "momentum": momentum, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["ms"], state["mom"] = torch.ones_like(p), torch.zeros_like(p)
                ms, mom = state["ms"], state["mom"]
                ms.mul_(group["decay"]).addcmul_(p.grad, p.grad, value=1 - group["decay"])
                mom.mul_(group["momentum"]).addcdiv_(p.grad, (ms + group["eps"]).sqrt(), value=group["lr"])
                p.sub_(mom)


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


class GradientStepper(Stepper):
    """One optimizer update per step on a batch of ``sample``; logs the window's mean of the model's
    logs and of the gradient norm."""

    def __init__(self, model: nn.Module, sample, cfg: TrainConfig, *, seed: int, device: torch.device):
        rank, world = dist.rank(), dist.world_size()
        if cfg.batch_size % world:
            raise ValueError(f"train.batch_size {cfg.batch_size} is not divisible by the {world} processes")
        self.model, self.sample, self.cfg, self.device = model.to(device), sample, cfg, device
        self.sample_takes_step = "step" in inspect.signature(sample).parameters
        self.local_batch, self.rank = cfg.batch_size // world, rank
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed * 1_000_003 + rank)  # each rank its own data
        self.optimizer = make_optimizer(model, cfg)
        # find_unused_parameters: a fixed-depth model never uses its halting unit
        self.trained = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
        self.sums: dict[str, float] = defaultdict(float)
        self.lr = cfg.lr
        model.train()

    def step(self, n: int) -> None:
        self.lr = learning_rate(self.cfg, n)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * group.get("lr_scale", 1.0)
        when = {"step": n} if self.sample_takes_step else {}
        batch = to_device(self.sample(self.local_batch, self.generator, **when), self.device)
        loss, logs = self.trained(batch)
        if not dist.all_true(bool(torch.isfinite(loss))):
            raise NonFinite(f"loss is {loss.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip or math.inf)
        if self.cfg.grad_value_clip:
            nn.utils.clip_grad_value_(self.model.parameters(), self.cfg.grad_value_clip)
        if not dist.all_true(bool(torch.isfinite(grad_norm))):
            raise NonFinite(f"gradient norm is {grad_norm.item()}")
        self.optimizer.step()
        for key, value in logs.items():
            self.sums[key] += float(value)
        self.sums["grad_norm"] += float(grad_norm)

    def window(self, n: int, steps: int, seconds: float) -> dict[str, float]:
        metrics = {f"train/{k}": v / steps for k, v in self.sums.items()}
        metrics["train/lr"] = self.lr
        metrics["time/samples_per_s"] = steps * self.cfg.batch_size / max(seconds, 1e-9)
        self.sums.clear()
        return metrics

    def state(self) -> Checkpoint:
        rng = {"torch": torch.get_rng_state()}
        for r, state in enumerate(gather_generator_states(self.generator)):
            rng[f"data{r}"] = state
        return Checkpoint(0, unwrap(self.model).state_dict(), self.optimizer.state_dict(), rng)

    def restore(self, ckpt: Checkpoint) -> None:
        self.model.load_state_dict(ckpt.model)
        self.optimizer.load_state_dict(ckpt.optimizer)
        torch.set_rng_state(ckpt.rng["torch"])
        own = f"data{self.rank}"
        self.generator.set_state(ckpt.rng[own] if own in ckpt.rng else ckpt.rng["data0"])

    def postfix(self, metrics: dict[str, float], monitor_metrics: dict[str, float]) -> dict[str, str]:
        shown = {}
        if "train/loss" in metrics:
            shown["loss"] = f"{metrics['train/loss']:.3f}"
        if "train/expected_steps" in metrics:
            shown["steps"] = f"{metrics['train/expected_steps']:.1f}"
        for key, value in monitor_metrics.items():
            if key.endswith("accuracy"):
                shown[key.removeprefix("eval/").removesuffix("_accuracy")[:6]] = f"{value:.3f}"
        return shown


def train(
    model: nn.Module,
    sample: Callable[[int, torch.Generator], Any],
    cfg: TrainConfig,
    directory: Path,
    *,
    seed: int,
    monitor: Monitor | None = None,
    progress: Progress | None = None,
    resume: bool = False,
    device: torch.device | str = "cpu",
) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` updates; with ``resume``, continue from the checkpoint in
    ``directory`` and end in the same state as an uninterrupted run with the same seed."""
    stepper = GradientStepper(model, sample, cfg, seed=seed, device=torch.device(device))
    schedule = Schedule(cfg.steps, cfg.log_every, cfg.checkpoint_every, cfg.eval_every)
    return run_loop(stepper, schedule, directory, monitor=monitor, progress=progress, resume=resume)


def gather_generator_states(generator: torch.Generator) -> list[torch.Tensor]:
    """Every rank's data-generator state (so that each rank resumes its own data stream)."""
    state = generator.get_state()
    if not dist.is_distributed():
        return [state]
    import torch.distributed as tdist

    states = [None] * dist.world_size()
    tdist.all_gather_object(states, state)
    return states

"""The one loop scaffold: resume, logging, checkpoints and progress, the same for every kind of training.

``run_loop(stepper, schedule, directory, …)`` repeats ``stepper.step(n)`` for n = 1 … ``schedule.total``
and does everything around it, so that a stepper holds only what one unit of work needs:

- **resume**: with ``resume`` and a checkpoint in ``directory``, the stepper's state (model,
  optimizer or strategy, random streams) is restored and the loop continues at the next step, so
  the run ends exactly where an uninterrupted one would;
- **logging**: every ``log_every`` steps, the stepper's metrics for the window (means over it, or
  the latest values) plus the speed ``time/<unit>_per_s`` and ``time/elapsed_s`` go to
  ``metrics.jsonl`` and TensorBoard;
- **monitoring**: every ``eval_every`` steps, ``monitor(model)`` (a cheap evaluation, the
  learning curve) is logged under ``eval/``;
- **checkpoints**: every ``checkpoint_every`` steps and at the end, one atomic, checksummed
  ``checkpoint.safetensors`` with the stepper's state, the step, the wall time and the last
  monitor metrics (the one before it is kept: resume falls back to it if this one is damaged);
- **non-finite values**: a stepper raises :class:`NonFinite` (or its weights go non-finite before
  a checkpoint); the run stops with one line that says where and names the last checkpoint that
  passes every check;
- **progress**: a bar with the stepper's short summary.

Under ``torchrun`` every rank runs the loop; rank 0 alone logs, monitors and writes.

The steppers: gradient training (:mod:`engramlab.engine.train`), evolution
(:mod:`engramlab.evolve.loop`) and the bacteria simulation
(:mod:`engramlab.experiments.evolution.bacteria`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from engramlab.engine import distributed as dist
from engramlab.engine.checkpoint import CHECKPOINT_NAME, Checkpoint, good_checkpoint, load_latest, save_checkpoint
from engramlab.engine.progress import Progress
from engramlab.engine.rundir import MetricsLog, Stopwatch
from engramlab.errors import NonFiniteLossError

Monitor = Callable[[nn.Module], dict[str, float]]


class NonFinite(Exception):
    """Raised by a stepper whose step produced NaN or inf; the message says what (``loss is nan``)."""


@dataclass(frozen=True)
class Schedule:
    total: int  # steps of the whole run
    log_every: int
    checkpoint_every: int
    eval_every: int | None = None  # None: no monitoring


@dataclass
class TrainResult:
    steps: int
    wall_time_s: float  # training time summed over resumed segments
    train_metrics: dict[str, float]  # last logged window
    monitor_metrics: dict[str, float]  # last monitoring evaluation
    resumed_from: int


class Stepper:
    """One unit of work of a loop (a gradient update, a generation, a simulation step) and the
    state it needs; :func:`run_loop` calls these methods."""

    unit = "steps"  # plural name of one unit of work: the speed is logged as time/<unit>_per_s
    model: nn.Module  # what checkpoints save and the monitor evaluates

    def step(self, n: int) -> None:
        """Do step ``n`` (1-based); raise :class:`NonFinite` if it produced NaN or inf."""
        raise NotImplementedError

    def window(self, n: int, steps: int, seconds: float) -> dict[str, float]:
        """Metrics of the ``steps`` steps up to step ``n``, which took ``seconds``; start a new window."""
        raise NotImplementedError

    def state(self) -> Checkpoint:
        """Everything needed to continue from here (called on every rank: it may gather their states);
        ``step`` and ``extra`` are filled in by the loop."""
        raise NotImplementedError

    def restore(self, ckpt: Checkpoint) -> None:
        """Continue from ``ckpt`` (written by :meth:`state`)."""
        raise NotImplementedError

    def monitored(self) -> nn.Module:
        """The model the monitor evaluates, up to date (default: ``self.model``)."""
        return self.model

    def postfix(self, metrics: dict[str, float], monitor_metrics: dict[str, float]) -> dict[str, str]:
        """A few numbers for the progress bar."""
        return {}


def run_loop(
    stepper: Stepper,
    schedule: Schedule,
    directory: Path,
    *,
    monitor: Monitor | None = None,
    progress: Progress | None = None,
    resume: bool = False,
) -> TrainResult:
    """Run ``stepper`` for ``schedule.total`` steps into ``directory``; see the module docstring."""
    directory = Path(directory)
    checkpoint_path = directory / CHECKPOINT_NAME
    main = dist.is_main()
    start, elapsed, metrics, monitor_metrics = 0, 0.0, {}, {}
    ckpt = load_latest(directory, warn=warn) if resume else None
    if ckpt is not None:
        stepper.restore(ckpt)
        start, elapsed = ckpt.step, float(ckpt.extra.get("wall_time_s", 0.0))
        monitor_metrics = ckpt.extra.get("monitor", {})

    log = MetricsLog(directory, resume_step=start) if main else None
    clock, window_clock, window_steps = Stopwatch(offset=elapsed), Stopwatch(), 0
    if progress is not None:
        progress.start(total=schedule.total, initial=start)

    def due(n: int, every: int | None) -> bool:
        return every is not None and (n % every == 0 or n == schedule.total)

    try:
        for n in range(start + 1, schedule.total + 1):
            try:
                stepper.step(n)
            except NonFinite as exc:
                raise stopped(exc, stepper, n, directory) from None
            window_steps += 1
            if due(n, schedule.log_every):
                seconds = window_clock.elapsed
                metrics = stepper.window(n, window_steps, seconds)
                metrics[f"time/{stepper.unit}_per_s"] = window_steps / max(seconds, 1e-9)
                metrics["time/elapsed_s"] = clock.elapsed
                if log is not None:
                    log.log(n, metrics)
                window_steps, window_clock = 0, Stopwatch()
            if monitor is not None and due(n, schedule.eval_every):
                if main:
                    monitor_metrics = run_monitor(monitor, stepper.monitored())
                    log.log(n, monitor_metrics)
                dist.barrier()
            if due(n, schedule.checkpoint_every):
                ckpt = stepper.state()  # on every rank: under DDP it gathers each rank's data stream
                if main:
                    ckpt.step, ckpt.extra = n, {"wall_time_s": clock.elapsed, "monitor": monitor_metrics}
                    ckpt.finite = [name for name, _ in stepper.model.named_parameters()]
                    try:
                        save_checkpoint(checkpoint_path, ckpt)
                    except NonFiniteLossError as exc:  # the weights went non-finite: not worth keeping
                        raise stopped(exc, stepper, n, directory) from None
                dist.barrier()
            if progress is not None:
                progress.update(n, stepper.postfix(metrics, monitor_metrics))
    finally:
        if log is not None:
            log.close()
        if progress is not None:
            progress.close()
    return TrainResult(schedule.total, clock.elapsed, metrics, monitor_metrics, start)


def stopped(exc: Exception, stepper: Stepper, n: int, directory: Path) -> NonFiniteLossError:
    """The one line of a run stopped by a non-finite value: what, where, and the checkpoint that is
    still good (verified: never one that holds NaN or fails its checksum)."""
    where = f"{exc} at {stepper.unit.removesuffix('s')} {n}"
    return NonFiniteLossError(f"{where}; training stopped ({good_checkpoint(directory)})")


def warn(line: str) -> None:
    print(f"engram: warning: {line}", file=sys.stderr, flush=True)


def run_monitor(monitor: Monitor, model: nn.Module) -> dict[str, float]:
    """``monitor(model)`` in eval mode, its metrics named ``eval/…``; the model is put back in training mode."""
    model.eval()
    try:
        return {f"eval/{k}": float(v) for k, v in monitor(model).items()}
    finally:
        model.train()

"""Run an experiment: train and evaluate every arm, then summarise and plot.

Arms run in worker processes (``workers``), each with ``threads`` PyTorch threads: on a 2-core
machine two single-threaded processes train tiny models faster than one process with two threads.
Under ``torchrun`` the arms run one after the other, every rank training each arm together (DDP).

A worker dies with its parent (Linux ``PR_SET_PDEATHSIG``), so after ``kill -9`` nothing keeps
writing into the run directory, and ``--resume`` continues each unfinished arm from its last
checkpoint.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal
import sys
import time
import traceback
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from engramlab.config import Config, to_yaml
from engramlab.engine import distributed as dist
from engramlab.engine.checkpoint import atomic_write_text, load_checkpoint
from engramlab.engine.experiment import Experiment
from engramlab.engine.progress import Bar, BarBoard, QueueReporter
from engramlab.engine.rundir import (
    CONFIG_NAME,
    RUN_INFO_NAME,
    SUMMARY_NAME,
    Stopwatch,
    begin_stretch,
    end_stretch,
    now_iso,
    provenance,
    read_json,
    run_dir_lock,
    write_json,
)
from engramlab.errors import EngramError, RunDirError
from engramlab.threads import thread_count

ERROR_NAME = "error.txt"


def run_experiment(
    exp: Experiment,
    cfg: Config,
    run_dir: Path,
    *,
    preset: str | None,
    overrides: list[str],
    resume: bool = False,
    workers: int = 1,
    threads: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Train and evaluate every unfinished arm of ``exp`` into ``run_dir``, then summarise and plot.

    The process holds the run directory's lock throughout (a second process is refused), and
    ``run.json`` records each stretch of work (the first start, each resume), whose sum is the
    run's wall time."""
    run_dir, main = Path(run_dir), dist.is_main()
    if not resume:
        cfg = exp.prepare(cfg)
    check_fits_in_memory(exp, cfg)
    with run_dir_lock(run_dir) if main else nullcontext():
        if main:
            if not resume:
                atomic_write_text(run_dir / CONFIG_NAME, to_yaml(cfg))
            described = {"experiment": exp.name, "preset": preset, "overrides": overrides}
            info = begin_stretch(run_dir, None if resume else described)
        clock, ended = Stopwatch(), "failed"
        try:
            workers, threads = train_arms(exp, cfg, run_dir, resume, workers, threads, device, progress)
            ended = "finished"
        except KeyboardInterrupt:
            ended = "interrupted"
            raise
        finally:
            if main:
                wall_time_s = end_stretch(run_dir, clock.elapsed, ended)
        if not main:
            return {}
        results = {arm: read_json(run_dir / arm / SUMMARY_NAME) for arm in exp.arms(cfg)}
        return finish_run(
            exp,
            cfg,
            run_dir,
            results,
            preset=preset,
            overrides=overrides,
            started=info["stretches"][0]["started"],
            wall_time_s=wall_time_s,
            workers=workers,
            threads=threads,
        )


def longer(cfg: Config, steps: int) -> Config:
    """``cfg`` with ``train.steps`` raised to ``steps``, for a run to be trained longer with
    ``--resume``. Refused where the longer run would not equal a run of that length from the start:
    fewer steps, or a learning-rate schedule that depends on ``train.steps``."""
    train = getattr(cfg, "train", None)
    if train is None or not hasattr(train, "steps"):
        raise EngramError("this experiment has no train.steps to raise")
    if steps < train.steps:
        raise EngramError(f"--set train.steps={steps}: the run already has {train.steps} (longer, not shorter)")
    if getattr(train, "decay", "constant") != "constant":
        raise EngramError(
            f"--set train.steps with --resume needs a constant learning rate; this run's train.decay is "
            f"'{train.decay}', whose schedule depends on train.steps: start a new run instead"
        )
    return cfg.model_copy(update={"train": train.model_copy(update={"steps": steps})})


def record_longer(exp: Experiment, cfg: Config, run_dir: Path, old_steps: int) -> None:
    """Write a longer run's config and note it in ``run.json`` (its overrides now say the new
    ``train.steps``); the arms trained to fewer steps lose their summary, so ``--resume`` goes on
    training them from their last checkpoint, then evaluates them again."""
    run_dir, steps = Path(run_dir), cfg.train.steps
    atomic_write_text(run_dir / CONFIG_NAME, to_yaml(cfg))
    info = read_json(run_dir / RUN_INFO_NAME)
    kept = [o for o in info.get("overrides", []) if not o.replace(" ", "").startswith("train.steps=")]
    info["overrides"] = kept + [f"train.steps={steps}"]
    info.setdefault("extended", []).append({"from_steps": old_steps, "to_steps": steps, "at": now_iso()})
    write_json(run_dir / RUN_INFO_NAME, info)
    for arm in exp.arms(cfg):
        summary = run_dir / arm / SUMMARY_NAME
        if summary.exists() and read_json(summary).get("steps", 0) < steps:
            summary.unlink()
    (run_dir / SUMMARY_NAME).unlink(missing_ok=True)  # written again when every arm is done


def train_arms(exp, cfg, run_dir, resume, workers, threads, device, progress) -> tuple[int, int]:
    """Train and evaluate the arms without a summary, the costliest first, in this process or in
    ``workers`` processes; the experiment's :meth:`~Experiment.first_arms` (e.g. a language model the
    others build on) are done before any other starts. Returns the workers and threads per worker
    used by the last group."""
    pending = [arm for arm in exp.arms(cfg) if not (run_dir / arm / SUMMARY_NAME).exists()]
    first = set(exp.first_arms(cfg))
    groups = [g for g in ([a for a in pending if a in first], [a for a in pending if a not in first]) if g]
    for group in groups or [[]]:  # nothing pending: the same workers and threads as before first_arms
        used = train_group(exp, cfg, run_dir, group, resume, workers, threads, device, progress)
    return used


def train_group(exp, cfg, run_dir, pending, resume, workers, threads, device, progress) -> tuple[int, int]:
    workers = max(1, min(workers, len(pending))) if not dist.is_distributed() else 1
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    jobs = sorted(pending, key=lambda arm: -exp.arm_cost(cfg, arm))
    if workers == 1:
        for arm in jobs:
            run_arm(exp, cfg.model_dump(), arm, str(run_dir / arm), resume, threads, device, None, progress)
    else:
        run_in_processes(exp, cfg, run_dir, jobs, resume, workers, threads, device, progress)
    return workers, threads


def check_fits_in_memory(exp: Experiment, cfg: Config) -> None:
    """Refuse, before anything is written, an arm whose weights alone need more memory than the
    machine has available: each arm is built on PyTorch's ``meta`` device, which allocates nothing.
    (An arm that cannot be built there is checked when it is built for real, in :func:`run_arm`.)"""
    available = available_memory()
    if available is None:
        return
    with torch.random.fork_rng(devices=[]):  # a build may seed the global generator: leave it as it was
        for arm in exp.arms(cfg):
            try:
                with torch.device("meta"):
                    model = exp.build(cfg, arm)
            except Exception:
                continue
            tensors = [*model.parameters(), *model.buffers()]
            need = sum(t.numel() * t.element_size() for t in tensors)
            if need > available:
                count = sum(t.numel() for t in model.parameters())
                raise EngramError(
                    f"arm '{arm}' needs {gigabytes(need)} for its weights alone ({count:,} parameters), more than "
                    f"the {gigabytes(available)} of memory available: make the model smaller"
                )


def available_memory() -> int | None:
    """Bytes of memory available to a new process (Linux's MemAvailable), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def gigabytes(count: float) -> str:
    return f"{count / 1e9:,.1f} GB"


def finish_run(exp, cfg, run_dir, results, *, preset, overrides, started, wall_time_s, workers, threads):
    """Headline metrics, plots and the top-level summary.json (written last)."""
    metrics = exp.summarize(cfg, {arm: r["results"] for arm, r in results.items()})
    plots = exp.plot(cfg, {arm: r["results"] for arm, r in results.items()}, run_dir, run_dir / "plots")
    plots += [run_dir / path for r in results.values() for path in r.get("media", [])]  # made by each arm
    summary = {
        "experiment": exp.name,
        "preset": preset,
        "overrides": overrides,
        "seed": exp.seed_of(cfg),
        "metrics": metrics,
        "paper": [p.__dict__ for p in exp.paper],
        "deviations": exp.deviations_of(cfg, preset),
        "arms": {
            arm: {k: r[k] for k in ("steps", "train_wall_time_s", "eval_wall_time_s", "parameters")}
            for arm, r in results.items()
        },
        "wall_time_s": wall_time_s,
        "workers": workers,
        "threads_per_worker": threads,
        "started": started,
        **provenance(),
        "plots": [str(p.relative_to(run_dir)) for p in plots],
    }
    write_json(run_dir / SUMMARY_NAME, summary)
    return summary


def torch_threads(count: int):
    """PyTorch's thread count set to ``count`` inside the block and given back after it, so that a run
    started from Python (a test, a notebook) leaves the caller's setting as it found it."""
    return thread_count(torch.get_num_threads, torch.set_num_threads, count)


@contextmanager
def out_of_memory_is_one_line(arm: str):
    """An allocation that fails (a model or a batch too large for the machine) becomes one line that
    names the arm and the size asked for, instead of PyTorch's traceback."""
    try:
        yield
    except RuntimeError as exc:  # torch.OutOfMemoryError is one too
        text = str(exc)
        if not isinstance(exc, torch.OutOfMemoryError) and "can't allocate memory" not in text:
            raise
        cpu = re.search(r"allocate (\d+) bytes", text)  # the CPU allocator's words
        gpu = re.search(r"allocate ([\d.]+ [KMGT]iB)", text)  # CUDA's
        size = gigabytes(int(cpu[1])) if cpu else gpu[1] if gpu else "an unknown amount"
        raise EngramError(
            f"arm '{arm}': out of memory ({size} asked for at once): make the model or batch smaller"
        ) from None


def run_arm(
    exp: Experiment,
    cfg_data: dict[str, Any],
    arm: str,
    arm_dir: str,
    resume: bool,
    threads: int,
    device: str,
    channel: Any,
    progress: bool = True,
) -> None:
    """Train and evaluate one arm; its summary.json is written last (in-process or in a worker).

    The evaluation path: :meth:`Experiment.evaluate` (numbers, into the arm's summary), then
    :meth:`Experiment.record` (animations of the trained model, into the run's ``plots/``)."""
    with torch_threads(threads), out_of_memory_is_one_line(arm):
        cfg = exp.Config.model_validate(cfg_data)
        arm_path = Path(arm_dir)
        model = exp.build(cfg, arm)
        reporter = QueueReporter(arm, channel) if channel is not None else Bar(arm, enabled=progress and dist.is_main())
        result = exp.fit(cfg, arm, model, arm_path, progress=reporter, resume=resume, device=device)
        if not dist.is_main():
            return
        eval_clock = Stopwatch()
        model.eval()
        results = exp.evaluate(cfg, arm, model)
        media = exp.record(cfg, arm, model, arm_path.parent / "plots")
    summary = {
        "arm": arm,
        "steps": result.steps,
        "train_wall_time_s": result.wall_time_s,
        "eval_wall_time_s": eval_clock.elapsed,
        "resumed_from_step": result.resumed_from,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_metrics": result.train_metrics,
        "monitor_metrics": result.monitor_metrics,
        "results": results,
        "media": [str(path.relative_to(arm_path.parent)) for path in media],
    }
    write_json(arm_path / SUMMARY_NAME, summary)


def run_in_processes(exp, cfg, run_dir, jobs, resume, workers, threads, device, progress) -> None:
    ctx = mp.get_context("spawn")
    channel = ctx.Queue()
    pending, running = list(jobs), {}
    with BarBoard(channel, jobs, enabled=progress):
        try:
            while pending or running:
                while pending and len(running) < workers:
                    arm = pending.pop(0)
                    args = (exp, cfg.model_dump(), arm, str(run_dir / arm), resume, threads, device, channel)
                    proc = ctx.Process(target=worker_main, args=args, name=f"engram-{arm}")
                    proc.start()
                    running[arm] = proc
                for arm, proc in list(running.items()):
                    if proc.is_alive():
                        continue
                    proc.join()
                    del running[arm]
                    if proc.exitcode != 0:
                        raise EngramError(f"arm '{arm}' failed: {read_error(run_dir / arm, proc.exitcode)}")
                time.sleep(0.2)
        finally:
            for proc in running.values():
                proc.terminate()
                proc.join()


def worker_main(*args) -> None:
    die_with_parent()
    arm_dir = Path(args[3])
    try:
        run_arm(*args)
    except EngramError as exc:
        write_error(arm_dir, str(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException:
        write_error(arm_dir, traceback.format_exc())
        sys.exit(1)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphan keeps training)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent is already gone
            os._exit(1)


def write_error(arm_dir: Path, message: str) -> None:
    arm_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(arm_dir / ERROR_NAME, message)


def read_error(arm_dir: Path, exitcode: int | None) -> str:
    path = arm_dir / ERROR_NAME
    if path.exists():
        text = path.read_text().strip()
        path.unlink()
        return text.splitlines()[-1] if text else f"exit code {exitcode}"
    return f"worker exited with code {exitcode}"


def load_arm_model(exp: Experiment, cfg: Config, run_dir: Path, arm: str) -> torch.nn.Module:
    """The trained model of one arm, in eval mode."""
    path = Path(run_dir) / arm / "checkpoint.safetensors"
    if not path.exists():
        raise RunDirError(f"{run_dir}: arm '{arm}' has no checkpoint (was it trained?)")
    model = exp.build(cfg, arm)
    model.load_state_dict(load_checkpoint(path, with_state=False).model)
    return model.eval()

"""The run directory: where every run leaves its config, metrics, checkpoints, summary and plots.

Layout (DESIGN.md)::

    runs/<experiment>/<timestamp>/
        config.yaml            full resolved config
        summary.json           final metrics, wall time, steps, parameters, versions, machine
        plots/*.png
        <arm>/                 one sub-run per trained model (e.g. pondernet, act, fixed)
            metrics.jsonl      one JSON object per logged step
            events.out.tfevents.*   TensorBoard
            checkpoint.safetensors  model + optimizer + RNG state, written atomically and checksummed
            checkpoint.previous.safetensors   the checkpoint before it
            summary.json       the arm's final metrics

``summary.json`` is written last, so a directory without it is an unfinished run. A process that
trains or resumes a run holds ``.lock`` (:func:`run_dir_lock`), so two cannot write one run.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from engramlab.engine.checkpoint import atomic_write_text
from engramlab.errors import RunDirError

CONFIG_NAME = "config.yaml"
SUMMARY_NAME = "summary.json"
METRICS_NAME = "metrics.jsonl"


def new_run_dir(root: Path, experiment: str) -> Path:
    """Create ``root/experiment/<timestamp>`` (with a suffix if that name is taken); a root that is
    a file, or where a directory cannot be created or written, is one :class:`RunDirError` line."""
    base = Path(root) / experiment
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"{root}: cannot create a run directory there ({exc.strerror or exc})") from None
    if not os.access(base, os.W_OK | os.X_OK):
        raise RunDirError(f"{base}: cannot write a run directory there (permission denied)")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = base / (stamp if i == 0 else f"{stamp}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh run directory under {base}")


LOCK_NAME = ".lock"


class RunDirInUse(RunDirError):
    """Another process holds the run directory's lock."""


_held: dict[Path, int] = {}  # run directories this process has locked, and how many times


@contextmanager
def run_dir_lock(run_dir: Path, wait: bool = False) -> Iterator[None]:
    """An exclusive lock on a run directory for the block: an advisory ``flock`` on ``RUN_DIR/.lock``,
    which the system releases when the process dies (``kill -9`` included). Another process that
    asks for it gets one :class:`RunDirError` line, or with ``wait`` waits for it. The process that
    holds it may ask again (a bench that locks a run, then runs it)."""
    key = Path(run_dir).resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    with open(key / LOCK_NAME, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise RunDirInUse(
                f"{run_dir} is in use by another engram process (pid {holder}): wait for it to end or stop it"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]


RUN_INFO_NAME = "run.json"


def begin_stretch(run_dir: Path, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record in ``run.json`` that a stretch of work on the run starts now: its first start
    (``info`` is then the run's description: experiment, preset, overrides) or a resume. A
    stretch that ended without saying so (``kill -9``) is closed at the run directory's last write."""
    path = Path(run_dir) / RUN_INFO_NAME
    info = dict(info) if info is not None else read_json(path)
    stretches = info.setdefault("stretches", [])
    if not stretches and path.exists():  # a run written before stretches were recorded
        stretches.append({"started": iso_of((Path(run_dir) / "config.yaml").stat().st_mtime)})
    if stretches and "seconds" not in stretches[-1]:
        last = stretches[-1]
        last["seconds"] = max(0.0, last_write(run_dir) - datetime.fromisoformat(last["started"]).timestamp())
        last["ended"] = "killed (its end is the run directory's last write)"
    stretches.append({"started": now_iso()})
    write_json(path, info)
    return info


def end_stretch(run_dir: Path, seconds: float, how: str) -> float:
    """Close the current stretch (``how``: finished, interrupted, failed); return the run's wall time
    over every stretch."""
    path = Path(run_dir) / RUN_INFO_NAME
    info = read_json(path)
    info["stretches"][-1].update(seconds=seconds, ended=how)
    write_json(path, info)
    return sum(stretch["seconds"] for stretch in info["stretches"])


def last_write(run_dir: Path) -> float:
    """The time of the newest file in the run directory, but for its bookkeeping (run.json, .lock)."""
    times = [
        f.stat().st_mtime for f in Path(run_dir).rglob("*") if f.is_file() and f.name not in (RUN_INFO_NAME, LOCK_NAME)
    ]
    return max(times, default=time.time())


def iso_of(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(Path(path), json.dumps(clean_json(obj), indent=2) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def clean_json(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null; tuples become lists."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Appends ``{"step": …, metrics…}`` lines to metrics.jsonl and scalars to TensorBoard.

    On resume from step ``s``, lines logged after ``s`` (work lost with the process) are dropped
    and TensorBoard is told to purge its events after ``s``, so the record equals an
    uninterrupted run's.
    """

    def __init__(self, directory: Path, resume_step: int = 0, tensorboard: bool = True):
        self.path = Path(directory) / METRICS_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step > 0 and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if self._step(line) <= resume_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()
        self.file = open(self.path, "a", buffering=1)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

            self.writer = SummaryWriter(str(directory), purge_step=resume_step + 1 if resume_step else None)

    @staticmethod
    def _step(line: str) -> int:
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            return 1 << 62  # a torn last line from a killed process: drop it

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.file.write(json.dumps(clean_json({"step": step, **metrics})) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def read_metrics(directory: Path) -> list[dict[str, Any]]:
    path = Path(directory) / METRICS_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def machine_info() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": sys.version.split()[0],
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str]:
    versions = {}
    for name in ("engramlab", "torch", "numpy", "pydantic", "safetensors"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance() -> dict[str, Any]:
    """When, with which library versions and on which machine a result was produced."""
    return {"finished": now_iso(), "versions": library_versions(), "machine": machine_info()}


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


class Stopwatch:
    def __init__(self, offset: float = 0.0):
        self.offset, self.start = offset, time.perf_counter()

    @property
    def elapsed(self) -> float:
        return self.offset + time.perf_counter() - self.start

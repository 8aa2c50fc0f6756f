"""``engram sweep``: a grid of config values x seeds, one run directory each, on this machine or a cluster.

Every grid point and seed is one run directory whose name is made from them,
``OUT/<experiment>/<preset>[-<key=value,...>]-seed<S>``, so the same sweep always names the same
runs: a finished run (it has ``summary.json``) is kept, an interrupted one resumes from its
checkpoints, and the driver (this command) can be killed and started again at any moment without
losing a finished run. Everything that can be refused (an unknown key, a bad value, a run directory
made with another config) is refused before any run starts.

Each run is one child process, ``python -m engramlab.sweep JOB_JSON``, wherever it runs. Its
output goes to ``RUN_DIR/sweep.log`` (one header line per attempt), and its thread count is set
explicitly: ``torch.set_num_threads`` and the OpenMP/MKL variables, because launchers differ in
what they set (torchrun and Ray default to one thread, a plain process to every core). The child
dies with the process that started it (Linux ``PR_SET_PDEATHSIG``), so killing a driver or a worker
leaves no orphan writing into a run directory. Backends:

- ``local``: up to ``workers`` children at once on this machine;
- ``slurm``: one submitit job array (partition, time, CPUs, GPUs, array parallelism); with
  ``slurm_local`` the same code goes through submitit's local executor on this machine;
- ``dask``: the tasks of a ``distributed.Client`` connected to a scheduler's address, or to a
  ``LocalCluster`` of ``workers`` processes on loopback when no address is given.

A run that fails is reported with the tail of its log and tried once more (``retries``).
``OUT/sweep.json`` lists every run as finished, failed or pending (written after each run ends,
atomically); ``OUT/report.md`` is ``engram report`` on the finished runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engramlab.errors import ConfigError, EngramError

LOG_NAME = "sweep.log"
STATUS_NAME = "sweep.json"
REPORT_NAME = "report.md"
TAIL_LINES = 15
SAFE_TEXT = re.compile(r"[^A-Za-z0-9._=+-]")


# --- what to run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One run of a sweep: everything a child process needs, as plain values (it is pickled by
    submitit and Dask, and passed to the child as JSON)."""

    experiment: str
    preset: str
    overrides: tuple[str, ...]  # the sweep's --set, this grid point's values, then the seed
    run_dir: str  # absolute: a cluster's workers do not share the driver's working directory
    threads: int

    @property
    def name(self) -> str:
        return f"{Path(self.run_dir).parent.name}/{Path(self.run_dir).name}"

    @property
    def log(self) -> Path:
        return Path(self.run_dir) / LOG_NAME


def parse_grid(items: Iterable[str]) -> list[tuple[str, list[str]]]:
    """``["train.lr=0.001,0.003", "methods=[a,b],[c]"]`` -> ``[("train.lr", ["0.001", "0.003"]), …]``.

    Values are split at commas outside brackets, so a YAML list is one value; each value is read as
    YAML later, when the config is resolved (as ``--set`` reads it)."""
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--grid expects key=value1,value2 (for example train.lr=0.001,0.003), got {item!r}")
        split = [v.strip() for v in split_top_level(values)]
        if not split or "" in split:
            raise ConfigError(f"--grid {item!r}: a value is empty (values are separated by single commas)")
        if key in dict(grid):
            raise ConfigError(f"--grid names {key} twice: give all its values in one --grid {key}=v1,v2")
        if len(set(split)) != len(split):
            raise ConfigError(f"--grid {item!r}: a value is repeated")
        grid.append((key, split))
    return grid


def split_top_level(text: str) -> list[str]:
    """``"[a,b],c"`` -> ``["[a,b]", "c"]``: commas inside brackets or braces belong to their value."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def grid_points(grid: list[tuple[str, list[str]]]) -> list[tuple[tuple[str, str], ...]]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = [key for key, _ in grid]
    return [tuple(zip(keys, values)) for values in itertools.product(*(values for _, values in grid))]


def point_name(point: tuple[tuple[str, str], ...]) -> str:
    """A grid point as part of a directory name: ``model.halting.lambda_p=0.1,train.lr=0.003``.

    Characters a file name should not hold become ``_``; a name changed that way gets a short hash
    of the exact text, so that two points never share a directory."""
    text = ",".join(f"{key}={value}" for key, value in point)
    safe = ",".join(SAFE_TEXT.sub("_", f"{key}={value}") for key, value in point)
    if safe != text:
        safe += "-" + hashlib.sha1(text.encode()).hexdigest()[:6]
    return safe


def run_name(preset: str, point: tuple[tuple[str, str], ...], seed: int) -> str:
    return "-".join([preset, *([point_name(point)] if point else []), f"seed{seed}"])


def seed_override(exp, seed: int) -> str:
    """``seed=S``, or ``seeds=[S]`` for an experiment that trains a list of seeds inside one run."""
    fields = exp.Config.model_fields
    return f"seed={seed}" if "seed" in fields or "seeds" not in fields else f"seeds=[{seed}]"


def plan(
    experiment: str,
    *,
    preset: str,
    seeds: list[int],
    out: Path,
    grid: list[tuple[str, list[str]]] = (),
    overrides: Iterable[str] = (),
    threads: int = 1,
) -> list[Job]:
    """The sweep's jobs, every config resolved and checked (nothing is written): grid points in order,
    each with every seed."""
    from engramlab.experiments import get_experiment

    exp = get_experiment(experiment)
    if preset not in exp.presets:
        raise EngramError(f"unknown preset '{preset}' for {exp.name} (available: {', '.join(exp.presets)})")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {' '.join(map(str, seeds))}: each seed once")
    overrides = list(overrides)
    both = {key for key, _ in grid} & {text.partition("=")[0].strip() for text in overrides}
    if both:
        raise ConfigError(f"{', '.join(sorted(both))}: given both by --set and by --grid (keep one)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EngramError(f"--out {out}: a file, not a directory")
    jobs = []
    for point in grid_points(list(grid)):
        for seed in seeds:
            job_overrides = (*overrides, *(f"{key}={value}" for key, value in point), seed_override(exp, seed))
            run_dir = (out / exp.name / run_name(preset, point, seed)).resolve()
            jobs.append(Job(exp.name, preset, job_overrides, str(run_dir), threads))
    for job in jobs:
        check_job(job)
    return jobs


def resolved_config(job: Job):
    from engramlab.config import resolve
    from engramlab.experiments import get_experiment

    exp = get_experiment(job.experiment)
    cfg = resolve(exp.Config, exp.presets[job.preset], overrides=job.overrides, renamed=exp.renamed_keys)
    return exp, cfg


def check_job(job: Job) -> None:
    """Refuse a job whose config does not resolve, or whose run directory holds a run of another config."""
    exp, cfg = resolved_config(job)
    cfg = exp.prepare(cfg)  # e.g. a data set that is missing: refused now, not in a child later
    if (Path(job.run_dir) / "run.json").exists():
        check_same_config(Path(job.run_dir), cfg)


def check_same_config(run_dir: Path, cfg) -> None:
    """Refuse to keep or resume a run whose saved config is not the one this command would use."""
    from engramlab.api import load_config
    from engramlab.config import describe

    saved = {key: value for key, value, _, _ in describe(load_config(run_dir)[1])}
    wanted = {key: value for key, value, _, _ in describe(cfg)}
    changed = [key for key in wanted if saved.get(key) != wanted[key]]
    if changed:
        raise EngramError(
            f"{run_dir} was run with another config (differs at {', '.join(changed[:5])}): "
            "remove it or choose another --out"
        )


def is_finished(job: Job) -> bool:
    return (Path(job.run_dir) / "summary.json").exists()


# --- one run, in a child process ---------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How one attempt at a job ended: ``returncode`` 0 is success; ``tail`` is the end of its log."""

    run_dir: str
    returncode: int | None
    tail: str = ""


def execute(job: Job) -> Outcome:
    """Run ``job`` in a child process with ``job.threads`` threads, its output appended to its log.

    This is what every backend calls, on whichever machine runs the job."""
    Path(job.run_dir).mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(job.threads),
        "MKL_NUM_THREADS": str(job.threads),
        "PYTHONUNBUFFERED": "1",
    }
    with open(job.log, "a") as log:
        start = log.tell()
        host = os.uname().nodename
        log.write(f"== engram sweep: {job.name}, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}, {host}, ")
        log.write(f"{job.threads} thread(s): {sys.executable} -m engramlab.sweep\n")
        log.flush()
        child = [sys.executable, "-m", "engramlab.sweep", json.dumps(asdict(job))]
        code = subprocess.run(child, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env).returncode
    return Outcome(job.run_dir, code, log_tail(job.log, start) if code else "")


def log_tail(path: Path, start: int = 0, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a log from byte ``start`` on (one attempt's part)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_job(job: Job) -> None:
    """In the child: train (or resume) the run unless it has finished; wait while another process
    holds its directory (e.g. a job of an earlier driver that is still running on a cluster)."""
    import torch

    from engramlab.engine.rundir import run_dir_lock
    from engramlab.engine.runner import die_with_parent, run_experiment

    die_with_parent()
    torch.set_num_threads(job.threads)
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_dir_lock(run_dir, wait=True):
        if is_finished(job):
            print(f"{job.name}: finished already", flush=True)
            return
        exp, cfg = resolved_config(job)
        resume = (run_dir / "run.json").exists()
        if resume:
            check_same_config(run_dir, cfg)
        print(f"{'resuming' if resume else 'running'} {job.name}", flush=True)
        run_experiment(
            exp,
            cfg,
            run_dir,
            preset=job.preset,
            overrides=list(job.overrides),
            resume=resume,
            workers=1,
            threads=job.threads,
            device="cuda" if torch.cuda.is_available() else "cpu",  # a job given GPUs uses them
            progress=True,  # plain progress lines in the log
        )


def child_main(argv: list[str]) -> int:
    job = Job(**{**json.loads(argv[0]), "overrides": tuple(json.loads(argv[0])["overrides"])})
    try:
        run_job(job)
    except EngramError as exc:
        print(f"engram: error: {exc}", flush=True)
        return 2
    return 0


# --- backends: where the children run ----------------------------------------------------------


class LocalBackend:
    """Up to ``workers`` runs at once on this machine, each a child process of this one."""

    name = "local"

    def __init__(self, workers: int):
        self.workers = workers

    def run(self, jobs: list[Job]) -> Iterator[tuple[Job, Outcome]]:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        # threads only wait for their child; PR_SET_PDEATHSIG ties each child to its thread, which
        # lives until the pool shuts down
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="engram-sweep") as pool:
            futures = {pool.submit(execute, job): job for job in jobs}
            for future in as_completed(futures):
                yield futures[future], future.result()

    def close(self) -> None:
        pass


class SlurmBackend:
    """One submitit job array; its files and logs under ``OUT/submitit/``. ``local=True`` runs the
    same array through submitit's local executor (each job a process on this machine)."""

    name = "slurm"

    def __init__(self, folder: Path, *, partition=None, minutes=60, cpus=1, gpus=0, parallel=None, local=False):
        try:
            import submitit
        except ImportError:
            raise EngramError("--backend slurm needs submitit: pip install 'engramlab[slurm]'") from None
        if not local and shutil.which("sbatch") is None:
            raise EngramError(
                "--backend slurm: no sbatch here (run the sweep on a SLURM login node, or add --slurm-local to "
                "try it on this machine)"
            )
        self.executor = submitit.AutoExecutor(folder=Path(folder), cluster="local" if local else "slurm")
        params: dict[str, Any] = {"timeout_min": minutes, "cpus_per_task": cpus, "name": "engram-sweep"}
        if gpus:
            params["gpus_per_node"] = gpus
        if not local:
            params["slurm_array_parallelism"] = parallel or 256
            if partition:
                params["slurm_partition"] = partition
        self.executor.update_parameters(**params)

    def run(self, jobs: list[Job]) -> Iterator[tuple[Job, Outcome]]:
        submitted = dict(zip(self.executor.map_array(execute, jobs), jobs))
        while submitted:
            for handle in [h for h in submitted if h.done()]:
                job = submitted.pop(handle)
                try:
                    yield job, handle.result()
                except Exception as exc:  # the job itself died: time limit, node failure, cancelled
                    yield job, Outcome(job.run_dir, None, failure_tail(job, exc, handle.stderr()))
            time.sleep(1.0)

    def close(self) -> None:
        pass


class DaskBackend:
    """The tasks of a Dask cluster: a scheduler at ``address`` (workers started with ``dask worker
    ADDRESS --nthreads 1``), or a ``LocalCluster`` of ``workers`` processes on loopback. It connects
    when there is a run to do, and stays connected until :meth:`close` (the retries use it too)."""

    name = "dask"

    def __init__(self, address: str | None, workers: int):
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise EngramError("--backend dask needs distributed: pip install 'engramlab[dask]'") from None
        self.address, self.workers = address, workers
        self.client = self.cluster = None

    def connect(self):
        from distributed import Client, LocalCluster

        if self.client is None:
            address = self.address
            if address is None:
                self.cluster = LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
                )
                address = self.cluster.scheduler_address
            try:
                self.client = Client(address, timeout="20s")
            except OSError as exc:
                raise EngramError(f"--dask-address {address}: no Dask scheduler answers ({exc})") from None
        return self.client

    def run(self, jobs: list[Job]) -> Iterator[tuple[Job, Outcome]]:
        from distributed import as_completed

        futures = self.connect().map(execute, jobs, pure=False)
        by_key = {future.key: job for future, job in zip(futures, jobs)}
        for future in as_completed(futures):
            job = by_key[future.key]
            try:
                yield job, future.result()
            except Exception as exc:  # the worker died more often than Dask allows
                yield job, Outcome(job.run_dir, None, failure_tail(job, exc))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None


def failure_tail(job: Job, exc: BaseException, scheduler_log: str | None = None) -> str:
    """Why a job ended without an outcome of its own: the scheduler's word and the run log's end."""
    parts = [f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"]
    if scheduler_log:
        parts.append("\n".join(scheduler_log.rstrip().splitlines()[-TAIL_LINES:]))
    parts.append(log_tail(job.log))
    return "\n".join(p for p in parts if p)


# --- the driver ----------------------------------------------------------------------------------


def run_sweep(jobs: list[Job], backend, out: Path, *, retries: int = 1, progress: bool = True) -> dict[str, Any]:
    """Run every unfinished job on ``backend``, each failure once more (``retries``); write
    ``OUT/sweep.json`` after every run that ends and ``OUT/report.md`` at the end; close the backend.
    Returns the status."""
    from engramlab.engine.progress import Bar

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    attempts = {job.run_dir: 0 for job in jobs}
    errors: dict[str, str] = {}
    todo = [job for job in jobs if not is_finished(job)]
    kept = len(jobs) - len(todo)
    print(f"sweep: {len(jobs)} runs, {kept} finished already, {len(todo)} to run on {backend.name}", flush=True)
    write_status(out, jobs, attempts, errors, backend.name)
    bar = Bar("sweep", enabled=progress)
    bar.start(len(jobs), kept)
    done = kept
    try:
        for attempt in range(retries + 1):
            if not todo:
                break
            failed = []
            for job, outcome in backend.run(busy_last(todo)):
                attempts[job.run_dir] += 1
                if outcome.returncode == 0 and is_finished(job):
                    errors.pop(job.run_dir, None)
                    done += 1
                else:
                    errors[job.run_dir] = outcome.tail or f"exit code {outcome.returncode}"
                    again = "; it will be tried again" if attempt < retries else ""
                    print(f"sweep: {job.name} failed (log {job.log}){again}:", flush=True)
                    print(indent(errors[job.run_dir]), flush=True)
                    failed.append(job)
                write_status(out, jobs, attempts, errors, backend.name)
                bar.update(done, {"failed": str(len(failed))} if failed else {})
            todo = failed
    except KeyboardInterrupt:
        write_status(out, jobs, attempts, errors, backend.name)
        print("sweep: interrupted; run the same command again to go on (finished runs are kept)", flush=True)
        raise
    finally:
        bar.close()
        backend.close()
    status = write_status(out, jobs, attempts, errors, backend.name)
    write_report(out, jobs)
    return status


def busy_last(jobs: list[Job]) -> list[Job]:
    """Jobs whose run directory another process holds go last: two drivers sharing ``--out`` (or a job
    of an earlier driver still running) first do the runs nobody is on."""
    from engramlab.engine.rundir import LOCK_NAME, RunDirInUse, run_dir_lock

    free, busy = [], []
    for job in jobs:
        if not (Path(job.run_dir) / LOCK_NAME).exists():
            free.append(job)
            continue
        try:
            with run_dir_lock(Path(job.run_dir)):
                free.append(job)
        except RunDirInUse:
            busy.append(job)
    return free + busy


def indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


def write_status(out: Path, jobs: list[Job], attempts: dict[str, int], errors: dict[str, str], backend: str):
    """``OUT/sweep.json``: each run finished / failed / pending, with its attempts and log."""
    from engramlab.engine.rundir import write_json

    runs = []
    for job in jobs:
        state = "finished" if is_finished(job) else "failed" if job.run_dir in errors else "pending"
        entry = {"run": job.name, "run_dir": job.run_dir, "status": state, "attempts": attempts.get(job.run_dir, 0)}
        entry |= {"overrides": list(job.overrides), "log": str(job.log)}
        if state == "failed":
            entry["error"] = errors[job.run_dir]
        runs.append(entry)
    counts = {state: sum(r["status"] == state for r in runs) for state in ("finished", "failed", "pending")}
    status = {"backend": backend, **counts, "runs": runs}
    write_json(out / STATUS_NAME, status)
    return status


def write_report(out: Path, jobs: list[Job]) -> Path | None:
    """``engram report`` of the sweep's finished runs, as ``OUT/report.md``; None when none finished."""
    from engramlab.engine.checkpoint import atomic_write_text
    from engramlab.report import build_report

    finished = [Path(job.run_dir) for job in jobs if is_finished(job)]
    if not finished:
        return None
    atomic_write_text(out / REPORT_NAME, build_report(finished))
    return out / REPORT_NAME


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))

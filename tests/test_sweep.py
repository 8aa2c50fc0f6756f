"""`engram sweep`: grid x seeds into named run directories, run once on any backend, resumable, faults retried."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_MQAR, engram_cmd, run_checked, sets

from engramlab import sweep
from engramlab.engine.checkpoint import load_checkpoint
from engramlab.errors import ConfigError, EngramError
from engramlab.sweep import LocalBackend, Outcome, parse_grid, plan, point_name, run_sweep


def metrics_by_run(out: Path) -> dict[str, dict]:
    """Every finished run under ``out``: its name relative to ``out`` -> summary metrics."""
    return {
        str(path.parent.relative_to(out)): json.loads(path.read_text())["metrics"]
        for path in sorted(out.glob("*/*/summary.json"))
    }


# --- the grid and the names ------------------------------------------------------------------------


def test_grid_values_split_at_commas_outside_brackets():
    assert parse_grid(["train.lr=0.001,0.003", "methods=[lstm,xl],[knn]"]) == [
        ("train.lr", ["0.001", "0.003"]),
        ("methods", ["[lstm,xl]", "[knn]"]),
    ]


@pytest.mark.parametrize(
    "items, words",
    [
        (["train.lr"], "--grid expects key=value1,value2"),
        (["train.lr=0.1,,0.2"], "a value is empty"),
        (["train.lr=0.1", "train.lr=0.2"], "names train.lr twice"),
        (["train.lr=0.1,0.1"], "a value is repeated"),
    ],
)
def test_a_malformed_grid_is_one_clear_error(items, words):
    with pytest.raises(ConfigError, match=words):
        parse_grid(items)


def test_run_names_are_made_from_the_grid_point_and_never_collide():
    assert point_name((("train.lr", "0.001"), ("model.halting.lambda_p", "0.1"))) == (
        "train.lr=0.001,model.halting.lambda_p=0.1"
    )
    # characters a file name should not hold are replaced, and a hash of the exact text keeps names apart
    a, b = point_name((("methods", "[lstm,xl]"),)), point_name((("methods", "(lstm,xl)"),))
    assert a.startswith("methods=_lstm_xl_-") and a != b and "/" not in a + b


def test_plan_names_every_grid_point_and_seed(tmp_path):
    jobs = plan(
        "memory-mqar",
        preset="quick",
        seeds=[0, 1],
        out=tmp_path,
        grid=parse_grid(["train.lr=0.001,0.003"]),
        overrides=TINY_MQAR,
    )
    assert [job.name for job in jobs] == [
        "memory-mqar/quick-train.lr=0.001-seed0",
        "memory-mqar/quick-train.lr=0.001-seed1",
        "memory-mqar/quick-train.lr=0.003-seed0",
        "memory-mqar/quick-train.lr=0.003-seed1",
    ]
    assert jobs[3].overrides[-2:] == ("train.lr=0.003", "seed=1")
    assert all(Path(job.run_dir).is_absolute() for job in jobs)
    assert not any(tmp_path.iterdir()), "planning writes nothing"


def test_an_experiment_with_a_list_of_seeds_gets_one_seed_per_run(tmp_path):
    (job,) = plan("coberl", preset="quick", seeds=[4], out=tmp_path)
    assert job.overrides[-1] == "seeds=[4]"


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"overrides": ["train.nope=1"]}, "train.nope"),
        ({"grid": [("train.lr", ["0.1", "-1"])]}, "train.lr"),
        ({"grid": [("train.lr", ["0.1"])], "overrides": ["train.lr=0.2"]}, "both by --set and by --grid"),
        ({"preset": "nope"}, "unknown preset 'nope'"),
        ({"seeds": [0, 0]}, "each seed once"),
    ],
)
def test_a_bad_sweep_is_refused_before_anything_is_written(tmp_path, kwargs, words):
    out = tmp_path / "runs"
    with pytest.raises(EngramError, match=words):
        plan("memory-mqar", **{"preset": "quick", "seeds": [0], "out": out, **kwargs})
    assert not out.exists()


def test_a_run_directory_of_another_config_is_refused(tmp_path):
    (job,) = plan("memory-mqar", preset="quick", seeds=[0], out=tmp_path, overrides=TINY_MQAR)
    assert sweep.execute(job).returncode == 0
    with pytest.raises(EngramError, match=r"quick-seed0 was run with another config \(differs at train.lr\)"):
        plan("memory-mqar", preset="quick", seeds=[0], out=tmp_path, overrides=[*TINY_MQAR, "train.lr=0.01"])


# --- running -------------------------------------------------------------------------------------


def test_a_local_sweep_runs_each_run_once_with_its_threads_and_writes_status_and_report(tmp_path):
    grid = parse_grid(["train.lr=0.001,0.003"])
    jobs = plan("memory-mqar", preset="quick", seeds=[0], out=tmp_path, grid=grid, overrides=TINY_MQAR, threads=2)
    status = run_sweep(jobs, LocalBackend(2), tmp_path, progress=False)
    assert (status["finished"], status["failed"], status["pending"]) == (2, 0, 0)
    assert json.loads((tmp_path / "sweep.json").read_text()) == status
    for job in jobs:
        summary = json.loads((Path(job.run_dir) / "summary.json").read_text())
        assert summary["threads_per_worker"] == 2  # set explicitly, not inherited
        assert Path(job.log).read_text().startswith(f"== engram sweep: {job.name}")
    report = (tmp_path / "report.md").read_text()
    assert "--set train.lr=0.001" in report and "--set train.lr=0.003" in report
    stamps = {job.run_dir: (Path(job.run_dir) / "summary.json").stat().st_mtime_ns for job in jobs}
    again = run_sweep(jobs, LocalBackend(2), tmp_path, progress=False)  # nothing left to do
    assert again["finished"] == 2 and all(r["attempts"] == 0 for r in again["runs"])
    assert stamps == {job.run_dir: (Path(job.run_dir) / "summary.json").stat().st_mtime_ns for job in jobs}


def test_a_run_that_fails_is_reported_with_its_log_tail_and_tried_once_more(tmp_path, capsys):
    (job,) = plan("memory-mqar", preset="quick", seeds=[0], out=tmp_path, overrides=[*TINY_MQAR, "train.lr=1e30"])
    status = run_sweep([job], LocalBackend(1), tmp_path, progress=False)
    (run,) = status["runs"]
    assert (status["failed"], run["status"], run["attempts"]) == (1, "failed", 2)
    assert "loss is nan" in run["error"]  # the tail of the run's own log
    assert "it will be tried again" in capsys.readouterr().out
    assert Path(job.log).read_text().count("== engram sweep:") == 2


class FlakyBackend(LocalBackend):
    """The first attempt at every run dies before it starts (as a preempted job would)."""

    def __init__(self):
        super().__init__(workers=1)
        self.tried: set[str] = set()

    def run(self, jobs):
        fresh = [job for job in jobs if job.run_dir not in self.tried]
        self.tried |= {job.run_dir for job in jobs}
        for job in fresh:
            yield job, Outcome(job.run_dir, -9, "killed by the scheduler")
        yield from super().run([job for job in jobs if job not in fresh])


def test_a_run_that_died_once_finishes_on_its_retry(tmp_path):
    (job,) = plan("memory-mqar", preset="quick", seeds=[0], out=tmp_path, overrides=TINY_MQAR)
    status = run_sweep([job], FlakyBackend(), tmp_path, progress=False)
    assert status["finished"] == 1 and status["runs"][0]["attempts"] == 2 and "error" not in status["runs"][0]


def test_sweep_command_line_errors_are_one_line(tmp_path):
    for argv, words in [
        (["sweep", "nope"], "unknown experiment 'nope'"),
        (["sweep", "memory-mqar", "--grid", "train.lr"], "--grid expects key=value1,value2"),
        (["sweep", "memory-mqar", "--retries", "-1"], "--retries -1: must be 0 or more"),
    ]:
        proc = subprocess.run(engram_cmd() + argv + ["--out", str(tmp_path / "o")], capture_output=True, text=True)
        assert proc.returncode == 2 and words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


# --- the bars: every backend gives the same runs; a killed driver loses nothing ---------------------------


def sweep_args(out: Path, *extra: str) -> list[str]:
    grid = ["--grid", "train.lr=0.001,0.003", "--seeds", "0", "1", "2"]
    return ["sweep", "memory-mqar", *grid, *sets(*TINY_MQAR), "--out", str(out), "--no-progress", *extra]


@pytest.mark.slow  # 18 runs, each a child process, a Dask cluster and submitit's local executor
def test_a_two_by_three_sweep_is_the_same_on_local_submitit_and_dask(tmp_path, subprocess_env):
    backends = {
        "local": ["--backend", "local", "--workers", "2", "--threads", "1"],
        "slurm": ["--backend", "slurm", "--slurm-local", "--threads", "1"],
        "dask": ["--backend", "dask", "--workers", "2"],
    }
    results = {}
    for name, options in backends.items():
        run_checked(engram_cmd() + sweep_args(tmp_path / name, *options), env=subprocess_env)
        results[name] = metrics_by_run(tmp_path / name)
        status = json.loads((tmp_path / name / "sweep.json").read_text())
        assert (status["backend"], status["finished"]) == (name, 6)
    assert len(results["local"]) == 6
    assert results["local"] == results["slurm"] == results["dask"]  # same run directories, same numbers


@pytest.mark.slow  # a sweep killed with -9 and run again
def test_killing_the_driver_loses_no_finished_run(tmp_path, subprocess_env):
    longer = ["--set", "train.steps=400", "--set", "train.checkpoint_every=50", "--workers", "2", "--threads", "1"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_checked(engram_cmd() + sweep_args(straight, *longer), env=subprocess_env)

    driver = subprocess.Popen(
        engram_cmd() + sweep_args(killed, *longer),
        env=subprocess_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 180
    # mid-way: at most update 300 of 400, so that it cannot finish between this check and the kill (a
    # run at its last checkpoint, 400, writes its summary within milliseconds: a flake seen in CI)
    while time.time() < deadline and not (
        len(list(killed.glob("*/*/summary.json"))) >= 1 and any_run_mid_way(killed, 300)
    ):
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)  # the driver only: its runs must die with it
    driver.wait()
    finished = {p: p.stat().st_mtime_ns for p in killed.glob("*/*/summary.json")}
    assert 1 <= len(finished) < 6 and any_run_mid_way(killed)
    time.sleep(1.5)
    assert finished == {p: p.stat().st_mtime_ns for p in killed.glob("*/*/summary.json")}, "orphans still run"

    run_checked(engram_cmd() + sweep_args(killed, *longer), env=subprocess_env)
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in finished.items()), "a finished run was repeated"
    assert metrics_by_run(killed) == metrics_by_run(straight)  # the interrupted runs resumed to the same end
    logs = [p.read_text() for p in killed.glob("*/*/sweep.log")]
    assert any("resuming" in log for log in logs)


def any_run_mid_way(out: Path, at_most: int | None = None) -> bool:
    """A run with a checkpoint and no summary yet (with ``at_most``: a checkpoint of that update or
    earlier)."""
    return any(mid_way(d / "lstm" / "checkpoint.safetensors", at_most) and not (d / "summary.json").exists()
               for d in out.glob("*/*") if d.is_dir())  # fmt: skip


def mid_way(checkpoint: Path, at_most: int | None) -> bool:
    try:
        step = load_checkpoint(checkpoint, with_state=False).step
    except EngramError:  # none yet, or caught between its two renames
        return False
    return at_most is None or step <= at_most


def test_the_child_entry_point_runs_a_job(tmp_path):
    (job,) = plan("memory-mqar", preset="quick", seeds=[0], out=tmp_path, overrides=TINY_MQAR, threads=1)
    payload = json.dumps({**job.__dict__, "overrides": list(job.overrides)})
    proc = subprocess.run([sys.executable, "-m", "engramlab.sweep", payload], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (Path(job.run_dir) / "summary.json").exists() and "running memory-mqar/quick-seed0" in proc.stdout


@pytest.mark.slow  # a Dask cluster on loopback
def test_dask_reports_a_failed_run_and_retries_it_on_the_same_cluster(tmp_path):
    from engramlab.sweep import DaskBackend

    jobs = plan("memory-mqar", preset="quick", seeds=[0], out=tmp_path, overrides=[*TINY_MQAR, "train.lr=1e30"])
    jobs += plan("memory-mqar", preset="quick", seeds=[1], out=tmp_path, overrides=TINY_MQAR)
    status = run_sweep(jobs, DaskBackend(None, workers=2), tmp_path, progress=False)
    failed, finished = status["runs"]
    assert (failed["status"], failed["attempts"], finished["status"]) == ("failed", 2, "finished")
    assert "loss is nan" in failed["error"]

"""kill -9 in the middle of a run, then --resume: the same final metrics as an uninterrupted run."""

import json
import os
import signal
import subprocess
import time

from conftest import engram_cmd, run_checked

ARGS = [
    "run",
    "pondernet-parity",
    "--seed",
    "5",
    "--workers",
    "2",
    "--threads",
    "1",
    "--no-progress",
    "--set",
    "task.n=8",
    "--set",
    "task.train_k=[1,4]",
    "--set",
    "task.test_k=[5,8]",
    "--set",
    "model.hidden=16",
    "--set",
    "model.max_steps=5",
    "--set",
    "train.steps=1200",
    "--set",
    "train.lr=3e-3",
    "--set",
    "train.log_every=50",
    "--set",
    "train.eval_every=200",
    "--set",
    "train.checkpoint_every=100",
    "--set",
    "eval.samples_per_k=50",
    "--set",
    "eval.monitor_samples=100",
]


def only_run_dir(root):
    (run_dir,) = (root / "pondernet-parity").iterdir()
    return run_dir


def checkpoint_steps(run_dir):
    from engramlab.train.checkpoint import load_checkpoint

    steps = {}
    for arm in ("pondernet", "act", "fixed"):
        path = run_dir / arm / "checkpoint.safetensors"
        if path.exists():
            steps[arm] = load_checkpoint(path, with_state=False).step
    return steps


def test_sigkill_then_resume_gives_the_same_final_metrics(tmp_path, subprocess_env):
    straight_root, killed_root = tmp_path / "straight", tmp_path / "killed"
    run_checked(engram_cmd() + ARGS + ["--out", str(straight_root)], env=subprocess_env)
    straight = json.loads((only_run_dir(straight_root) / "summary.json").read_text())

    proc = subprocess.Popen(
        engram_cmd() + ARGS + ["--out", str(killed_root)],
        env=subprocess_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.05)
        if (killed_root / "pondernet-parity").exists():
            steps = checkpoint_steps(only_run_dir(killed_root))
            if steps.get("pondernet", 0) >= 200:
                break
    os.kill(proc.pid, signal.SIGKILL)  # the parent only: its workers must die with it
    proc.wait()
    run_dir = only_run_dir(killed_root)
    assert not (run_dir / "summary.json").exists(), "the run should have been killed before it finished"
    time.sleep(1.0)
    frozen = {p: p.stat().st_mtime for p in run_dir.rglob("*") if p.is_file()}
    time.sleep(1.5)
    assert frozen == {p: p.stat().st_mtime for p in run_dir.rglob("*") if p.is_file()}, "orphans still write"

    run_checked(
        engram_cmd()
        + ["run", "pondernet-parity", "--resume", str(run_dir), "--workers", "2", "--threads", "1", "--no-progress"],
        env=subprocess_env,
    )
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["metrics"] == straight["metrics"]
    arm = json.loads((run_dir / "pondernet" / "summary.json").read_text())
    assert arm["resumed_from_step"] >= 200 or arm["resumed_from_step"] == 0

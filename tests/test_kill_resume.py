"""kill -9 in the middle of a run, then --resume: the same final metrics as an uninterrupted run."""

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import engram_cmd, run_checked, sets

pytestmark = pytest.mark.slow  # whole runs, killed and resumed in subprocesses


PONDERNET = sets(
    "task.n=8",
    "task.train_k=[1,4]",
    "task.test_k=[5,8]",
    "model.hidden=16",
    "model.halting.max_steps=5",
    "train.steps=1200",
    "train.lr=3e-3",
    "train.log_every=50",
    "train.eval_every=200",
    "train.checkpoint_every=100",
    "eval.samples_per_k=50",
    "eval.monitor_samples=100",
)
EVOLVED_RULE = sets(  # the evolution strategy's state must survive the kill
    "methods=[evolved-rule]",
    "evolve.generations=600",
    "evolve.population=8",
    "evolve.eval_every=100",
    "evolve.checkpoint_every=20",
    "fitness.shots=4",
    "eval.episodes=3",
    "eval.shots=6",
    "eval.after=[0,1,5]",
)
BACTERIA = sets(  # the simulated worlds and their random state must survive the kill
    "methods=[stage2,stage3]",
    "world.worlds=2",
    "world.capacity=32",
    "world.start_cells=16",
    "simulation.steps=6000",
    "simulation.log_every=100",
    "simulation.checkpoint_every=200",
    "simulation.eval_steps=50",
    "simulation.gif_frames=0",
)
COBERL = sets(  # the games' states, mid-episode, and the recurrent state carried between rollouts must survive
    "agents=[lstm,coberl]",
    "seeds=[5]",
    "ppo.frames=15360",
    "ppo.envs=8",
    "ppo.rollout=32",
    "ppo.minibatches=2",
    "ppo.log_every=2",
    "ppo.checkpoint_every=4",
    "lstm.hidden=32",
    "coberl.hidden=32",
    "coberl.layers=1",
    "eval.episodes=4",
    "eval.resamples=100",
)
# experiment, its settings, the arm watched, the checkpoint step after which it is killed
CASES = [
    ("pondernet-parity", PONDERNET, "pondernet", 200),
    ("evolved-rule", EVOLVED_RULE, "evolved-rule", 60),
    ("bacteria", BACTERIA, "stage2", 600),
    ("coberl", COBERL, "breakout-coberl-seed5", 20),
]


def args(experiment: str, settings: list[str]) -> list[str]:
    seed = [] if "seeds=[5]" in settings else ["--seed", "5"]  # experiments with a list of seeds set it
    return ["run", experiment, *seed, "--workers", "2", "--threads", "1", "--no-progress", *settings]


def only_run_dir(root, experiment):
    (run_dir,) = (root / experiment).iterdir()
    return run_dir


def checkpoint_step(run_dir, arm) -> int:
    """The step of the arm's checkpoint, 0 while there is none. A save moves the current file aside
    before renaming the new one in, so a poll can land in that gap: it reads as "not yet"."""
    from engramlab.engine.checkpoint import load_checkpoint
    from engramlab.errors import RunDirError

    try:
        return load_checkpoint(run_dir / arm / "checkpoint.safetensors", with_state=False).step
    except RunDirError:
        return 0


@pytest.mark.parametrize("experiment, settings, arm, kill_after", CASES, ids=[c[0] for c in CASES])
def test_sigkill_then_resume_gives_the_same_final_metrics(
    tmp_path, subprocess_env, experiment, settings, arm, kill_after
):
    straight_root, killed_root = tmp_path / "straight", tmp_path / "killed"
    run_checked(engram_cmd() + args(experiment, settings) + ["--out", str(straight_root)], env=subprocess_env)
    straight = json.loads((only_run_dir(straight_root, experiment) / "summary.json").read_text())

    proc = subprocess.Popen(
        engram_cmd() + args(experiment, settings) + ["--out", str(killed_root)],
        env=subprocess_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.05)
        if (killed_root / experiment).exists():
            if checkpoint_step(only_run_dir(killed_root, experiment), arm) >= kill_after:
                break
    os.kill(proc.pid, signal.SIGKILL)  # the parent only: its workers must die with it
    proc.wait()
    run_dir = only_run_dir(killed_root, experiment)
    assert not (run_dir / "summary.json").exists(), "the run should have been killed before it finished"
    time.sleep(1.0)
    frozen = {p: p.stat().st_mtime for p in run_dir.rglob("*") if p.is_file()}
    time.sleep(1.5)
    assert frozen == {p: p.stat().st_mtime for p in run_dir.rglob("*") if p.is_file()}, "orphans still write"

    resume = ["run", experiment, "--resume", str(run_dir), "--workers", "2", "--threads", "1", "--no-progress"]
    run_checked(engram_cmd() + resume, env=subprocess_env)
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["metrics"] == straight["metrics"]
    first, second = json.loads((run_dir / "run.json").read_text())["stretches"]  # the killed one, the resume
    assert first["ended"].startswith("killed") and first["seconds"] > 0 and second["ended"] == "finished"
    assert resumed["wall_time_s"] == first["seconds"] + second["seconds"]
    summary = json.loads((run_dir / arm / "summary.json").read_text())
    assert summary["resumed_from_step"] >= kill_after or summary["resumed_from_step"] == 0

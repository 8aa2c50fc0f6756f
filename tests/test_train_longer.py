"""`engram run --resume RUN --set train.steps=N`: a finished run trained longer equals a run of N updates."""

import json
import subprocess
from pathlib import Path

import pytest
from conftest import engram_cmd, run_checked, sets

from engramlab.cli import steps_to_train_longer
from engramlab.errors import EngramError

TINY = sets(
    "methods=[pondernet,fixed]",
    "task.n=6",
    "task.train_k=[1,6]",
    "task.test_k=null",
    "model.hidden=8",
    "model.halting.max_steps=4",
    "train.decay=constant",
    "train.log_every=10",
    "train.eval_every=20",
    "train.checkpoint_every=20",
    "eval.samples_per_k=20",
    "eval.monitor_samples=50",
)


def run(out: Path, *args: str) -> Path:
    proc = run_checked(engram_cmd() + ["run", "pondernet-parity", "--out", str(out), "--workers", "1", *args])
    return Path(proc.stderr.split("run directory: ")[1].split()[0])


def curve(run_dir: Path, arm: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / arm / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


@pytest.mark.slow
def test_a_run_trained_longer_equals_a_run_of_that_length(tmp_path):
    straight = run(tmp_path / "a", *TINY, "--set", "train.steps=80")
    extended = run(tmp_path / "b", *TINY, "--set", "train.steps=40")
    assert json.loads((extended / "pondernet" / "summary.json").read_text())["steps"] == 40
    proc = run_checked(engram_cmd() + ["run", "pondernet-parity", "--resume", str(extended), "--set", "train.steps=80"])
    assert "training longer: 40 -> 80 updates" in proc.stderr
    for arm in ("pondernet", "fixed"):
        assert curve(extended, arm) == curve(straight, arm)
        a, b = (json.loads((d / arm / "summary.json").read_text()) for d in (straight, extended))
        assert a["results"] == b["results"] and b["steps"] == 80 and b["resumed_from_step"] == 40
    info = json.loads((extended / "run.json").read_text())
    assert info["overrides"][-1] == "train.steps=80" and "train.steps=40" not in info["overrides"]
    assert info["extended"][0]["from_steps"] == 40 and info["extended"][0]["to_steps"] == 80
    assert "steps: 80" in (extended / "config.yaml").read_text()


@pytest.mark.slow
def test_a_decaying_learning_rate_or_fewer_steps_is_refused(tmp_path):
    done = run(tmp_path, *TINY, "--set", "train.steps=20", "--set", "train.decay=cosine")
    before = (done / "config.yaml").read_text()
    for steps, words in ((40, "needs a constant learning rate"), (10, "the run already has 20 (longer, not shorter)")):
        proc = subprocess.run(
            engram_cmd() + ["run", "pondernet-parity", "--resume", str(done), "--set", f"train.steps={steps}"],
            capture_output=True,
            text=True,
        )
        assert proc.returncode != 0 and words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (done / "config.yaml").read_text() == before


@pytest.mark.parametrize("bad", ["model.hidden=4", "train.steps=1.5", "train.steps=0", "train.steps=true"])
def test_resume_takes_only_a_whole_number_of_train_steps(bad):
    with pytest.raises(EngramError, match="the one --set it takes is train.steps=N"):
        steps_to_train_longer([bad])
    assert steps_to_train_longer(["train.steps=500"]) == 500 and steps_to_train_longer([]) is None

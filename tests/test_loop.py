"""The one loop scaffold on a toy stepper: when it logs, monitors and checkpoints, how it resumes,
and how it stops on a non-finite value."""

import math

import pytest
import torch
from torch import nn

from engramlab.engine.checkpoint import CHECKPOINT_NAME, Checkpoint, load_checkpoint
from engramlab.engine.loop import NonFinite, Schedule, Stepper, run_loop
from engramlab.engine.rundir import read_metrics
from engramlab.errors import NonFiniteLossError


class Counter(Stepper):
    """Step n adds n to a running total; the window reports the total and how many steps it saw."""

    def __init__(self, nan_at: int | None = None):
        self.model = nn.Module()
        self.model.register_buffer("total", torch.zeros(()))
        self.nan_at, self.steps_seen = nan_at, []

    def step(self, n):
        if n == self.nan_at:
            raise NonFinite("total is nan")
        self.model.total += n
        self.steps_seen.append(n)

    def window(self, n, steps, seconds):
        return {"toy/total": float(self.model.total), "toy/window": steps}

    def state(self):
        return Checkpoint(0, dict(self.model.state_dict()))

    def restore(self, ckpt):
        self.model.load_state_dict(ckpt.model)

    def postfix(self, metrics, monitor_metrics):
        return {"total": str(metrics.get("toy/total"))}


def monitor(model) -> dict[str, float]:
    return {"total": float(model.total)}


def test_logs_monitors_and_checkpoints_on_schedule_and_at_the_end(tmp_path):
    stepper = Counter()
    result = run_loop(stepper, Schedule(10, log_every=3, checkpoint_every=4, eval_every=5), tmp_path, monitor=monitor)
    rows = read_metrics(tmp_path)
    logged = [(r["step"], r["toy/total"], r["toy/window"]) for r in rows if "toy/total" in r]
    assert logged == [(3, 6.0, 3), (6, 21.0, 3), (9, 45.0, 3), (10, 55.0, 1)]  # and the last step
    assert all(r["time/steps_per_s"] > 0 and "time/elapsed_s" in r for r in rows if "toy/total" in r)
    assert [(r["step"], r["eval/total"]) for r in rows if "eval/total" in r] == [(5, 15.0), (10, 55.0)]
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ckpt.step == 10 and float(ckpt.model["total"]) == 55.0
    assert ckpt.extra["monitor"] == result.monitor_metrics and ckpt.extra["wall_time_s"] > 0
    assert result.steps == 10 and result.resumed_from == 0 and result.train_metrics["toy/total"] == 55.0


def test_resume_continues_after_the_last_checkpoint_and_rewrites_the_lost_log(tmp_path):
    first = Counter(nan_at=7)  # dies at step 7: its last checkpoint is step 4
    with pytest.raises(NonFiniteLossError):
        run_loop(first, Schedule(10, log_every=3, checkpoint_every=4), tmp_path)
    second = Counter()
    result = run_loop(second, Schedule(10, log_every=3, checkpoint_every=4), tmp_path, resume=True)
    assert second.steps_seen == [5, 6, 7, 8, 9, 10] and result.resumed_from == 4
    assert float(second.model.total) == 55.0
    steps = [r["step"] for r in read_metrics(tmp_path)]
    assert steps == [3, 6, 9, 10]  # step 6 logged once: the line written after the checkpoint was dropped


def test_a_non_finite_step_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError) as err:
        run_loop(Counter(nan_at=6), Schedule(10, log_every=1, checkpoint_every=4), tmp_path)
    path = tmp_path / CHECKPOINT_NAME
    assert str(err.value) == f"total is nan at step 6; training stopped (last good checkpoint kept: {path} (step 4))"
    assert load_checkpoint(path).step == 4
    with pytest.raises(NonFiniteLossError, match=r"at step 2; training stopped \(no good checkpoint yet\)"):
        run_loop(Counter(nan_at=2), Schedule(10, log_every=1, checkpoint_every=4), tmp_path / "fresh")


def test_the_speed_is_named_after_the_steppers_unit(tmp_path):
    stepper = Counter()
    stepper.unit = "generations"
    run_loop(stepper, Schedule(2, log_every=1, checkpoint_every=2), tmp_path)
    assert all(math.isfinite(r["time/generations_per_s"]) for r in read_metrics(tmp_path))

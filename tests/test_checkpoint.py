"""Checkpoints that cannot lie: a checksum verified on load, the last two kept, resume falling back
to the older one, a NaN stop that names only a checkpoint that passes every check, the run
directory's file mode."""

import os
import struct

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from engramlab.engine.checkpoint import (
    CHECKPOINT_NAME,
    PREVIOUS_NAME,
    Checkpoint,
    load_checkpoint,
    load_latest,
    save_checkpoint,
)
from engramlab.engine.train import TrainConfig, train
from engramlab.errors import NonFiniteLossError, RunDirError


def overwrite_tail(path, values):
    """Overwrite the last floats of the file's data (the last tensor's) in place: the file stays a
    well-formed safetensors file, only its numbers change."""
    data = struct.pack(f"<{len(values)}f", *values)
    with open(path, "r+b") as f:
        f.seek(-len(data), os.SEEK_END)
        f.write(data)


def saved(path, step, value=1.0, rng=None):
    save_checkpoint(path, Checkpoint(step, {"w": torch.full((8,), value)}, rng=rng or {}))


@pytest.mark.parametrize("garbage", [[123.0, -4.5], [float("nan"), float("nan")]], ids=["finite", "nan"])
def test_a_checkpoint_changed_after_it_was_written_is_refused(tmp_path, garbage):
    path = tmp_path / CHECKPOINT_NAME
    saved(path, 3)
    overwrite_tail(path, garbage)
    for with_state in (True, False):  # the model's weights are the only tensor: both checks see it
        with pytest.raises(RunDirError, match="checksum mismatch") as err:
            load_checkpoint(path, with_state=with_state)
        assert "\n" not in str(err.value)


def test_the_state_beside_the_model_is_checked_when_it_is_read(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    saved(path, 3, rng={"z": torch.zeros(4)})  # "rng/z" is stored after "model/w"
    overwrite_tail(path, [1.0])
    assert load_checkpoint(path, with_state=False).step == 3  # the weights alone are intact
    with pytest.raises(RunDirError, match="checksum mismatch"):
        load_checkpoint(path)


def test_a_model_that_holds_nan_is_never_written(tmp_path):
    with pytest.raises(NonFiniteLossError, match="the model's w holds NaN or inf"):
        saved(tmp_path / CHECKPOINT_NAME, 1, value=float("nan"))
    assert not any(tmp_path.iterdir())


def test_the_last_two_are_kept_with_the_run_directorys_file_mode(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    for step in (1, 2, 3):
        saved(path, step)
    assert load_checkpoint(path).step == 3 and load_checkpoint(tmp_path / PREVIOUS_NAME).step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREVIOUS_NAME, CHECKPOINT_NAME]
    (tmp_path / "plain.txt").write_text("x")  # any other file of the run directory
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes[CHECKPOINT_NAME] == modes[PREVIOUS_NAME] == modes["plain.txt"]


def test_load_latest_falls_back_to_the_previous_one_with_a_warning_or_refuses(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    assert load_latest(tmp_path) is None  # nothing yet
    saved(path, 1)
    saved(path, 2)
    warnings = []
    assert load_latest(tmp_path, warn=warnings.append).step == 2 and not warnings
    path.write_bytes(path.read_bytes()[:60])  # truncated
    assert load_latest(tmp_path, warn=warnings.append).step == 1
    (warning,) = warnings
    assert "unreadable checkpoint" in warning and "previous checkpoint (step 1)" in warning
    path.unlink()  # killed between the two renames of a save: only the previous one is there
    assert load_latest(tmp_path, warn=warnings.append).step == 1
    overwrite_tail(tmp_path / PREVIOUS_NAME, [5.0])
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RunDirError, match="no usable checkpoint in") as err:
        load_latest(tmp_path)
    assert "\n" not in str(err.value)


def test_a_checkpoint_of_the_first_format_still_loads(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    save_file({"model/w": torch.ones(3)}, str(path), metadata={"format": "engramlab-checkpoint/1", "step": "7"})
    assert load_checkpoint(path).step == 7


class Linear(nn.Module):
    """``forward(batch) -> (loss, logs)``; ``sabotage(step)`` may run first at a given call."""

    def __init__(self, sabotage=None):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))
        self.sabotage, self.calls = sabotage, 0

    def forward(self, batch):
        self.calls += 1
        loss = ((batch @ self.w - 1) ** 2).mean()
        if self.sabotage is not None:
            loss = self.sabotage(self.calls, loss)
        return loss, {"loss": loss.item()}


def sample(batch, generator):
    return torch.randn(batch, 3, generator=generator)


def test_resume_from_a_damaged_checkpoint_continues_from_the_previous_one_to_the_same_end(tmp_path, capsys):
    def cfg(steps):
        return TrainConfig(steps=steps, batch_size=4, lr=0.01, log_every=5, checkpoint_every=10, eval_every=10)

    straight = Linear()
    train(straight, sample, cfg(30), tmp_path / "straight", seed=0)
    broken = Linear()
    train(broken, sample, cfg(20), tmp_path / "broken", seed=0)  # checkpoints at steps 10 and 20
    overwrite_tail(tmp_path / "broken" / CHECKPOINT_NAME, [0.5])
    resumed = Linear()
    result = train(resumed, sample, cfg(30), tmp_path / "broken", seed=0, resume=True)
    assert result.resumed_from == 10
    assert torch.equal(resumed.w, straight.w)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("engram: warning: ") and "checksum mismatch" in line and "(step 10)" in line


def test_a_nan_stop_never_names_a_damaged_checkpoint_as_good(tmp_path):
    """At step 25 the newest checkpoint (step 20) is damaged, then the loss turns NaN: the message
    names the step-10 checkpoint, the one that still passes every check."""

    def sabotage(call, loss):
        if call == 25:
            overwrite_tail(tmp_path / CHECKPOINT_NAME, [float("nan")])
            return loss * float("nan")
        return loss

    cfg = TrainConfig(steps=30, batch_size=4, log_every=5, checkpoint_every=10, eval_every=10)
    with pytest.raises(NonFiniteLossError) as err:
        train(Linear(sabotage), sample, cfg, tmp_path, seed=0)
    previous = tmp_path / PREVIOUS_NAME
    assert (
        str(err.value) == f"loss is nan at step 25; training stopped (last good checkpoint kept: {previous} (step 10))"
    )


def test_only_the_named_tensors_must_be_finite(tmp_path):
    """A buffer may hold NaN on purpose (the bacteria's history marks a dead world's windows with NaN):
    the loop names the parameters, and only they must be finite."""
    path = tmp_path / CHECKPOINT_NAME
    model = {"w": torch.ones(2), "history": torch.tensor([float("nan"), 1.0])}
    save_checkpoint(path, Checkpoint(1, model, finite=["w"]))
    assert torch.isnan(load_checkpoint(path).model["history"][0])
    with pytest.raises(NonFiniteLossError, match="the model's w holds NaN"):
        save_checkpoint(path, Checkpoint(2, {**model, "w": torch.tensor([float("inf"), 0.0])}, finite=["w"]))

"""The runner leaves the calling process as it found it."""

import pytest
import torch
from conftest import sets

from engramlab.cli import main

TINY = sets(
    "task.n=4",
    "task.train_k=[1,2]",
    "task.test_k=[3,4]",
    "model.hidden=4",
    "methods=[fixed]",
    "train.steps=2",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "eval.samples_per_k=2",
    "eval.monitor_samples=2",
)


@pytest.mark.parametrize("caller_threads", [1, 3])
def test_a_run_and_an_eval_restore_the_callers_thread_count(tmp_path, caller_threads):
    """``--threads 2`` applies inside the run only: a later test or notebook cell keeps its own count."""
    before = torch.get_num_threads()
    torch.set_num_threads(caller_threads)
    try:
        args = ["run", "pondernet-parity", "--out", str(tmp_path), "--workers", "1", "--threads", "2"]
        assert main([*args, "--no-progress", *TINY]) == 0
        assert torch.get_num_threads() == caller_threads
        (run_dir,) = (tmp_path / "pondernet-parity").iterdir()
        assert main(["eval", str(run_dir), "--threads", "2"]) == 0
        assert torch.get_num_threads() == caller_threads
    finally:
        torch.set_num_threads(before)


def test_every_experiment_builds_its_initial_weights_from_the_run_seed():
    """The seed alone decides a model's start, whatever the global generator held before: a run is the
    same in any process, on any sweep backend. (The memory experiments once drew from the unseeded
    global generator.)"""
    from engramlab.config import resolve
    from engramlab.errors import EngramError
    from engramlab.experiments import all_experiments

    checked = []
    for exp in all_experiments():
        try:
            cfg = exp.prepare(resolve(exp.Config, exp.presets["quick"]))
        except EngramError:  # needs a data set or a trained run that this checkout lacks
            continue
        arm = exp.arms(cfg)[0]
        starts = []
        for noise in (1, 2):
            torch.manual_seed(noise)
            model = exp.build(cfg, arm)
            starts.append([t.detach().flatten() for t in model.state_dict().values() if t.is_floating_point()])
        if not starts[0]:  # nothing drawn at random (e.g. a simulation whose genomes come from its own seed)
            continue
        assert torch.equal(*(torch.cat(s).nan_to_num() for s in starts)), (
            f"{exp.name}: the initial weights depend on the global generator"
        )
        checked.append(exp.name)
    assert {"memory-copy", "memory-mqar", "pondernet-parity", "coberl"} <= set(checked)

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

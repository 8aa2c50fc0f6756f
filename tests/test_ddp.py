"""Training under torchrun with 2 CPU processes (gloo): parameters stay identical across ranks."""

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, check_exit, sets

pytestmark = pytest.mark.slow  # two processes under torchrun

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from engramlab.engine import distributed as dist
    from engramlab.experiments import get_experiment
    from engramlab.config import resolve
    from engramlab.engine.train import train

    torch.set_num_threads(1)
    dist.init_from_env()
    exp = get_experiment("pondernet-parity")
    cfg = resolve(exp.Config, exp.presets["quick"], overrides=[
        "task.n=8", "task.train_k=[1,8]", "task.test_k=null", "model.hidden=16", "model.halting.max_steps=4",
        "train.steps=30", "train.log_every=10", "train.checkpoint_every=10", "train.batch_size=32"])
    model = exp.build(cfg, "pondernet")
    start = [p.detach().clone() for p in model.parameters()]
    out = sys.argv[1]
    train(model, exp.sampler(cfg, "pondernet"), cfg.train, out, seed=0)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    moved = any(not torch.equal(a, b) for a, b in zip(start, model.parameters()))
    torch.save({"params": flat, "moved": moved, "world": dist.world_size()}, f"{out}/rank{dist.rank()}.pt")
    dist.shutdown()
    dist.exit_after_group(0)
    """
)


# torchrun's own bootstrap can lose a race for a local port or a connection on a busy machine
# (pytorch/pytorch#126510); such a failure is retried once, any other failure is reported at once.
NETWORK_ERRORS = ("Address already in use", "EADDRINUSE", "DistNetworkError", "Connection reset", "Connection refused")


def torchrun(*args, **kwargs):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0 and any(e in proc.stderr for e in NETWORK_ERRORS):
        proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    return check_exit(proc)


def test_two_cpu_processes_keep_identical_parameters(tmp_path, subprocess_env):
    import torch

    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    torchrun(str(script), str(tmp_path), env=subprocess_env, cwd=REPO, timeout=300)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert rank0["world"] == rank1["world"] == 2
    assert rank0["moved"] and rank1["moved"]
    assert torch.equal(rank0["params"], rank1["params"])
    assert (tmp_path / "checkpoint.safetensors").exists()  # written by rank 0


def test_engram_run_under_torchrun_writes_one_run_directory(tmp_path, subprocess_env):
    args = [
        "-m",
        "engramlab.cli",
        "run",
        "pondernet-parity",
        "--no-progress",
        "--out",
        str(tmp_path),
        *sets(
            "task.n=6",
            "task.train_k=[1,3]",
            "task.test_k=[4,6]",
            "model.hidden=8",
            "model.halting.max_steps=3",
            "methods=[pondernet,fixed]",
            "train.steps=20",
            "train.log_every=10",
            "train.checkpoint_every=10",
            "train.batch_size=16",
            "eval.samples_per_k=10",
        ),
    ]
    torchrun(*args, env=subprocess_env, cwd=tmp_path, timeout=300)
    (run_dir,) = (tmp_path / "pondernet-parity").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["arms"]) == {"pondernet", "fixed"}

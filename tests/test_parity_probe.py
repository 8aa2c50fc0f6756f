"""scripts/parity_probe.py: linear probes of a parity model's state, step by step."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import engram_cmd, run_checked, sets

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("parity_probe", ROOT / "scripts" / "parity_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_a_probe_finds_a_linearly_present_answer_and_not_an_absent_one():
    g = torch.Generator().manual_seed(0)
    states = torch.randn(400, 6, generator=g)
    present = (states[:, 2] > 0).long()  # linear in the state
    absent = torch.randint(0, 2, (400,), generator=g)  # unrelated to it
    found = probe.probe_accuracies(states[:200], present[:200], [(states[200:], present[200:])])
    missed = probe.probe_accuracies(states[:200], absent[:200], [(states[200:], absent[200:])])
    assert found[0] > 0.95 and missed[0] < 0.65


@pytest.mark.slow
def test_the_probe_of_a_tiny_run_reports_every_step_of_both_ranges(tmp_path):
    settings = sets(
        "task.n=6",
        "task.train_k=[1,3]",
        "task.test_k=[4,6]",
        "model.hidden=16",
        "model.halting.max_steps=5",
        "methods=[pondernet]",
        "train.steps=200",
        "eval.samples_per_k=20",
        "eval.monitor_samples=50",
    )
    proc = run_checked(engram_cmd() + ["run", "pondernet-parity", "--out", str(tmp_path), "--workers", "1", *settings])
    run_dir = Path(proc.stderr.split("run directory: ")[1].split()[0])
    assert probe.main([str(run_dir), "--per-k", "40", "--out", str(tmp_path / "probe")]) == 0
    report = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert report["steps"] == 5 and set(report["results"]) == {"interpolation", "extrapolation"}
    for r in report["results"].values():
        assert all(len(r[key]) == 5 for key in ("readout", "probe", "lambda", "halted"))
        assert all(0 <= v <= 1 for key in ("readout", "probe", "lambda") for v in r[key])
        assert r["halted"] == sorted(r["halted"]) and abs(r["halted"][-1] - 1) < 1e-5  # all mass by N
    assert (tmp_path / "probe" / "probe.png").exists()

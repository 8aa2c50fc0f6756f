"""The sequence model around every memory kind: windows carry state, budgets match, the bench runs."""

import json

import pytest
import torch
from conftest import TINY_MQAR, sets

from engramlab.bench import run_suite
from engramlab.errors import EngramError
from engramlab.experiments.memory.common import count_parameters, match_budget
from engramlab.memory import KINDS
from engramlab.models.sequence import MemoryModel, MemoryModelConfig
from engramlab.tasks.mqar import MQARConfig, MQARTask

TINY = {"d_model": 16, "heads": 2, "slots": 8, "slot_width": 4, "controller_size": 8, "memory_size": 32, "top_k": 4}


def tiny_model(kind: str, **changes) -> MemoryModel:
    torch.manual_seed(0)
    return MemoryModel(MemoryModelConfig(memory=kind, **{**TINY, **changes}), 20, 20, tokens=True)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_trains_through_the_same_model(kind):
    model = tiny_model(kind, window=8)
    batch = MQARTask(MQARConfig(vocab=20, length=24, kv_pairs=3)).sample(4, torch.Generator().manual_seed(0))
    loss, logs = model(batch)
    loss.backward()
    assert torch.isfinite(loss) and 0.0 <= logs["accuracy"] <= 1.0
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("kind", ["lstm", "gru", "ntm", "memn2n"])
def test_recurrent_kinds_give_the_same_output_window_by_window(kind):
    """Carrying the state across windows is the same computation as reading the sequence at once."""
    x = torch.randint(0, 20, (3, 24), generator=torch.Generator().manual_seed(1))
    whole, _ = tiny_model(kind).logits(x)
    windows, _ = tiny_model(kind, window=5).logits(x)
    torch.testing.assert_close(windows, whole, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind, reaches_back", [("attention", False), ("xl", True), ("knn", True), ("lstm", True)])
def test_only_memories_carry_information_across_windows(kind, reaches_back):
    model = tiny_model(kind, window=8).eval()
    x = torch.randint(0, 20, (2, 16), generator=torch.Generator().manual_seed(2))
    changed = x.clone()
    changed[:, :8] = (changed[:, :8] + 1) % 20  # change only the first window
    with torch.no_grad():
        a, _ = model.logits(x)
        b, _ = model.logits(changed)
    second_window_differs = not torch.allclose(a[:, 8:], b[:, 8:])
    assert second_window_differs == reaches_back


def test_match_budget_picks_the_closest_width():
    def build(d):
        return tiny_model("lstm", d_model=d)

    width = match_budget(build, budget=20_000, step=2)
    params = count_parameters(build(width))
    for other in (width - 2, width + 2):
        assert abs(count_parameters(build(other)) - 20_000) >= abs(params - 20_000)


def test_bench_writes_a_leaderboard_and_keeps_finished_runs(tmp_path):
    overrides = [*TINY_MQAR, "methods=[lstm,attention]"]
    kwargs = dict(
        preset="quick",
        seeds=[0, 1],
        out=tmp_path / "runs",
        publish=tmp_path / "docs",
        experiments=["memory-mqar"],
        overrides=overrides,
        workers=1,
        progress=False,
    )
    status = run_suite("memory", **kwargs)
    assert (status["finished"], status["failed"], status["pending"]) == (2, 0, 0)
    text = status["leaderboard"].read_text()
    assert "| lstm |" in text and "| attention |" in text and "[1](memory-mqar/quick-seed1/summary.json)" in text
    rows = json.loads((tmp_path / "docs" / "leaderboard.json").read_text())
    assert {r["memory"] for r in rows} == {"lstm", "attention"}
    assert all(len(r["settings"]["pairs16"]) == 2 for r in rows)
    assert not list((tmp_path / "docs").rglob("*.safetensors"))  # published without checkpoints
    stamp = (tmp_path / "runs" / "memory-mqar" / "quick-seed0" / "summary.json").stat().st_mtime_ns
    run_suite("memory", **kwargs)  # a second call keeps finished runs
    assert (tmp_path / "runs" / "memory-mqar" / "quick-seed0" / "summary.json").stat().st_mtime_ns == stamp
    changed = {**kwargs, "overrides": [*overrides, "train.lr=0.01"]}
    with pytest.raises(EngramError, match=r"quick-seed0 was run with another config \(differs at train.lr\)"):
        run_suite("memory", **changed)  # a finished run made with another config is not mixed in


@pytest.mark.slow  # learning test
def test_attention_learns_a_tiny_associative_recall():
    """Two layers of attention look values up by key: far above chance (1/8 of the values) in a few seconds."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    task = MQARTask(MQARConfig(vocab=16, length=16, kv_pairs=2, power_a=1.0))
    model = MemoryModel(MemoryModelConfig(memory="attention", d_model=32, heads=2), 16, 16, tokens=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss, _ = model(task.sample(64, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy = model.evaluate(task.sample(500, torch.Generator().manual_seed(9)))["correct"].mean().item()
    assert accuracy > 0.6, accuracy


def test_eval_lengthens_the_xl_cache_but_refuses_width_changes(tmp_path, capsys):
    from engramlab.cli import main

    tiny = sets(
        "methods=[xl]",
        "budget=null",
        "model.d_model=16",
        "model.window=8",
        "task.length=16",
        "task.keys=4",
        "task.filler=4",
        "train.steps=2",
        "train.warmup_steps=0",
        "eval.samples=4",
        "eval.batch_size=4",
        "eval.monitor_samples=4",
        "eval.settings={window4x: {length: 32, min_distance: 8}}",
    )
    assert main(["run", "memory-passkey", "--no-progress", "--out", str(tmp_path), *tiny]) == 0
    (run_dir,) = (tmp_path / "memory-passkey").iterdir()
    assert main(["eval", str(run_dir), "--set", "arm_models.xl.mem_len=24"]) == 0
    (out_dir,) = (run_dir / "evals").iterdir()
    assert "mem_len: 24" in (out_dir / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--set", "model.d_model=32"]) == 2
    err = capsys.readouterr().err
    assert "cannot change 'model.d_model' for memory-passkey" in err and "arm_models.xl.mem_len" in err

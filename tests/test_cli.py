"""The `engram` command end to end on tiny configs: run, errors, eval, report, load_run."""

import json
import subprocess

import pytest
import torch
from conftest import engram_cmd, sets

import engramlab
from engramlab.cli import main
from engramlab.experiments import REGISTRY

TINY = sets(
    "task.n=6",
    "task.train_k=[1,3]",
    "task.test_k=[4,6]",
    "model.hidden=8",
    "model.halting.max_steps=4",
    "train.steps=20",
    "train.log_every=5",
    "train.eval_every=10",
    "train.checkpoint_every=10",
    "eval.samples_per_k=20",
    "eval.monitor_samples=50",
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "pondernet-parity", "--out", str(out), "--workers", "1", "--no-progress", *TINY]) == 0
    (run_dir,) = (out / "pondernet-parity").iterdir()
    return run_dir


def test_run_writes_the_run_directory_layout(tiny_run):
    for name in ("config.yaml", "run.json", "summary.json"):
        assert (tiny_run / name).is_file()
    for arm in ("pondernet", "act", "fixed"):
        for name in ("checkpoint.safetensors", "metrics.jsonl", "summary.json"):
            assert (tiny_run / arm / name).is_file(), (arm, name)
    for plot in ("accuracy_vs_k", "steps_vs_k", "halting_distribution", "learning_curves"):
        assert (tiny_run / "plots" / f"{plot}.png").stat().st_size > 1000
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["experiment"] == "pondernet-parity" and summary["preset"] == "quick"
    assert 0 <= summary["metrics"]["pondernet/extrapolation_accuracy"] <= 1
    assert summary["versions"]["torch"] and summary["machine"]["cpu_count"] >= 1
    assert summary["arms"]["pondernet"]["parameters"] > 0 and summary["wall_time_s"] > 0


def test_load_run_gives_an_eval_model_whose_predict_follows_the_contract(tiny_run):
    model, cfg = engramlab.load_run(tiny_run)
    assert not model.training and cfg.task.n == 6
    x = torch.tensor([[1.0, 0.0, -1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0, 0.0, 1.0]])
    parity, steps = model.predict(x)
    assert parity.dtype == torch.long and steps.dtype == torch.long
    assert parity.shape == (2,) and steps.shape == (2,)
    assert set(parity.tolist()) <= {0, 1} and ((1 <= steps) & (steps <= 4)).all()
    act, _ = engramlab.load_run(tiny_run, arm="act")
    assert act.predict(x)[0].shape == (2,)


def test_eval_on_a_changed_task_without_retraining(tiny_run, capsys):
    assert main(["eval", str(tiny_run), "--set", "task.test_k=[5,6]", "--set", "model.halting.eval_max_steps=8"]) == 0
    (out_dir,) = (tiny_run / "evals").iterdir()
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["results"]["pondernet"]["extrapolation"]["k_range"] == [5, 6]
    assert summary["results"]["pondernet"]["max_steps"] == 8
    assert "pondernet/extrapolation_accuracy" in capsys.readouterr().out


def test_eval_refuses_changes_to_the_model(tiny_run, capsys):
    assert main(["eval", str(tiny_run), "--set", "model.hidden=16"]) == 2
    assert "cannot change 'model.hidden'" in capsys.readouterr().err
    assert main(["eval", str(tiny_run), "--set", "task.n=9"]) == 2
    assert "shape of the trained" in capsys.readouterr().err


def test_report_puts_our_numbers_next_to_the_papers(tiny_run, capsys):
    assert main(["report", str(tiny_run.parent)]) == 0
    text = capsys.readouterr().out
    assert "| PonderNet accuracy, extrapolation |" in text and "almost perfect" in text
    assert "seeds 0" in text


def test_report_keeps_runs_with_different_configs_apart(tiny_run, tmp_path, capsys):
    """Same preset name, same seed-free overrides, different configs: two sections, never averaged."""
    import re
    import shutil

    for name, lr in (("a", "0.003"), ("b", "0.003"), ("c", "0.1")):
        copy = shutil.copytree(tiny_run, tmp_path / name)
        config = (copy / "config.yaml").read_text()
        (copy / "config.yaml").write_text(re.sub(r"\n  lr: .*\n", f"\n  lr: {lr}\n", config))
    assert main(["report", str(tmp_path)]) == 0
    headings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("### ")]
    assert len(headings) == 2 and sorted(h.split("(")[1] for h in headings) == [
        "1 run, seeds 0)",
        "1 run, seeds 0; 1 duplicate not pooled)",
    ]
    assert all(", config " in h for h in headings)


def test_report_pools_runs_whose_presets_resolve_to_the_same_config(tiny_run, tmp_path, capsys):
    """A `quick` preset may equal `paper`: runs of either, with equal configs, are one group."""
    import json
    import shutil

    for seed, preset in enumerate(("quick", "paper")):
        copy = shutil.copytree(tiny_run, tmp_path / preset)
        summary = json.loads((copy / "summary.json").read_text())
        (copy / "summary.json").write_text(json.dumps({**summary, "preset": preset, "seed": seed}))
    assert main(["report", str(tmp_path)]) == 0
    (heading,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("### ")]
    assert "preset `paper` = `quick`" in heading and "2 runs, seeds 0, 1)" in heading


def test_report_counts_a_seed_that_ran_twice_once(tiny_run, tmp_path, capsys):
    """Two runs of one seed are one sample: the one that finished last is reported, the other named."""
    import shutil

    key = "pondernet/extrapolation_accuracy"
    for name, finished, accuracy in (("a", "2026-01-02T00:00:00+00:00", 0.75), ("b", "2026-01-01T00:00:00+00:00", 0.5)):
        copy = shutil.copytree(tiny_run, tmp_path / name)
        summary = json.loads((copy / "summary.json").read_text())
        summary["metrics"][key] = accuracy
        (copy / "summary.json").write_text(json.dumps({**summary, "finished": finished}))
    assert main(["report", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    (heading,) = [line for line in lines if line.startswith("### ")]
    assert heading.endswith("(1 run, seeds 0; 1 duplicate not pooled)")
    assert f"- seed 0: 2 runs, {tmp_path / 'b'}, {tmp_path / 'a'}; used: {tmp_path / 'a'} (finished last)" in lines
    assert "| PonderNet accuracy, extrapolation | 0.7500 | almost perfect | §3.1, Fig. 1b (n = 96, k 49-96) |" in lines
    (runs,) = [line for line in lines if line.startswith("Wall time per run: ")]
    assert runs.endswith(f"Runs: {tmp_path / 'a'}")


def test_report_deviations_show_the_values_the_run_was_given(tiny_run, capsys):
    """The tiny run's --set task.n=6, train.steps=20, ... replace the quick preset's values in its deviations."""
    assert main(["report", str(tiny_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "- n = 6, train k in [1, 3], test k in [4, 6] (paper: n = 96, [1, 48], [49, 96]) - 2-core budget" in lines
    assert any(line.startswith("- AdamW, lr 3e-3") and "; 20 updates (paper: not stated)" in line for line in lines)
    assert not any(line.startswith("- n = 32") or "20k updates" in line for line in lines)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["run", "pondernet-parity", "--set", "model.halting.lambda_p=2"],
            "invalid value for model.halting.lambda_p: 2 (allowed: a number > 0 and < 1)",
        ),
        (["run", "pondernet-parity", "--set", "model.lamda_p=0.1"], "unknown config key 'model.lamda_p'"),
        (
            ["run", "no-such-experiment"],
            f"unknown experiment 'no-such-experiment' (available: {', '.join(sorted(REGISTRY))})",
        ),
        (["run", "pondernet-parity", "--preset", "huge"], "unknown preset 'huge'"),
        (
            ["run", "memn2n-babi", "--set", "task.data_dir=/nonexistent/babi"],
            "task.data_dir = /nonexistent/babi is not a directory",
        ),
        (["run", "pondernet-parity", "--resume", "/nonexistent/run"], "not an engramlab run directory"),
        (["eval", "/nonexistent/run"], "not an engramlab run directory"),
    ],
)
def test_user_errors_print_one_line_exit_2_and_leave_no_run_directory(tmp_path, args, message, subprocess_env):
    proc = subprocess.run(
        engram_cmd() + args + ["--out", str(tmp_path)] * (args[0] == "run"),
        capture_output=True,
        text=True,
        env=subprocess_env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not list(tmp_path.iterdir()), "nothing may be written"


def test_list_and_help(capsys):
    assert main(["list"]) == 0
    assert "pondernet-parity" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--preset", "--seed", "--out", "--set", "--resume", "--workers", "--threads", "--show-config"):
        assert option in help_text


def test_show_config_lists_every_key_without_training(tmp_path, capsys):
    assert main(["run", "pondernet-parity", "--show-config", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "model.halting.lambda_p = 0.1" in text and "train.steps" in text
    assert not list(tmp_path.iterdir())

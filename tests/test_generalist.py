"""The generalist end to end on tiny settings, fine-tuning from it, config errors, and a tiny
Gato that learns CartPole from tokens."""

import json

import pytest
import torch
from conftest import sets, write_digits

from engramlab.cli import main
from engramlab.config import resolve
from engramlab.experiments import get_experiment
from engramlab.models.gato import Gato, GatoConfig
from engramlab.models.gato_agent import run_episodes
from engramlab.tasks import control
from engramlab.tasks import generalist as data_lib

TINY = (
    "data.tasks=[cartpole,babyai-gotoredballgrey]",
    "data.held_out=[mountaincar]",
    "data.episodes=4",
    "data.babyai_episodes=12",
    "data.caption_images=40",
    "model.layers=1",
    "model.width=32",
    "model.heads=2",
    "model.mlp=64",
    "model.context=128",
    "train.steps=20",
    "train.batch_size=8",
    "train.log_every=10",
    "train.eval_every=10",
    "train.checkpoint_every=10",
    "train.warmup_steps=0",
    "eval.episodes=2",
    "eval.caption_images=10",
    "eval.record=cartpole",
)


@pytest.fixture(scope="module")
def generalist_run(tmp_path_factory):
    mnist = tmp_path_factory.mktemp("mnist")
    write_digits(mnist)
    cache = tmp_path_factory.mktemp("episodes")
    out = tmp_path_factory.mktemp("runs")
    paths = (f"data.mnist_dir={mnist}", f"data.cache_dir={cache}")
    args = ["run", "generalist", "--preset", "quick", "--out", str(out), "--no-progress", "--workers", "1"]
    assert main([*args, *sets(*TINY, *paths)]) == 0
    (run_dir,) = (out / "generalist").iterdir()
    return run_dir, cache


@pytest.mark.slow  # shares an end-to-end generalist run
def test_a_generalist_run_reports_scores_per_task_beside_specialists_and_retrieval(generalist_run):
    run_dir, cache = generalist_run
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = summary["metrics"]
    for key in ("tasks_above_50", "tasks_above_80", "mean_normalised", "caption_accuracy", "points_below_specialists"):
        assert f"generalist/{key}" in metrics
    for task in ("cartpole", "babyai-gotoredballgrey"):
        assert {f"generalist/{task}", f"specialist/{task}", f"nearest-neighbour/{task}"} <= set(metrics)
    assert set(summary["arms"]) == {"generalist", "specialist-cartpole", "specialist-babyai-gotoredballgrey"}
    assert summary["arms"]["specialist-cartpole"]["steps"] == 10  # 20 updates x 0.8 / 2 tasks, at least one log window
    logged = [json.loads(line) for line in (run_dir / "generalist" / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in row for row in logged) and any("eval/fixed_batch_loss" in row for row in logged)
    for plot in ("threshold_curve.png", "task_scores.png", "learning_curves.png", "agent.gif"):
        assert (run_dir / "plots" / plot).stat().st_size > 0
    assert sorted(p.name for p in cache.iterdir()) == [
        "babyai-gotoredballgrey-12ep-seed0.npz",
        "cartpole-4ep-seed0.npz",
        "mountaincar-4ep-seed0.npz",  # held out, generated for generalist-finetune
    ]


@pytest.mark.slow  # shares an end-to-end generalist run
def test_fine_tuning_from_the_generalist_and_from_scratch(generalist_run, tmp_path):
    run_dir, _ = generalist_run
    args = ["run", "generalist-finetune", "--preset", "quick", "--out", str(tmp_path), "--no-progress"]
    tiny = sets(f"pretrained={run_dir}", "demonstrations=[1,2]", "train.steps=10", "train.log_every=5")
    tiny += sets("train.eval_every=5", "train.checkpoint_every=5", "train.warmup_steps=0", "eval.episodes=2")
    assert main([*args, "--workers", "1", *tiny]) == 0
    (finetune_dir,) = (tmp_path / "generalist-finetune").iterdir()
    metrics = json.loads((finetune_dir / "summary.json").read_text())["metrics"]
    arms = {f"mountaincar-{n}demos-{s}" for n in (1, 2) for s in ("pretrained", "scratch")}
    assert {f"{a}/normalised_prompted" for a in arms} <= set(metrics)
    assert 0 <= metrics["pretrained_beats_scratch"] <= 1
    assert (finetune_dir / "plots" / "finetune.png").exists()


def test_fine_tuning_needs_a_finished_generalist_run(tmp_path, capsys):
    assert main(["run", "generalist-finetune", "--out", str(tmp_path), *sets(f"pretrained={tmp_path}")]) == 2
    assert "not a finished `engram run generalist` directory" in capsys.readouterr().err
    assert not (tmp_path / "generalist-finetune").exists()


@pytest.mark.slow  # shares an end-to-end generalist run
def test_fine_tuning_refuses_a_task_the_generalist_trained_on(generalist_run, tmp_path, capsys):
    run_dir, _ = generalist_run
    assert (
        main(["run", "generalist-finetune", "--out", str(tmp_path), *sets(f"pretrained={run_dir}", "tasks=[cartpole]")])
        == 2
    )
    assert "tasks ['cartpole']: the pretrained generalist trained on them" in capsys.readouterr().err
    assert (
        main(["run", "generalist-finetune", "--out", str(tmp_path), *sets(f"pretrained={run_dir}", "tasks=[cartpol]")])
        == 2
    )
    assert "unknown control task 'cartpol'" in capsys.readouterr().err
    assert not (tmp_path / "generalist-finetune").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.tasks=[cartpol]"], "unknown control task 'cartpol'"),
        (["eval.record=acrobot", "data.tasks=[cartpole]"], "eval.record ('acrobot') must be one of data.tasks"),
        (["data.held_out=[cartpole]"], "data.held_out shares ['cartpole'] with data.tasks"),
        (["model.heads=5"], "model.width (768) must be a multiple of model.heads (5)"),
        (["model.heads=768", "model.rotary=true"], "model.rotary needs an even head width; width / heads = 1"),
        (["model.patch_groups=12"], "model.patch_groups (12) must divide the patch block's 16 channels"),
        (["model.channels=3"], "model.channels (3) must be 1: the images are MNIST digits"),
    ],
)
def test_config_errors_name_the_field(overrides, message):
    with pytest.raises(Exception, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        resolve(get_experiment("generalist").Config, overrides=overrides)


@pytest.mark.slow  # learning test
def test_a_tiny_gato_learns_cartpole_from_tokens(tmp_path):
    """300 updates on 10 expert episodes: the greedy policy must beat the random one by far."""
    torch.manual_seed(0)
    data = control.load_or_generate(control.get_task("cartpole"), 10, 0, tmp_path)
    builder = data_lib.CorpusBuilder()
    table = data_lib.episode_table([data_lib.add_control_task(builder, data)])
    sample = data_lib.Sampler(builder.build(), table, None, None, context=60, prompt_fraction=0.0)
    model = Gato(GatoConfig(layers=2, width=32, heads=2, mlp=64, dropout=0.0, context=60))
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        batch = sample(16, generator)
        loss = model.loss(batch.ids, batch.local, batch.target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    returns = run_episodes(model, data.task, episodes=10, seed=1000, context=60).returns
    assert returns.mean() > 3 * data.random_score, (returns, data.random_score)

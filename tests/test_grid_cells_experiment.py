"""The grid-cell experiment: the two recipes' losses, a tiny run end to end, and a tiny network that
learns to path-integrate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engramlab.config import resolve
from engramlab.engine.runner import run_experiment
from engramlab.engine.train import TrainConfig, train
from engramlab.errors import ConfigError
from engramlab.evaluate import evaluate_run
from engramlab.experiments.space import grid_cells
from engramlab.experiments.space.grid_cells import EXPERIMENT, GridCellsConfig

TINY = [
    "seeds=[0]", "eval.samples=2000", "eval.null_samples=1000", "eval.shuffles=3", "eval.bins=8",
    "a.net.lstm=16", "a.net.bottleneck=24", "a.cells.place=32", "a.cells.hd=6", "a.env.steps=10",
    "a.train.steps=4", "a.train.log_every=2", "a.train.eval_every=2", "a.train.checkpoint_every=2",
    "b.net.units=24", "b.cells.place=32", "b.env.steps=10",
    "b.train.steps=4", "b.train.batch_size=8", "b.train.log_every=2", "b.train.eval_every=2",
    "b.train.checkpoint_every=2",
]  # fmt: skip


def test_a_tiny_run_trains_and_scores_both_recipes_and_their_untrained_networks(tmp_path):
    cfg = resolve(GridCellsConfig, EXPERIMENT.presets["quick"], overrides=TINY)
    assert EXPERIMENT.arms(cfg) == ["a-seed0", "b-seed0", "a-untrained", "b-untrained"]
    summary = run_experiment(EXPERIMENT, cfg, tmp_path, preset="quick", overrides=TINY, threads=1, progress=False)
    metrics = summary["metrics"]
    for key in ("a", "b", "a-untrained", "b-untrained"):
        assert metrics[f"{key}/decode_error_cm"] > 0
        assert 0 <= metrics[f"{key}/frac_above_0.37"] <= 1
        assert metrics[f"{key}/seeds"] == 1
    again, _ = evaluate_run(tmp_path, [])  # every arm, the untrained ones too, from its checkpoint
    assert again["metrics"]["a-untrained/decode_error_cm"] == pytest.approx(metrics["a-untrained/decode_error_cm"])
    assert again["metrics"]["b/decode_error_cm"] == pytest.approx(metrics["b/decode_error_cm"])
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert "gridness.png" in plots and "learning-curves.png" in plots and "units-a-seed0.png" in plots
    assert "paths-b-untrained.png" in plots


@pytest.mark.parametrize("recipe", ["a", "b"])
def test_each_recipes_loss_is_the_cross_entropy_against_the_cells_plus_its_penalty(recipe):
    cfg = resolve(GridCellsConfig, {}, overrides=TINY)
    model = EXPERIMENT.build(cfg, f"{recipe}-seed0").eval()  # no dropout: two passes agree
    path = grid_cells.walk(model.r, 5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss, logs = model(path)
        place_logits, hd_logits, units = model.run(path)
    assert place_logits.shape == (5, 10, 32) and units.shape[:2] == (5, 10)
    assert (hd_logits is None) == (recipe == "b")
    expected = -(model.place(path.position[:, 1:]) * place_logits.log_softmax(-1)).sum(-1).mean()
    assert logs["place_loss"] == pytest.approx(float(expected), rel=1e-5)
    penalty = sum(float(w.pow(2).sum()) for w in model.net.decay_weights())
    wd = model.r.net.weight_decay * (0.5 if recipe == "a" else 1.0)
    assert float(loss) == pytest.approx(logs["place_loss"] + logs.get("hd_loss", 0.0) + wd * penalty, rel=1e-5)


def test_a_tiny_lstm_learns_to_path_integrate_better_than_untrained(tmp_path):
    overrides = [
        "a.net.lstm=32", "a.net.bottleneck=32", "a.net.dropout=0", "a.cells.place=64", "a.cells.place_sigma=0.2",
        "a.cells.hd=8", "a.env.steps=15", "eval.samples=3000",
    ]  # fmt: skip
    cfg = resolve(GridCellsConfig, {}, overrides=overrides)
    model = EXPERIMENT.build(cfg, "a-seed0")
    before = grid_cells.decode_error_cm(grid_cells.activity(cfg, model))
    schedule = TrainConfig(steps=250, batch_size=32, lr=1e-2, log_every=50, eval_every=250, checkpoint_every=250)
    train(model, lambda b, g: grid_cells.walk(model.r, b, g), schedule, tmp_path, seed=0)
    model.eval()
    after = grid_cells.decode_error_cm(grid_cells.activity(cfg, model))
    assert after < 0.4 * before, (before, after)  # measured: 108 -> 18 cm


@pytest.mark.parametrize(
    "override, words",
    [
        ("recipes=[a, c]", "unknown recipe 'c'"),
        ("seeds=[1, 1]", "each seed once"),
    ],
)
def test_bad_config_is_one_line(override, words):
    cfg = resolve(GridCellsConfig, {}, overrides=[override])
    with pytest.raises(ConfigError, match=words) as info:
        EXPERIMENT.arms(cfg)
    assert "\n" not in str(info.value)


def test_the_seed_bar_needs_ten_percent_above_the_null_and_a_top_score_of_0_8():
    good = {"frac_above_0.37": 0.2, "frac_above_0.37_and_null95": 0.12, "top_score60": 0.9}
    assert grid_cells.has_grids(good)
    assert not grid_cells.has_grids({**good, "frac_above_0.37_and_null95": 0.05})
    assert not grid_cells.has_grids({**good, "top_score60": 0.7})
    assert np.isfinite(good["top_score60"])


def test_sorschers_input_is_the_displacement_of_each_step():
    cfg = GridCellsConfig()
    path = grid_cells.walk(cfg.b, 4, torch.Generator().manual_seed(0))
    moved = grid_cells.network_input(cfg.b, path)
    assert moved.shape == (4, cfg.b.env.steps, 2)
    assert torch.allclose(path.position[:, 0] + moved.cumsum(1)[:, -1], path.position[:, -1], atol=1e-5)
    assert 0.005 < moved.norm(dim=-1).mean() < 0.05  # metres per step (speed·dt), not m/s


def test_quick_names_its_optimisers_as_deviations_and_paper_keeps_the_published_ones():
    def lines(preset):
        cfg = resolve(GridCellsConfig, EXPERIMENT.presets[preset])
        return cfg, " ".join(EXPERIMENT.deviations_of(cfg, preset))

    quick, quick_text = lines("quick")
    paper, paper_text = lines("paper")
    assert not quick.a.optimiser_as_published and not quick.b.optimiser_as_published
    assert "recipe A trained by Adam at lr 1e-3, value clip 0" in quick_text
    assert "recipe B trained by Adam at lr 1e-3 with weight decay 0.0" in quick_text
    assert paper.a.optimiser_as_published and paper.b.optimiser_as_published
    assert "trained by" not in paper_text
    assert (paper.a.train.optimizer, paper.a.train.lr, paper.a.train.grad_value_clip) == ("rmsprop-tf1", 1e-5, 1e-5)
    assert (paper.b.train.lr, paper.b.net.weight_decay, paper.b.net.units) == (1e-4, 1e-4, 4096)

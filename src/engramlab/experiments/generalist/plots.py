"""Plots of the generalist experiment: the threshold curve (Gato Fig. 5), per-task scores next to
the specialists and the 1-NN agent, and learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engramlab.engine import plots
from engramlab.engine.plots import plt, save


def prompted_scores(cfg, results: dict[str, Any]) -> np.ndarray:
    return np.array([results["generalist"]["tasks"][t]["normalised_prompted"] for t in cfg.data.tasks])


def threshold_curve(cfg, results: dict[str, dict[str, Any]], path: Path) -> Path:
    """Share of training tasks whose normalised score reaches each threshold (Gato §4.1, Fig. 5)."""
    thresholds = np.linspace(0, 1, 101)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    general = results["generalist"]
    curves = {
        "generalist, prompted": prompted_scores(cfg, results),
        "generalist, no prompt": np.array([general["tasks"][t]["normalised"] for t in cfg.data.tasks]),
    }
    if "nearest_neighbour" in general:
        curves["1-NN retrieval"] = np.array([general["nearest_neighbour"][t] for t in cfg.data.tasks])
    specialists = [results.get(f"specialist-{t}") for t in cfg.data.tasks]
    if all(specialists):
        curves["specialists"] = np.array(
            [s["tasks"][t]["normalised_prompted"] for s, t in zip(specialists, cfg.data.tasks)]
        )
    for i, (label, scores) in enumerate(curves.items()):
        ax.plot(100 * thresholds, [(scores >= x).mean() * 100 for x in thresholds], label=label, color=f"C{i}")
    ax.axvline(50, color="grey", lw=0.8, ls=":")
    ax.axvline(80, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("score threshold (% of expert)")
    ax.set_ylabel(f"% of the {len(cfg.data.tasks)} training tasks")
    ax.set_title("tasks above each threshold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)


def task_bars(cfg, results: dict[str, dict[str, Any]], path: Path) -> Path:
    general = results["generalist"]
    series = {
        "generalist, prompted": prompted_scores(cfg, results),
        "generalist, no prompt": [general["tasks"][t]["normalised"] for t in cfg.data.tasks],
    }
    if all(f"specialist-{t}" in results for t in cfg.data.tasks):
        series["specialist"] = [results[f"specialist-{t}"]["tasks"][t]["normalised_prompted"] for t in cfg.data.tasks]
    if "nearest_neighbour" in general:
        series["1-NN retrieval"] = [general["nearest_neighbour"][t] for t in cfg.data.tasks]
    x = np.arange(len(cfg.data.tasks))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(x)), 3.8))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, 100 * np.asarray(values), width, label=label, color=f"C{i}")
    ax.axhline(100, color="black", lw=0.8)
    ax.axhline(50, color="grey", lw=0.8, ls=":")
    ax.set_xticks(x, [t.removeprefix("babyai-") for t in cfg.data.tasks], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("normalised score (% of expert)")
    ax.set_ylim(min(-20, ax.get_ylim()[0]), max(120, ax.get_ylim()[1]))
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, axis="y")
    return save(fig, path)


def learning_curves(run_dir: Path, arms: list[str], path: Path) -> Path:
    panel = [("training loss (actions and text)", [("train/loss", "-", "")])]
    panel.append(("loss on one fixed batch", [("eval/fixed_batch_loss", "-", "")]))
    return plots.learning_curves(run_dir, arms, panel, path)

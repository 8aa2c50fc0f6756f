"""Plots of a memory experiment: the headline metric per arm and evaluation setting; learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engramlab import plots


def plot_all(exp, cfg, results: dict[str, dict[str, Any]], run_dir: Path, out_dir: Path) -> list[Path]:
    arms = list(results)
    metric = exp.headline_metric
    paths = [settings_bars(cfg, results, arms, metric, out_dir / f"{metric}_by_setting.png", exp.name)]
    panels = [
        ("training loss", [("train/loss", "-", "")]),
        (f"{metric} during training", [(f"eval/{metric}", "-", "")]),
    ]
    paths.append(plots.learning_curves(run_dir, arms, panels, out_dir / "learning_curves.png"))
    return paths


def settings_bars(cfg, results, arms: list[str], metric: str, path: Path, title: str) -> Path:
    """Grouped bars: one group per evaluation setting, one bar per arm."""
    settings = list(cfg.eval.settings)
    key = {"accuracy": "correct"}.get(metric, metric)
    width = 0.8 / len(arms)
    fig, ax = plots.plt.subplots(figsize=(1.6 + 1.4 * len(settings) * max(1, len(arms) / 3), 3.6))
    x = np.arange(len(settings))
    for i, arm in enumerate(arms):
        values = [results[arm][s][key] for s in settings]
        ax.bar(x + (i - (len(arms) - 1) / 2) * width, values, width, label=arm, color=plots.color(arm, i))
    ax.set_xticks(x, settings)
    ax.set_ylabel({"correct": "accuracy", "bit_errors": "wrong bits per sequence"}.get(key, key))
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return plots.save(fig, path)

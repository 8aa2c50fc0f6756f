"""Plots of a memory experiment: the headline metric per arm and evaluation setting; learning curves.

Every kind of memory has one colour in every plot, declared with the kind (``MemoryKind.color``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engramlab.engine import plots
from engramlab.memory import MEMORY_KINDS

METRIC_WORDS = {"accuracy": "accuracy", "bit_errors": "wrong bits per sequence"}
COLORS = {name: kind.color for name, kind in MEMORY_KINDS.items()}


def plot_all(exp, cfg, results: dict[str, dict[str, Any]], run_dir: Path, out_dir: Path) -> list[Path]:
    arms = list(results)
    metric = exp.headline_metric
    paths = [settings_bars(cfg, results, arms, metric, out_dir / f"{metric}_by_setting.png", exp.name)]
    panels = [
        ("training loss", [("train/loss", "-", "")]),
        (f"{metric} during training", [(f"eval/{metric}", "-", "")]),
    ]
    paths.append(plots.learning_curves(run_dir, arms, panels, out_dir / "learning_curves.png", colors=COLORS))
    return paths


def settings_bars(cfg, results, arms: list[str], metric: str, path: Path, title: str) -> Path:
    """Grouped bars: one group per evaluation setting, one bar per arm."""
    settings = list(cfg.eval.settings)
    key = {"accuracy": "correct"}.get(metric, metric)
    fig, ax = plots.plt.subplots(figsize=(1.6 + 1.4 * len(settings) * max(1, len(arms) / 3), 3.6))
    series = {arm: ([results[arm][s][key] for s in settings], None) for arm in arms}
    grouped_bars(ax, settings, series, METRIC_WORDS.get(metric, metric), title)
    return plots.save(fig, path)


def grouped_bars(ax, groups: list[str], series: dict[str, tuple[list[float], list[float] | None]], ylabel, title):
    """One group of bars per entry of ``groups``, one bar per series (values, optional error bars)."""
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (name, (values, errors)) in enumerate(series.items()):
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(x + offset, values, width, yerr=errors, capsize=2, label=name, color=plots.color(name, i, COLORS))
    ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)

"""Plots of the MEMO/PAI experiment: accuracy and hops per query type, hop histograms, learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engramlab.engine.plots import color, learning_curves, plt, save


def plot_all(cfg, results: dict[str, dict[str, Any]], run_dir: Path, out_dir: Path) -> list[Path]:
    arms = list(results)
    types = list(next(iter(results.values()))["test"]["types"])
    paths = [bars(results, arms, types, "accuracy", "test accuracy", out_dir / "accuracy_by_query.png", chance=0.5)]
    paths.append(bars(results, arms, types, "mean_hops", "mean hops", out_dir / "hops_by_query.png"))
    paths.append(hop_histograms(results, arms, out_dir / "hop_histograms.png"))
    paths.append(
        learning_curves(
            run_dir,
            arms,
            [
                ("test-pool accuracy (— direct, -- inference)", [
                    ("eval/direct_accuracy", "-", " direct"), ("eval/indirect_accuracy", "--", " inference")
                ]),
                ("hops (— direct, -- inference)", [
                    ("eval/hops_direct", "-", " direct"), ("eval/hops_indirect", "--", " inference")
                ]),
            ],
            out_dir / "learning_curves.png",
        )
    )  # fmt: skip
    return paths


def bars(results, arms, types, key, ylabel, path: Path, chance: float | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(types), 3.4))
    width = 0.8 / len(arms)
    x = np.arange(len(types))
    for i, arm in enumerate(arms):
        values = [results[arm]["test"]["types"][t][key] for t in types]
        ax.bar(x + (i - (len(arms) - 1) / 2) * width, values, width, label=arm, color=color(arm, i))
    if chance is not None:
        ax.axhline(chance, color="k", lw=0.8, ls="--", label="chance")
    ax.set_xticks(x, [f"{t}\n({'inference' if i == len(types) - 1 else 'direct'})" for i, t in enumerate(types)])
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)


def hop_histograms(results, arms, path: Path) -> Path:
    """How often each number of hops was taken, direct vs inference queries, one panel per arm."""
    fig, axes = plt.subplots(1, len(arms), figsize=(3.6 * len(arms), 3.0), squeeze=False)
    for ax, arm in zip(axes[0], arms):
        for kind, style in (("direct", {"alpha": 0.6}), ("indirect", {"alpha": 0.6, "hatch": "//"})):
            counts = np.array(results[arm]["test"][kind]["hop_counts"], dtype=float)
            if counts.sum():
                hops = np.arange(1, len(counts) + 1)
                label = "inference" if kind == "indirect" else kind
                ax.bar(hops + (0.2 if kind == "indirect" else -0.2), counts / counts.sum(), 0.4, label=label, **style)
        ax.set_title(arm)
        ax.set_xlabel("hops taken")
        ax.set_ylabel("share of queries")
        ax.legend(fontsize=7)
    return save(fig, path)

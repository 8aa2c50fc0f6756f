"""Plots of the offline-RL experiment: normalised score per row and dataset (bars, mean ± std over
seeds), learning curves on ``mixed``, and the KL to π_BC and the policy entropy over training for
each β of the anchored actor-critic."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engramlab.engine.plots import color, plt, save
from engramlab.engine.rundir import read_metrics


def all_plots(cfg, table, curves: list[tuple[str, str]], run_dir: Path, out_dir: Path) -> list[Path]:
    """``table``: (env, dataset, row) -> scores per seed; ``curves``: the (row, method) pairs whose
    learning curve is logged, as ``eval/score/<row>`` in the method's arms."""
    paths = [score_bars(cfg, table, out_dir / "scores.png")]
    headline = "mixed" if "mixed" in cfg.data.datasets else cfg.data.datasets[0]
    paths.append(learning_curves(cfg, headline, curves, run_dir, out_dir / f"curves-{headline}.png"))
    if "offline-ac" in cfg.methods:
        paths.append(anchor_effect(cfg, headline, run_dir, out_dir / f"anchor-{headline}.png"))
    return paths


def shown_rows(table) -> list[str]:
    """Every row except π_BC's check row, in the order first seen."""
    return [row for row in dict.fromkeys(row for (_, _, row) in table) if row != "ac-anchor"]


def score_bars(cfg, table, path: Path) -> Path:
    rows, envs, datasets = shown_rows(table), cfg.data.envs, cfg.data.datasets
    fig, axes = plt.subplots(len(envs), 1, figsize=(11, 3.4 * len(envs)), squeeze=False)
    axes = axes.T  # one row of panels per environment
    width = 0.8 / len(rows)
    for ax, env in zip(axes[0], envs):
        for i, row in enumerate(rows):
            values = [table.get((env, name, row), [np.nan]) for name in datasets]
            x = np.arange(len(datasets)) + (i - (len(rows) - 1) / 2) * width
            ax.bar(x, [np.mean(v) for v in values], width, yerr=[np.std(v) for v in values], label=row,
                   color=color(row, i), capsize=2)  # fmt: skip
        ax.axhline(100, color="black", lw=0.8, ls="--")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(np.arange(len(datasets)), datasets)
        ax.set_ylabel("normalised score (0 random, 100 expert)")
        ax.set_title(f"{env}: last iterate, mean ± std over seeds {cfg.seeds}")
        ax.grid(alpha=0.3, axis="y")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save(fig, path)


def mean_curve(run_dir: Path, arms: list[str], key: str) -> tuple[list[int], np.ndarray] | None:
    """Steps and the mean over ``arms`` of a logged metric (the steps every arm logged)."""
    curves = []
    for arm in arms:
        rows = read_metrics(Path(run_dir) / arm)
        curves.append({r["step"]: r[key] for r in rows if r.get(key) is not None})
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    if not steps:
        return None
    return steps, np.array([[c[s] for s in steps] for c in curves]).mean(0)


def arms_of(cfg, env: str, dataset: str, method: str) -> list[str]:
    return [f"{env}-{dataset}-{method}-seed{seed}" for seed in cfg.seeds]


def learning_curves(cfg, dataset: str, curves: list[tuple[str, str]], run_dir: Path, path: Path) -> Path:
    envs = cfg.data.envs
    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 3.8), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for i, (row, method) in enumerate(curves):
            curve = mean_curve(run_dir, arms_of(cfg, env, dataset, method), f"eval/score/{row}")
            if curve:
                ax.plot(*curve, "-o", ms=3, color=color(row, i), label=row)
        ax.set_title(f"{env}, {dataset}: {cfg.eval.monitor_episodes} episodes per point, mean over seeds")
        ax.set_xlabel("training step")
        ax.set_ylabel("normalised score")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    return save(fig, path)


def anchor_effect(cfg, dataset: str, run_dir: Path, path: Path) -> Path:
    """KL(π_BC ‖ π) and H(π) on training batches, per β: does the anchor hold the policy near π_BC?"""
    envs = cfg.data.envs
    fig, axes = plt.subplots(2, len(envs), figsize=(5.5 * len(envs), 6.4), squeeze=False)
    for col, env in enumerate(envs):
        arms = arms_of(cfg, env, dataset, "offline-ac")
        for i, beta in enumerate(cfg.agent.betas):
            for row, key in enumerate(("kl_to_bc", "entropy")):
                curve = mean_curve(run_dir, arms, f"train/{key}/beta{beta:g}")
                if curve:
                    axes[row][col].plot(*curve, color=f"C{i}", label=f"β = {beta:g}")
        curve = mean_curve(run_dir, arms, "train/entropy/anchor")
        if curve:
            axes[1][col].plot(*curve, color="black", ls=":", label="π_BC (while fitted)")
        axes[0][col].set_title(f"{env}, {dataset}: KL(π_BC ‖ π) on training batches")
        axes[1][col].set_title(f"{env}, {dataset}: policy entropy (nats)")
        for ax in axes[:, col]:
            ax.set_xlabel("training step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return save(fig, path)

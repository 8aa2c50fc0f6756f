"""Plots of the grid-cell experiment, the ones a biologist would look for: rate maps and spatial
autocorrelograms of the units of highest gridness, the gridness histogram against the shuffle
null, trajectories with the decoded positions, and learning curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engramlab.engine.plots import color, learning_curves, plt, save


def unit_page(maps: np.ndarray, s: dict[str, np.ndarray], path: Path, title: str, count: int = 16) -> Path:
    """Rate map (top) and autocorrelogram (bottom) of the ``count`` units of highest score60."""
    order = np.argsort(-np.nan_to_num(s["score60"], nan=-9))[:count]
    cols = 8
    rows = 2 * int(np.ceil(len(order) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.8 * rows), squeeze=False)
    for k, unit in enumerate(order):
        r, c = 2 * (k // cols), k % cols
        axes[r][c].imshow(maps[unit].T, origin="lower", cmap="jet")
        axes[r][c].set_title(f"unit {unit}: {s['score60'][unit]:.2f}", fontsize=7)
        axes[r + 1][c].imshow(s["sac"][unit].T, origin="lower", cmap="jet", vmin=-1, vmax=1)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title + " (rate map above its autocorrelogram; gridness at 60°)", fontsize=9)
    return save(fig, path)


def decoded_paths(acts: dict[str, np.ndarray], r, path: Path, title: str, sequences: int = 4) -> Path:
    """The first trajectories of the evaluation and the positions decoded from the place read-out."""
    fig, ax = plt.subplots(figsize=(4.6, 4.6))
    half, steps = r.env.box / 2, r.env.steps
    for i in range(sequences):
        part = slice(i * steps, (i + 1) * steps)
        ax.plot(*acts["position"][part].T, "-", color=color("true", i), lw=1.5, label="true" if i == 0 else None)
        ax.plot(*acts["decoded"][part].T, ".", color=color("true", i), ms=3, label="decoded" if i == 0 else None)
    ax.set_xlim(-half, half)
    ax.set_ylim(-half, half)
    ax.set_aspect("equal")
    ax.set_title(f"{title}: {sequences} held-out paths", fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, path)


def gridness_histogram(cfg, results: dict, path: Path) -> Path:
    """Per recipe: score60 of every unit of the trained seeds and of the untrained network, and the
    units' null 95th percentiles."""
    fig, axes = plt.subplots(1, len(cfg.recipes), figsize=(5.2 * len(cfg.recipes), 3.6), squeeze=False)
    bins = np.linspace(-1.0, 1.8, 57)
    for ax, name in zip(axes[0], cfg.recipes):
        trained = [r for arm, r in results.items() if arm.startswith(f"{name}-seed")]
        pooled = lambda key, runs: np.concatenate([np.asarray(r[key], dtype=float) for r in runs]) if runs else []
        ax.hist(pooled("score60", trained), bins, alpha=0.6, label=f"trained ({len(trained)} seeds)")
        untrained = [results[f"{name}-untrained"]] if f"{name}-untrained" in results else []
        if untrained:
            ax.hist(pooled("score60", untrained), bins, alpha=0.5, label="untrained")
        if trained and "null95" in trained[0]:
            ax.hist(pooled("null95", trained), bins, histtype="step", color="k", label="null 95th pct per unit")
        ax.axvline(0.37, color="r", ls="--", lw=1, label="0.37")
        ax.set_title(f"recipe {name.upper()}: gridness (score60) of every unit", fontsize=9)
        ax.set_xlabel("score60")
        ax.legend(fontsize=7)
    return save(fig, path)


def all_plots(cfg, results: dict, run_dir: Path, out_dir: Path) -> list[Path]:
    trained = [arm for arm in results if "-seed" in arm]
    curves = learning_curves(
        run_dir,
        trained,
        [
            ("decoded position error (cm)", [("eval/decode_error_cm", "-o", "")]),
            ("share of units with gridness > 0.37", [("eval/frac_above_0.37", "-o", "")]),
            ("loss", [("train/loss", "-", "")]),
        ],
        out_dir / "learning-curves.png",
    )
    return [gridness_histogram(cfg, results, out_dir / "gridness.png"), curves]

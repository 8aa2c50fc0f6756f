"""Plots of the parity experiment: accuracy and steps against k, halting distributions, learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engramlab.engine.plots import color, learning_curves, plt, save
from engramlab.engine.rundir import read_metrics


def arm_label(cfg, arm: str) -> str:
    if arm == "fixed":
        return f"fixed depth {cfg.model.halting.fixed_steps} ({cfg.model.step.upper()})"
    if arm == "repeat":
        return f"repeat x{cfg.model.repeat_steps} ({cfg.model.step.upper()})"
    return {"pondernet": "PonderNet", "act": "ACT"}.get(arm, arm)


def shade_test_range(ax, cfg) -> None:
    if cfg.task.test_k is not None:
        lo, hi = cfg.task.test_k
        ax.axvspan(lo - 0.5, hi + 0.5, color="0.9", zorder=0, label="extrapolation (not trained)")


def plot_all(cfg, results: dict[str, dict[str, Any]], run_dir: Path, out_dir: Path) -> list[Path]:
    arms = list(results)
    labels = {arm: arm_label(cfg, arm) for arm in arms}
    paths = [per_k(cfg, results, labels, "accuracy_per_k", "accuracy", out_dir / "accuracy_vs_k.png")]
    paths.append(per_k(cfg, results, labels, "steps_per_k", "mean steps taken", out_dir / "steps_vs_k.png"))
    halting_arms = [arm for arm in arms if arm in ("pondernet", "act")]
    if halting_arms:
        paths.append(halting_distribution(cfg, results, halting_arms, labels, out_dir / "halting_distribution.png"))
    ranges = ["interpolation"] + (["extrapolation"] if cfg.task.test_k is not None else [])
    styles = {"interpolation": ("-", ", train k"), "extrapolation": ("--", ", test k")}
    panels = [
        ("accuracy during training", [(f"eval/{r}_accuracy", *styles[r]) for r in ranges]),
        ("training loss", [("train/loss", "-", "")]),
        ("expected steps during training", [("train/expected_steps", "-", "")]),
    ]
    paths.append(learning_curves(run_dir, arms, panels, out_dir / "learning_curves.png", labels))
    paths.append(accuracy_vs_computation(cfg, run_dir, arms, labels, out_dir / "accuracy_vs_computation.png"))
    return paths


def training_computation(rows: list[dict[str, Any]], batch_size: int) -> list[tuple[int, float]]:
    """(update, step applications so far) at every logged update: each window of updates adds
    its length × batch × the mean steps a sample took (``train/computed_steps``; a fixed-depth
    arm logs only ``train/expected_steps``, its depth). The count of the paper's Fig. 1c."""
    total, last, points = 0.0, 0, []
    for r in rows:
        steps = r.get("train/computed_steps", r.get("train/expected_steps"))
        if steps is None or "train/loss" not in r:
            continue
        total += (r["step"] - last) * batch_size * steps
        last = r["step"]
        points.append((last, total))
    return points


def accuracy_vs_computation(cfg, run_dir: Path, arms: list[str], labels, path: Path) -> Path:
    """Accuracy during training against the total computation spent so far (step applications
    summed over all training samples), as in the paper's Fig. 1c: it shows what an arm's
    accuracy cost, whatever its number of updates."""
    ranges = ["interpolation"] + (["extrapolation"] if cfg.task.test_k is not None else [])
    fig, axes = plt.subplots(1, len(ranges), figsize=(6 * len(ranges), 4), squeeze=False)
    for ax, name in zip(axes[0], ranges):
        for i, arm in enumerate(arms):
            rows = read_metrics(Path(run_dir) / arm)
            done = dict(training_computation(rows, cfg.train.batch_size))
            key = f"eval/{name}_accuracy"
            points = [(done[r["step"]], r[key]) for r in rows if key in r and done.get(r["step"], 0) > 0]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, "-", color=color(arm, i), label=labels[arm], lw=1.2)
        ax.axhline(0.5, color="0.5", ls=":", lw=1, label="chance")
        ax.set_xscale("log")
        ax.set_xlabel("total computation in training (step applications, summed over samples)")
        ax.set_ylabel(
            f"accuracy, {name} (k in {list(getattr(cfg.task, 'train_k' if name == 'interpolation' else 'test_k'))})"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"parity, n = {cfg.task.n}: accuracy against computation spent (PonderNet Fig. 1c)")
    return save(fig, path)


def per_k(cfg, results, labels, key: str, ylabel: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    shade_test_range(ax, cfg)
    for i, (arm, r) in enumerate(results.items()):
        ax.plot(r["ks"], r[key], "-", marker=".", ms=3, color=color(arm, i), label=labels[arm])
    if key == "accuracy_per_k":
        ax.axhline(0.5, color="0.5", ls=":", lw=1, label="chance")
        ax.set_ylim(0, 1.02)
    ax.set_xlabel("k (number of non-zero elements)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"parity, n = {cfg.task.n}, trained on k in {list(cfg.task.train_k)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def halting_distribution(cfg, results, arms: list[str], labels, path: Path) -> Path:
    """P(steps taken = s | k) as a heat map per arm; each column is one k."""
    fig, axes = plt.subplots(1, len(arms), figsize=(6 * len(arms), 4), squeeze=False)
    for ax, arm in zip(axes[0], arms):
        r = results[arm]
        counts = np.asarray(r["step_counts_per_k"], dtype=float)
        dist = (counts / counts.sum(1, keepdims=True).clip(min=1)).T  # (steps, k)
        ks = r["ks"]
        image = ax.imshow(
            dist,
            origin="lower",
            aspect="auto",
            cmap="viridis",
            vmin=0,
            vmax=1,
            extent=(ks[0] - 0.5, ks[-1] + 0.5, 0.5, dist.shape[0] + 0.5),
        )
        ax.plot(ks, r["steps_per_k"], color="white", lw=1, label="mean")
        if cfg.task.test_k is not None:
            ax.axvline(cfg.task.test_k[0] - 0.5, color="red", lw=1, ls="--", label="start of extrapolation")
        ax.set_xlabel("k (number of non-zero elements)")
        ax.set_ylabel("halting step")
        ax.set_title(f"{labels[arm]}: distribution of steps taken ({r['halting']})")
        ax.legend(fontsize=7, loc="upper left")
        fig.colorbar(image, ax=ax, fraction=0.046)
    return save(fig, path)

"""CoBERL's plots: learning curves, areas under them per seed, the pre-registered differences with
their intervals, and the throughput of each agent."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engramlab.engine.plots import plt, save

AGENT_COLORS = {"memoryless": "tab:gray", "lstm": "tab:blue", "gtrxl": "tab:green", "coberl-noaux": "tab:orange",
                "coberl": "tab:red"}  # fmt: skip


def all_plots(runs: dict[str, dict[str, list[dict]]], frames: int, speeds: dict[str, list[float]], variant: str,
              out_dir: Path) -> list[Path]:  # fmt: skip
    """``runs[game][agent]``: the evaluation results of each seed; ``frames``: a run's training
    frames; ``speeds[agent]``: each arm's frames per second; ``variant`` follows a game's name in
    the titles."""
    paths = []
    for game, by_agent in runs.items():
        paths.append(curves(game + variant, by_agent, frames, out_dir / f"learning-curves-{game}.png"))
        paths.append(areas(game + variant, by_agent, out_dir / f"auc-{game}.png"))
    paths.append(throughput(speeds, out_dir / "throughput.png"))
    return paths


def curves(game: str, runs: dict[str, list[dict]], frames: int, path: Path) -> Path:
    """Mean return per stretch of training, mean over seeds, the band spanning the seeds."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for agent, rs in runs.items():
        ys = np.array([r["curve"] for r in rs])
        xs = (np.arange(ys.shape[1]) + 0.5) * frames / ys.shape[1] / 1e3
        ax.plot(xs, ys.mean(0), color=AGENT_COLORS.get(agent), label=f"{agent} ({len(rs)} seeds)", lw=1.6)
        ax.fill_between(xs, ys.min(0), ys.max(0), color=AGENT_COLORS.get(agent), alpha=0.15)
    ax.set_xlabel("training frames (thousands)")
    ax.set_ylabel("episode return")
    ax.set_title(f"MinAtar {game}: learning curves (band: min-max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def areas(game: str, runs: dict[str, list[dict]], path: Path) -> Path:
    """Area under the curve and final return per agent: the mean (bar) and each seed (dots)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, title in ((axes[0], "auc", "area under the curve (mean return over training)"),
                           (axes[1], "final_return", "final policy's return")):  # fmt: skip
        for i, (agent, rs) in enumerate(runs.items()):
            values = [r[key] for r in rs]
            ax.bar(i, np.mean(values), color=AGENT_COLORS.get(agent), alpha=0.6)
            ax.plot([i] * len(values), values, "k.", ms=6)
        ax.set_xticks(range(len(runs)), list(runs), rotation=20, fontsize=8)
        ax.set_title(f"{game}: {title}", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    return save(fig, path)


def throughput(speeds: dict[str, list[float]], path: Path) -> Path:
    """Environment frames per second of training, per agent: the mean (bar) and each arm (dots)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (agent, values) in enumerate(speeds.items()):
        ax.bar(i, np.mean(values), color=AGENT_COLORS.get(agent), alpha=0.6)
        ax.plot([i] * len(values), values, "k.", ms=6)
    ax.set_xticks(range(len(speeds)), list(speeds), rotation=20, fontsize=8)
    ax.set_ylabel("frames per second (one core)")
    ax.set_title("training throughput per agent")
    ax.grid(alpha=0.3, axis="y")
    return save(fig, path)

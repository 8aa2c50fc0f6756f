"""Plots of ``engram run bacteria``: distance to food over evolution, tumbling by stimulus,
signalling per restart, the evolved reward maps; and the frames of a colony following the food."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from engramlab.engine.plots import color, plt, save, save_gif
from engramlab.evolve.bacteria import DIRECTIONS, FEELINGS, World, uniform_distance, unit_vectors


def all_plots(cfg, results: dict[str, dict[str, Any]], stages: dict[str, int], out_dir: Path) -> list[Path]:
    """Every figure of a run; ``stages`` gives each arm's stage (1, 2 or 3)."""
    paths = [distance_over_time(cfg, results, out_dir / "distance_to_food.png")]
    paths.append(tumbling(results, out_dir / "tumbling.png"))
    signalling_arms = {arm: r for arm, r in results.items() if stages[arm] == 2}
    if signalling_arms:
        paths.append(signalling(cfg, signalling_arms, out_dir / "signalling.png"))
    if "stage3" in results and any(results["stage3"]["viable"]):
        paths.append(reward_maps(results["stage3"], out_dir / "reward_maps.png"))
    return paths


def distance_over_time(cfg, results, path: Path) -> Path:
    """Mean distance of living cells to the food through evolution: median and range over restarts."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (arm, r) in enumerate(results.items()):
        steps = np.asarray(r["history"]["step"]) * cfg.world.dt / 60
        distance = np.asarray(r["history"]["distance"], dtype=float)  # (records, worlds)
        if np.isnan(distance).all():
            continue
        ax.plot(steps, np.nanmedian(distance, 1), color=color(arm, i), label=arm, lw=1.5)
        ax.fill_between(steps, np.nanmin(distance, 1), np.nanmax(distance, 1), color=color(arm, i), alpha=0.15)
    ax.axhline(uniform_distance(cfg.world.size), color="grey", ls=":", lw=0.8, label="uniformly spread cells")
    ax.set_xlabel("evolution time (minutes of simulated time)")
    ax.set_ylabel("distance to food (µm)")
    ax.set_title("distance of living cells to the food (median and range over restarts)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)


def tumbling(results, path: Path) -> Path:
    """Measured chance of tumbling given what a cell senses, out of food and in food."""
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), sharey=True)
    width = 0.8 / len(results)
    for ax, where, label in zip(axes, (0, 1), ("out of food", "in food")):
        for i, (arm, r) in enumerate(results.items()):
            p = np.asarray(r["tumble_in_food"], dtype=float)[where]
            ax.bar(np.arange(3) + (i - (len(results) - 1) / 2) * width, p, width, color=color(arm, i), label=arm)
        ax.set_xticks(range(3), [f"concentration\n{d}" for d in DIRECTIONS], fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("P(tumble) per step")
    axes[1].legend(fontsize=7)
    return save(fig, path)


def signalling(cfg, results, path: Path) -> Path:
    """Share of cells signalling in each restart through evolution (stage-2 arms: hearing colonies
    against deaf ones)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (arm, r) in enumerate(results.items()):
        steps = np.asarray(r["history"]["step"]) * cfg.world.dt / 60
        share = np.asarray(r["history"]["signalling"], dtype=float)
        ax.plot(steps, share, color=color(arm, i), lw=0.7, alpha=0.6)
        ax.plot([], [], color=color(arm, i), label=f"{arm} (one line per restart)")
    ax.axhline(cfg.signalling_share, color="grey", ls=":", lw=0.8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("evolution time (minutes of simulated time)")
    ax.set_ylabel("share of cells signalling")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)


def reward_maps(r, path: Path) -> Path:
    """Each viable restart's mean reward map (one dot each), raw and as a unit vector."""
    viable = np.asarray(r["viable"])
    maps = np.asarray(r["reward_maps"], dtype=float)[viable]
    direction = unit_vectors(maps)
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(maps))
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    for ax, values, title in zip(axes, (maps, direction), ("reward weights", "reward map direction (unit length)")):
        for j in range(len(FEELINGS)):
            ax.scatter(j + jitter, values[:, j], s=14, color="tab:purple", alpha=0.7)
            ax.errorbar(j + 0.3, values[:, j].mean(), values[:, j].std(), fmt="o", color="black", capsize=3)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(FEELINGS)), FEELINGS)
        ax.set_title(f"{title}, {len(maps)} viable runs", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    return save(fig, path)


def colony_gif(world: World, arm: str, frames: int, every: int, path: Path) -> Path:
    """``frames`` pictures of the first restart of ``world``, ``every`` steps apart (the world is stepped)."""
    cfg, pictures = world.cfg, []
    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    with torch.no_grad():
        for _ in range(frames):
            for _step in range(every):
                world.step()
            alive = world.alive[0]
            cells, food = world.position[0][alive].numpy(), world.food_centre()[0].numpy()
            ax.clear()
            ax.add_patch(plt.Circle(food, 2 * cfg.food_width, color="tab:green", alpha=0.15))
            ax.add_patch(plt.Circle(food, cfg.food_width, color="tab:green", alpha=0.25))
            tumbling = (world.last_action[0][alive] == 1).numpy()
            ax.scatter(cells[:, 0], cells[:, 1], s=6, c=np.where(tumbling, "tab:red", "tab:blue"))
            ax.set_xlim(0, cfg.size)
            ax.set_ylim(0, cfg.size)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{arm}: {int(alive.sum())} cells, t = {world.time.item() * cfg.dt:.0f} s", fontsize=8)
            fig.canvas.draw()
            pictures.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return save_gif(pictures, path, milliseconds=80)

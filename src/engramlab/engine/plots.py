"""Plot helpers shared by experiments (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engramlab.engine.rundir import read_metrics


class Pyplot:
    """``matplotlib.pyplot``, imported (headless, Agg) at its first use: importing an experiment to
    read its config (``--show-config``, a config error, ``engram list``) need not wait for it."""

    def __getattr__(self, name: str) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot

        return getattr(matplotlib.pyplot, name)


plt = Pyplot()

# arms with a fixed colour in every plot; a family passes its own (the memory kinds declare theirs)
ARM_COLORS = {
    "pondernet": "tab:blue",
    "act": "tab:orange",
    "fixed": "tab:green",
    "repeat": "tab:red",
    "memn2n": "tab:red",  # the arm of memn2n-babi
    "generalist": "black",
}


def color(arm: str, index: int, colors: Mapping[str, str] | None = None):
    """An arm's fixed colour (in ``colors``, else in ``ARM_COLORS``), else the index-th of
    matplotlib's cycle; past 10 arms the light shades of tab20, so a plot of up to 20 arms repeats
    no colour."""
    fixed = {**ARM_COLORS, **(colors or {})}
    if arm in fixed:
        return fixed[arm]
    return f"C{index}" if index < 10 else plt.get_cmap("tab20")((2 * index + 1) % 20)


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_gif(frames: list, path: Path, milliseconds: int, shrink: int = 1) -> Path:
    """An animated GIF of ``frames`` (H, W, 3 uint8 arrays), ``milliseconds`` each, looping; with
    ``shrink``, each frame resized to 1 / shrink of its sides."""
    from PIL import Image  # pillow comes with matplotlib

    images = [Image.fromarray(frame) for frame in frames]
    if shrink > 1:
        images = [image.resize((image.width // shrink, image.height // shrink)) for image in images]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=milliseconds, loop=0)
    return path


def learning_curves(
    run_dir: Path,
    arms: list[str],
    panels: list[tuple[str, list[tuple[str, str, str]]]],
    path: Path,
    labels=None,
    colors: Mapping[str, str] | None = None,
) -> Path:
    """One panel per ``(title, [(metric key, line style, legend suffix), ...])``; one colour per arm
    (see :func:`color`).

    Reads each arm's ``metrics.jsonl``; metrics missing from an arm are skipped.
    """
    labels = labels or {}
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for i, arm in enumerate(arms):
            rows = read_metrics(Path(run_dir) / arm)
            for key, style, suffix in keys:
                points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, style, color=color(arm, i, colors), label=labels.get(arm, arm) + suffix, lw=1.4)
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    return save(fig, path)

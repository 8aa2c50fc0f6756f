"""Per-task test error and ponder steps of pondering bAbI models, mean ± std over seeds.

    python scripts/babi_tasks.py RUN_DIR [RUN_DIR ...] --out docs/results/memo-babi/tasks

Takes finished ``memo-babi`` or ``pondernet-babi`` runs (one per seed, same configuration) and
writes ``tasks.json`` (per arm and task: error % and mean steps, mean and std over the runs) and
``tasks.png``: error bars per task above, steps per task below, one colour per arm. Tasks 1, 2
and 3 need one, two and three supporting facts: a model that thinks longer for harder questions
takes more steps on 2 and 3 than on 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from engramlab.engine.plots import color, plt, save


def collect(run_dirs: list[Path]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """arm -> task -> {"error": [per run], "steps": [per run]}."""
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run_dir in run_dirs:
        for arm_summary in sorted(run_dir.glob("*/summary.json")):
            test = json.loads(arm_summary.read_text())["results"]["test"]
            by_task = table.setdefault(arm_summary.parent.name, {})
            for task, error in test["error_per_task"].items():
                row = by_task.setdefault(task, {"error": [], "steps": []})
                row["error"].append(error)
                row["steps"].append(test["steps_per_task"][task])
    return table


def summarise(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def plot(table: dict[str, dict[str, dict[str, list[float]]]], path: Path) -> Path:
    fig, (errors, steps) = plt.subplots(2, 1, figsize=(10, 5.6), sharex=True)
    tasks = sorted({int(t) for by_task in table.values() for t in by_task})
    x = np.arange(len(tasks))
    width = 0.8 / len(table)
    for i, (arm, by_task) in enumerate(table.items()):
        offset = (i - (len(table) - 1) / 2) * width
        for ax, key in ((errors, "error"), (steps, "steps")):
            stats = [summarise(by_task[str(t)][key]) for t in tasks]
            ax.bar(
                x + offset,
                [s["mean"] for s in stats],
                width,
                yerr=[s["std"] for s in stats],
                color=color(arm, i),
                label=arm,
                capsize=2,
            )
    errors.axhline(5.0, color="k", lw=0.8, ls="--", label="failed above 5 %")
    errors.set_ylabel("test error %")
    steps.set_ylabel("mean ponder steps")
    steps.set_xticks(x, [str(t) for t in tasks])
    steps.set_xlabel("bAbI task (1, 2, 3: one, two, three supporting facts)")
    runs = len(next(iter(next(iter(table.values())).values()))["error"])
    errors.set_title(f"per task, mean ± std over {runs} runs")
    errors.legend(fontsize=7)
    for ax in (errors, steps):
        ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="finished memo-babi or pondernet-babi runs")
    parser.add_argument("--out", type=Path, required=True, help="folder for tasks.json and tasks.png")
    args = parser.parse_args()
    table = collect(args.run_dirs)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        arm: {task: {key: summarise(values) for key, values in row.items()} for task, row in by_task.items()}
        for arm, by_task in table.items()
    }
    (args.out / "tasks.json").write_text(json.dumps(summary, indent=2))
    print(plot(table, args.out / "tasks.png"))


if __name__ == "__main__":
    main()

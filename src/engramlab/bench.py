"""``engram bench memory``: every kind of memory on every task it applies to, several seeds, one leaderboard.

Each memory experiment (copy, associative recall, MQAR, passkey) is run once per seed with its
preset into ``OUT/<experiment>/<preset>-seed<S>/``, all of them as one sweep (:mod:`engramlab.sweep`,
any of its backends): a run that already finished is kept, one that was interrupted is resumed, so
the command can be stopped and started again (a run directory made with another config, e.g.
before a preset changed, is refused rather than mixed in). Then the
leaderboard is written: for every experiment and memory kind, the headline metric in every
evaluation setting (mean ± std over seeds), parameters, training time and speed, with links to
the run summaries. With ``--publish DIR`` the runs are copied there (without checkpoints) and
the leaderboard links to the copies.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from engramlab.api import load_config
from engramlab.engine import plots
from engramlab.engine.rundir import SUMMARY_NAME, read_json, write_json
from engramlab.experiments import get_experiment
from engramlab.experiments.memory.plots import METRIC_WORDS, grouped_bars
from engramlab.memory import MEMORY_KINDS
from engramlab.publish import publish_run
from engramlab.sweep import LocalBackend, plan, run_sweep

SUITES = {"memory": ["memory-copy", "memory-recall", "memory-mqar", "memory-passkey"]}


def run_suite(
    suite: str,
    *,
    preset: str,
    seeds: list[int],
    out: Path,
    publish: Path | None,
    experiments: list[str] | None = None,
    overrides: list[str] = (),
    backend=None,
    workers: int = 1,
    threads: int = 1,
    retries: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) every experiment x seed as one sweep (:mod:`engramlab.sweep`), then, when every
    run has finished, write the leaderboard. ``backend`` is a function that makes the sweep's backend
    (default: ``workers`` local processes). Returns the sweep's status, with the leaderboard's path
    under ``"leaderboard"``."""
    names = experiments or SUITES[suite]
    jobs = [
        job
        for name in names
        for job in plan(name, preset=preset, seeds=seeds, out=out, overrides=overrides, threads=threads)
    ]
    backend = backend() if backend is not None else LocalBackend(workers)  # after every check: may start a cluster
    status = run_sweep(jobs, backend, out, retries=retries, progress=progress)
    if status["finished"] < len(jobs):
        print("leaderboard: not written, some runs did not finish (run the command again)")
        return status
    runs: dict[str, list[Path]] = {}
    for job in jobs:
        run_dir = Path(out) / job.experiment / Path(job.run_dir).name  # as the caller named it (the links)
        if publish is not None:
            run_dir = publish_run(run_dir, Path(publish) / job.experiment / run_dir.name)
        runs.setdefault(job.experiment, []).append(run_dir)
    where = Path(publish) if publish is not None else Path(out)
    return {**status, "leaderboard": write_leaderboard(runs, where)}


def collect(name: str, run_dirs: list[Path]) -> list[dict[str, Any]]:
    """One row per arm: each setting's headline metric over seeds, parameters, time and speed."""
    exp = get_experiment(name)
    summaries = [read_json(d / SUMMARY_NAME) for d in run_dirs]
    arm_names = list(summaries[0]["arms"])
    settings = list(load_config(run_dirs[0])[1].eval.settings)
    metric = exp.headline_metric
    rows = []
    for arm in arm_names:
        arm_info = [s["arms"][arm] for s in summaries]
        row = {
            "experiment": name,
            "memory": arm,
            "metric": metric,
            "parameters": summaries[0]["metrics"][f"{arm}/parameters"],
            "seeds": [s["seed"] for s in summaries],
            "settings": {},
            "train_wall_time_s": [a["train_wall_time_s"] for a in arm_info],
            "steps_per_s": [a["steps"] / a["train_wall_time_s"] for a in arm_info],
            "runs": [str(d) for d in run_dirs],
        }
        for setting in settings:
            key = f"{arm}/{setting}_{metric}"
            if key in summaries[0]["metrics"]:
                row["settings"][setting] = [s["metrics"][key] for s in summaries]
        rows.append(row)
    return rows


def spread_words(seeds: list[int]) -> str:
    """How the cells were made: one seed's value, or mean ± std over several (matches :func:`mean_std`)."""
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"mean ± std over seeds {', '.join(map(str, seeds))}"


def mean_std(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def overview(rows: list[dict[str, Any]]) -> list[str]:
    """Every experiment and setting against every memory kind, in one table (the README shows it).

    Lines between ``<!-- overview -->`` markers, so a test can check the README quotes it as written.
    """
    kinds = [k for k in MEMORY_KINDS if any(r["memory"] == k for r in rows)]  # the registry's order
    kinds += [k for k in dict.fromkeys(r["memory"] for r in rows) if k not in kinds]
    spread = spread_words(sorted({seed for r in rows for seed in r["seeds"]}))
    lines = ["<!-- overview -->", f"Headline metric, {spread}; —: not run on that task.", ""]
    lines += ["| experiment (metric) | setting | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 2) + "|"]
    for name in dict.fromkeys(r["experiment"] for r in rows):
        by_kind = {r["memory"]: r for r in rows if r["experiment"] == name}
        metric = next(iter(by_kind.values()))["metric"]
        for setting in dict.fromkeys(s for r in by_kind.values() for s in r["settings"]):
            cells = [
                mean_std(by_kind[k]["settings"][setting], 2 if metric == "bit_errors" else 3)
                if k in by_kind and setting in by_kind[k]["settings"]
                else "—"
                for k in kinds
            ]
            lines.append(f"| {name} ({METRIC_WORDS[metric]}) | {setting} | " + " | ".join(cells) + " |")
    return lines + ["<!-- overview -->"]


def plot_leaderboard(rows: list[dict[str, Any]], path: Path) -> Path:
    """One panel per experiment: the headline metric per setting and memory kind, mean with std bars."""
    names = list(dict.fromkeys(r["experiment"] for r in rows))
    fig, axes = plots.plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        exp_rows = [r for r in rows if r["experiment"] == name]
        settings = list(dict.fromkeys(s for r in exp_rows for s in r["settings"]))
        series = {
            r["memory"]: (
                [statistics.mean(r["settings"][s]) for s in settings],
                [statistics.stdev(r["settings"][s]) if len(r["settings"][s]) > 1 else 0.0 for s in settings],
            )
            for r in exp_rows
        }
        grouped_bars(ax, settings, series, METRIC_WORDS[exp_rows[0]["metric"]], name)
    return plots.save(fig, path)


def write_leaderboard(runs: dict[str, list[Path]], where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    rows = [row for name, dirs in runs.items() for row in collect(name, dirs)]
    lines = ["# Memory leaderboard", "", *overview(rows), "", "![leaderboard](leaderboard.png)", ""]
    for name in runs:
        exp_rows = [r for r in rows if r["experiment"] == name]
        settings = list(dict.fromkeys(s for r in exp_rows for s in r["settings"]))
        metric = exp_rows[0]["metric"]
        lines += [f"## {name} ({METRIC_WORDS[metric]}; {spread_words(exp_rows[0]['seeds'])})", ""]
        lines.append("| memory | " + " | ".join(settings) + " | parameters | train time (s) | steps/s | runs |")
        lines.append("|---" * (len(settings) + 5) + "|")
        for r in exp_rows:
            cells = [
                mean_std(r["settings"][s], 2 if metric == "bit_errors" else 4) if s in r["settings"] else "—"
                for s in settings
            ]
            links = ", ".join(
                f"[{i}]({Path(d).relative_to(where) if Path(d).is_relative_to(where) else d}/summary.json)"
                for i, d in zip(r["seeds"], r["runs"])
            )
            lines.append(
                f"| {r['memory']} | " + " | ".join(cells) + f" | {r['parameters']:,} | "
                f"{mean_std(r['train_wall_time_s'], 0)} | {mean_std(r['steps_per_s'], 1)} | {links} |"
            )
        lines.append("")
    path = where / "leaderboard.md"
    path.write_text("\n".join(lines))
    write_json(where / "leaderboard.json", rows)
    plot_leaderboard(rows, where / "leaderboard.png")
    print(f"leaderboard: {path}")
    return path

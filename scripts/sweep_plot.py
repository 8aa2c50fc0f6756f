"""Headline metrics of several runs against one config value (a sweep), as a plot and a JSON table.

    python scripts/sweep_plot.py docs/results/pondernet-parity/paper-n16-lambda-*-seed0 \
        docs/results/pondernet-parity/paper-n16-seed0 --key model.halting.lambda_p \
        --metrics pondernet/interpolation_accuracy pondernet/extrapolation_accuracy \
        --steps pondernet/interpolation_steps pondernet/extrapolation_steps \
        --out docs/results/pondernet-parity/paper-n16-lambda-sweep

Each run is read from its ``config.yaml`` (the value of ``--key``) and ``summary.json`` (the
metrics). ``--metrics`` go on the left panel (accuracies), ``--steps`` on the right; the points
are joined in order of the value, with a log x axis when every value is positive. Writes
``sweep.json`` and ``sweep.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engramlab.api import load_config
from engramlab.engine.plots import plt, save
from engramlab.engine.rundir import now_iso, read_json
from engramlab.errors import EngramError


def config_value(cfg, key: str):
    value = cfg
    for part in key.split("."):
        if not hasattr(value, part):
            raise EngramError(f"config key {key!r}: no field {part!r}")
        value = getattr(value, part)
    return value


def sweep_rows(runs: list[Path], key: str, names: list[str]) -> list[dict]:
    """One row per run, sorted by the swept value: the value, the run and the named metrics."""
    rows = []
    for run in runs:
        cfg = load_config(run)[1]  # one line for a folder that is not a run
        if not (run / "summary.json").exists():
            raise EngramError(f"{run}: not a finished run (no summary.json)")
        metrics = read_json(run / "summary.json")["metrics"]
        missing = [name for name in names if name not in metrics]
        if missing:
            raise EngramError(f"{run}/summary.json: no metric {', '.join(missing)}")
        rows.append({"value": config_value(cfg, key), "run": str(run), **{n: metrics[n] for n in names}})
    return sorted(rows, key=lambda row: row["value"])


def plot(rows: list[dict], key: str, panels: list[tuple[str, list[str]]], path: Path) -> None:
    panels = [(title, names) for title, names in panels if names]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    values = [row["value"] for row in rows]
    for ax, (title, names) in zip(axes[0], panels):
        for name in names:
            ax.plot(values, [row[name] for row in rows], marker="o", label=name)
        if all(v > 0 for v in values):
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run directories (or published copies)")
    parser.add_argument("--key", required=True, help="the swept config key, e.g. model.halting.lambda_p")
    parser.add_argument("--metrics", nargs="+", required=True, help="summary metrics for the left panel")
    parser.add_argument("--steps", nargs="*", default=[], help="summary metrics for the right panel")
    parser.add_argument("--title", default="accuracy", help="title of the left panel (default: accuracy)")
    parser.add_argument("--out", type=Path, required=True, help="folder for sweep.json and sweep.png")
    args = parser.parse_args(argv)
    try:
        rows = sweep_rows(args.runs, args.key, [*args.metrics, *args.steps])
    except EngramError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "command": "python scripts/sweep_plot.py " + " ".join(argv or sys.argv[1:]),
        "key": args.key,
        "rows": rows,
        "date": now_iso(),
    }
    (args.out / "sweep.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(rows, args.key, [(args.title, args.metrics), ("mean steps", args.steps)], args.out / "sweep.png")
    for row in rows:
        print(f"{args.key} = {row['value']}: " + ", ".join(f"{n} {row[n]:.4f}" for n in [*args.metrics, *args.steps]))
    print(f"wrote {args.out / 'sweep.json'} and {args.out / 'sweep.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

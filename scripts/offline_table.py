"""Markdown tables of an `engram run offline-rl` run: normalised score per row (mean ± std over the
run's seeds) for every environment and dataset, the data's own mean, and the bars' differences.

    python scripts/offline_table.py docs/results/offline-rl/quick-seeds012 [--greedy]

``--greedy`` tabulates the greedy scores recorded beside the sampled ones (the arms' summaries).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a finished offline-rl run directory")
    p.add_argument("--greedy", action="store_true", help="tabulate the greedy scores instead of the sampled ones")
    args = p.parse_args()
    summary_path = args.run / "summary.json"
    if not summary_path.is_file():
        print(f"offline_table: {args.run}: no summary.json (not a finished run)", file=sys.stderr)
        return 2
    summary = json.loads(summary_path.read_text())
    if summary.get("experiment") != "offline-rl":
        print(f"offline_table: {args.run}: a run of {summary.get('experiment')!r}, not offline-rl", file=sys.stderr)
        return 2
    table, data = scores(args.run, "normalised_greedy" if args.greedy else "normalised")
    metrics = summary["metrics"]
    envs = list(dict.fromkeys(env for env, _, _ in table))
    datasets = list(dict.fromkeys(name for _, name, _ in table))
    order = ["bc", "filtered-bc", "return-bc", "ac-beta", "ac-inference", "iql", "ac-anchor"]
    rows = sorted(dict.fromkeys(row for _, _, row in table), key=lambda r: (order.index(r.rstrip("0123456789.")), r))
    for env in envs:
        print(f"\n**{env}** ({'greedy' if args.greedy else 'sampled'} actions)\n")
        print("| row | " + " | ".join(datasets) + " |")
        print("|---|" + "---|" * len(datasets))
        for row in rows:
            cells = [cell(table.get((env, name, row))) for name in datasets]
            print(f"| {row} | " + " | ".join(cells) + " |")
        print("| *the data's mean episode* | " + " | ".join(f"{data[env, n]:.1f}" for n in datasets) + " |")
    labels = ("filtered_minus_bc", "offline_ac_minus_bc", "offline_ac_minus_filtered", "iql_minus_bc")
    differences = {label: [metrics.get(f"{name}/{label}") for name in datasets] for label in labels}
    differences = {label: values for label, values in differences.items() if any(v is not None for v in values)}
    if differences:  # a run of one method has none
        print("\n| difference (mean over environments) | " + " | ".join(datasets) + " |")
        print("|---|" + "---|" * len(datasets))
        for label, values in differences.items():
            print(f"| {label} | " + " | ".join("—" if v is None else f"{v:+.1f}" for v in values) + " |")
    return 0


def scores(run: Path, key: str):
    """(env, dataset, row) -> one score per seed, and (env, dataset) -> the data's mean normalised
    episode, from the arms' summaries."""
    from engramlab.experiments.offline.offline_rl import parse_arm, score_table

    results = {p.parent.name: json.loads(p.read_text())["results"] for p in sorted(run.glob("*/summary.json"))}
    data = {parse_arm(arm)[:2]: r["data_normalised"] for arm, r in results.items()}
    return score_table(results, key), data


def cell(values: list[float] | None) -> str:
    if not values:
        return "—"
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


if __name__ == "__main__":
    sys.exit(main())

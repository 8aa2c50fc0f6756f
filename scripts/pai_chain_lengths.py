"""Hops and accuracy of MEMO against the length of the chain, from finished memo-pai runs.

    python scripts/pai_chain_lengths.py RUN_DIR [RUN_DIR ...] --out docs/results/memo-pai/chains

Each run was trained on one chain length (``task.length``); runs of one length are seeds, and
are averaged. The script writes ``chains.json`` (per arm and length: accuracy and mean hops of
the direct queries and of the inference query, first to last item; mean, std and number of
runs) and ``chains.png`` (error bars: std over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from engramlab.api import load_config
from engramlab.engine.plots import color, plt, save

KEYS = ("direct_accuracy", "indirect_accuracy", "direct_hops", "indirect_hops")


def collect(run_dirs: list[Path]) -> dict[str, dict[int, dict[str, dict[str, float]]]]:
    """arm -> chain length -> metric -> {"mean", "std", "runs"} over the runs (seeds) of that length."""
    values: dict[str, dict[int, dict[str, list[float]]]] = {}
    for run_dir in run_dirs:
        _, cfg = load_config(run_dir)
        metrics = json.loads((run_dir / "summary.json").read_text())["metrics"]
        for arm in cfg.methods:
            if not arm.startswith("memo"):
                continue  # the UT baseline of the length-3 runs: chains are about MEMO's hops
            row = values.setdefault(arm, {}).setdefault(cfg.task.length, {key: [] for key in KEYS})
            for key in KEYS:
                row[key].append(metrics[f"{arm}/{key}"])
    return {
        arm: {
            length: {
                key: {
                    "mean": statistics.mean(v),
                    "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                    "runs": len(v),
                }
                for key, v in row.items()
            }
            for length, row in sorted(by_length.items())
        }
        for arm, by_length in values.items()
    }


def plot(table: dict[str, dict[int, dict[str, dict[str, float]]]], path: Path) -> Path:
    fig, (hops, accuracy) = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, (arm, by_length) in enumerate(table.items()):
        lengths = sorted(by_length)
        for kind, style in (("direct", "-o"), ("indirect", "--s")):
            label = f"{arm} {'inference' if kind == 'indirect' else kind}"
            for ax, key in ((hops, f"{kind}_hops"), (accuracy, f"{kind}_accuracy")):
                ax.errorbar(
                    lengths,
                    [by_length[n][key]["mean"] for n in lengths],
                    yerr=[by_length[n][key]["std"] for n in lengths],
                    fmt=style,
                    color=color(arm, i),
                    label=label,
                    capsize=3,
                )
    runs = sorted({row[KEYS[0]]["runs"] for by_length in table.values() for row in by_length.values()})
    hops.set_title(f"mean hops (mean ± std over {'/'.join(map(str, runs))} seeds)")
    accuracy.set_title("test accuracy (chance 0.5)")
    for ax in (hops, accuracy):
        ax.set_xlabel("chain length (items per sequence)")
        ax.set_xticks(sorted({n for by_length in table.values() for n in by_length}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", type=Path, nargs="+", help="finished memo-pai run directories")
    parser.add_argument("--out", type=Path, required=True, help="folder for chains.json and chains.png")
    args = parser.parse_args()
    table = collect(args.run_dirs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chains.json").write_text(json.dumps(table, indent=2) + "\n")
    print(f"wrote {plot(table, args.out / 'chains.png')} and {args.out / 'chains.json'}")


if __name__ == "__main__":
    main()

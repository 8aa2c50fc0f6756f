"""Hops and accuracy of MEMO against the length of the chain, from finished memo-pai runs.

    python scripts/pai_chain_lengths.py RUN_DIR [RUN_DIR ...] --out docs/results/memo-pai/chains

Each run was trained on one chain length (``task.length``); the script writes ``chains.json``
(per arm and length: accuracy and mean hops of the direct queries and of the inference query,
first to last item) and ``chains.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engramlab.api import load_config
from engramlab.plots import color, plt, save


def collect(run_dirs: list[Path]) -> dict[str, dict[int, dict[str, float]]]:
    table: dict[str, dict[int, dict[str, float]]] = {}
    for run_dir in run_dirs:
        _, cfg = load_config(run_dir)
        metrics = json.loads((run_dir / "summary.json").read_text())["metrics"]
        for arm in cfg.methods:
            table.setdefault(arm, {})[cfg.task.length] = {
                key: metrics[f"{arm}/{key}"]
                for key in ("direct_accuracy", "indirect_accuracy", "direct_hops", "indirect_hops")
            }
    return table


def plot(table: dict[str, dict[int, dict[str, float]]], path: Path) -> Path:
    fig, (hops, accuracy) = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, (arm, by_length) in enumerate(table.items()):
        lengths = sorted(by_length)
        for kind, style in (("direct", "-o"), ("indirect", "--s")):
            label = f"{arm} {'inference' if kind == 'indirect' else kind}"
            hops.plot(lengths, [by_length[n][f"{kind}_hops"] for n in lengths], style, color=color(arm, i), label=label)
            accuracy.plot(
                lengths, [by_length[n][f"{kind}_accuracy"] for n in lengths], style, color=color(arm, i), label=label
            )
    hops.set_title("mean hops")
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

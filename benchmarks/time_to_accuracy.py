"""Training time until an arm first reaches an accuracy, read from runs' metrics.jsonl.

    python benchmarks/time_to_accuracy.py docs/results/pondernet-parity/seed* \
        --arm pondernet --metric eval/interpolation_accuracy --threshold 0.99 \
        --out docs/results/pondernet-parity/time_to_99.json

The time is the training loop's own clock (``time/elapsed_s``) at the first evaluation that
reaches the threshold; evaluations run every ``train.eval_every`` steps, so the step is an
upper bound with that resolution.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from engramlab.engine.rundir import read_json, read_metrics


def first_reach(run_dir: Path, arm: str, metric: str, threshold: float) -> dict:
    rows = read_metrics(run_dir / arm)
    elapsed = {r["step"]: r["time/elapsed_s"] for r in rows if "time/elapsed_s" in r}
    for row in rows:
        if row.get(metric) is not None and row[metric] >= threshold:
            return {"run": str(run_dir), "step": row["step"], "seconds": elapsed.get(row["step"]), metric: row[metric]}
    return {"run": str(run_dir), "step": None, "seconds": None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run directories (or published copies)")
    parser.add_argument("--arm", default="pondernet")
    parser.add_argument("--metric", default="eval/interpolation_accuracy")
    parser.add_argument("--threshold", type=float, default=0.99)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = [first_reach(run, args.arm, args.metric, args.threshold) for run in args.runs]
    for row in rows:
        print(f"{row['run']}: step {row['step']}, {row['seconds']} s")
    reached = [r["seconds"] for r in rows if r["seconds"] is not None]
    run_summary = read_json(args.runs[0] / "summary.json")  # the machine the runs trained on
    summary = {
        "command": "python benchmarks/time_to_accuracy.py " + " ".join(argv or sys.argv[1:]),
        "arm": args.arm,
        "metric": args.metric,
        "threshold": args.threshold,
        "runs": rows,
        "reached": f"{len(reached)}/{len(rows)}",
        "seconds_mean": statistics.mean(reached) if reached else None,
        "seconds_std": statistics.stdev(reached) if len(reached) > 1 else None,
        **{key: run_summary.get(key) for key in ("machine", "workers", "threads_per_worker")},
    }
    print(f"reached {summary['reached']}; mean {summary['seconds_mean']} s")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A compact learning curve of every arm of a run, finished or still training.

    python scripts/curve_summary.py RUN_DIR --every 10000 --out docs/results/<experiment>/<name>/curves.json

For each arm and every ``--every`` updates: the mean of each training metric over the logged
windows since the previous mark, and the evaluation metrics logged at the mark. It reads only
``metrics.jsonl``, so it can record a run that is still going (long runs are published when
they finish; this is the record of how far one had got).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from engramlab.api import load_config
from engramlab.engine.rundir import now_iso, read_metrics
from engramlab.errors import EngramError


def summarize(rows: list[dict], every: int) -> list[dict]:
    """One row per mark: ``step``, the window means of ``train/…`` metrics, the ``eval/…`` metrics at the mark."""
    marks: dict[int, dict[str, list[float]]] = {}
    evaluations: dict[int, dict[str, float]] = {}
    for r in rows:
        mark = -(-r["step"] // every) * every  # the mark at or after this step
        for key, value in r.items():
            if key.startswith("train/"):
                marks.setdefault(mark, {}).setdefault(key, []).append(value)
            elif key.startswith("eval/") and r["step"] == mark:
                evaluations.setdefault(mark, {})[key] = value
    last = max((r["step"] for r in rows), default=0)
    out = []
    for mark in sorted(marks):
        if mark > last:  # an unfinished window at the end
            continue
        row = {"step": mark, **{k: statistics.mean(v) for k, v in marks[mark].items()}}
        out.append(row | evaluations.get(mark, {}))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--every", type=int, default=10_000, help="updates between two rows (default 10000)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    try:
        exp, cfg = load_config(args.run_dir)
    except (EngramError, OSError) as error:  # not a run directory: one line
        print(f"curve_summary: {error}", file=sys.stderr)
        return 2
    curves = {}
    for arm in exp.arms(cfg):
        if (args.run_dir / arm / "metrics.jsonl").exists():
            curves[arm] = summarize(read_metrics(args.run_dir / arm), args.every)
    report = {
        "run": str(args.run_dir),
        "experiment": exp.name,
        "run_info": json.loads((args.run_dir / "run.json").read_text()),
        "train_steps": cfg.train.steps,
        "every": args.every,
        "finished_arms": [arm for arm in exp.arms(cfg) if (args.run_dir / arm / "summary.json").exists()],
        "written": now_iso(),
        "curves": curves,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}: " + ", ".join(f"{arm} to {c[-1]['step'] if c else 0}" for arm, c in curves.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

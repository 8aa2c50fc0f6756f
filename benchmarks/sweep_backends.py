"""What a sweep backend costs: one grid x seeds sweep of tiny runs on each backend, timed and compared.

    python benchmarks/sweep_backends.py --out docs/results/sweep/backends.json

Each backend runs the same ``engram sweep`` (memory-mqar, 4 updates of an LSTM per run, a grid of two
learning rates x seeds 0, 1, 2, one thread per run) into a fresh directory; then the command is
run once more, to time a sweep with nothing left to do. The runs are so short that the time is
almost all each backend's own cost: a child process per run (Python and PyTorch start), plus
submitit's job files or Dask's scheduler. The metrics of every run must be equal across backends.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = [
    "methods=[lstm]",
    "model.d_model=16",
    "task.vocab=16",
    "task.length=16",
    "task.kv_pairs=2",
    "task.mix=null",
    "eval.settings.pairs32.kv_pairs=3",
    "eval.settings.pairs64.kv_pairs=4",
    "train.steps=4",
    "train.warmup_steps=0",
    "eval.samples=10",
    "eval.monitor_samples=10",
]
BACKENDS = {
    "local": ["--backend", "local", "--workers", "2", "--threads", "1"],
    "slurm (submitit's local executor)": ["--backend", "slurm", "--slurm-local", "--threads", "1"],
    "dask (LocalCluster, 2 workers)": ["--backend", "dask", "--workers", "2", "--threads", "1"],
}


def sweep(out: Path, options: list[str]) -> float:
    """Seconds one ``engram sweep`` command takes, start to exit."""
    sets = [arg for text in TINY for arg in ("--set", text)]
    grid = ["--grid", "train.lr=0.001,0.003", "--seeds", "0", "1", "2"]
    command = [sys.executable, "-m", "engramlab.cli", "sweep", "memory-mqar", *grid, *sets, "--out", str(out)]
    start = time.perf_counter()
    subprocess.run([*command, "--no-progress", *options], check=True, capture_output=True)
    return time.perf_counter() - start


def metrics(out: Path) -> dict[str, dict]:
    return {
        str(p.parent.relative_to(out)): json.loads(p.read_text())["metrics"]
        for p in sorted(out.glob("*/*/summary.json"))
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON file of the results (a PNG is written beside it)")
    args = parser.parse_args(argv)
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, options) in enumerate(BACKENDS.items()):
            out = Path(tmp) / str(i)
            first, again = sweep(out, options), sweep(out, options)
            found = metrics(out)
            reference = reference or found
            runs = len(found)
            rows.append(
                {
                    "backend": name,
                    "options": options,
                    "runs": runs,
                    "sweep_s": first,
                    "per_run_s": first / runs,
                    "rerun_nothing_left_s": again,
                    "same_metrics_as_local": found == reference,
                }
            )
            print(f"{name:36s} {runs} runs in {first:6.1f} s; again, nothing to do: {again:5.1f} s", flush=True)
    result = {
        "command": "python benchmarks/sweep_backends.py --out " + str(args.out),
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()},
        "python": platform.python_version(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out.with_suffix(".png"))
    return 0 if all(r["same_metrics_as_local"] for r in rows) else 1


def plot(rows: list[dict], path: Path) -> None:
    from engramlab.engine import plots

    fig, ax = plots.plt.subplots(figsize=(7.5, 3.0))
    names = [r["backend"] for r in rows]
    ax.barh(names, [r["sweep_s"] for r in rows], color="#4c72b0", label="6 runs")
    ax.barh(names, [r["rerun_nothing_left_s"] for r in rows], color="#dd8452", label="again, nothing left to do")
    ax.invert_yaxis()
    ax.set_xlabel("seconds, whole sweep (2 cores)")
    ax.set_title("engram sweep: 2 x 3 tiny runs, per backend")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, fontsize=8, frameon=False)
    plots.save(fig, path)


if __name__ == "__main__":
    sys.exit(main())

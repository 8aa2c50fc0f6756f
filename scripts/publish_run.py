"""Copy what documents a finished run into docs/results/ (no checkpoints, no TensorBoard events).

    python scripts/publish_run.py runs/pondernet-parity/<timestamp> docs/results/pondernet-parity/seed0

Copies config.yaml, run.json, summary.json, plots/ and, for every arm, summary.json and
metrics.jsonl (the learning curves), so that every published number can be traced to its run.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def publish(run_dir: Path, dest: Path) -> None:
    if not (run_dir / "summary.json").exists():
        sys.exit(f"{run_dir}: not a finished run (no summary.json)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "run.json", "summary.json"):
        shutil.copy2(run_dir / name, dest / name)
    shutil.copytree(run_dir / "plots", dest / "plots", dirs_exist_ok=True)
    for arm_summary in run_dir.glob("*/summary.json"):
        arm = arm_summary.parent.name
        if arm in ("plots", "evals"):
            continue
        (dest / arm).mkdir(exist_ok=True)
        for name in ("summary.json", "metrics.jsonl"):
            shutil.copy2(run_dir / arm / name, dest / arm / name)
    print(f"published {run_dir} -> {dest}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    publish(Path(sys.argv[1]), Path(sys.argv[2]))

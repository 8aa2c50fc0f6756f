"""Copy what documents a finished run into ``docs/results/`` (no checkpoints, no TensorBoard events).

Copies ``config.yaml``, ``run.json``, ``summary.json``, ``plots/``, for every arm its
``summary.json`` and ``metrics.jsonl`` (the learning curve), and every later ``engram eval`` of
the run (``evals/<timestamp>/``: its config, summary and plots), so that every published number
can be traced to its run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from engramlab.engine.rundir import CONFIG_NAME, METRICS_NAME, SUMMARY_NAME
from engramlab.errors import RunDirError


def publish_run(run_dir: Path, dest: Path) -> Path:
    run_dir, dest = Path(run_dir), Path(dest)
    if not (run_dir / SUMMARY_NAME).exists():
        raise RunDirError(f"{run_dir}: not a finished run (no {SUMMARY_NAME})")
    dest.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_NAME, "run.json", SUMMARY_NAME):
        shutil.copy2(run_dir / name, dest / name)
    if (run_dir / "plots").exists():
        shutil.copytree(run_dir / "plots", dest / "plots", dirs_exist_ok=True)
    for evaluation in sorted(run_dir.glob(f"evals/*/{SUMMARY_NAME}")):
        source, target = evaluation.parent, dest / "evals" / evaluation.parent.name
        target.mkdir(parents=True, exist_ok=True)
        for name in (CONFIG_NAME, SUMMARY_NAME):
            shutil.copy2(source / name, target / name)
        if (source / "plots").exists():
            shutil.copytree(source / "plots", target / "plots", dirs_exist_ok=True)
    for arm_summary in run_dir.glob(f"*/{SUMMARY_NAME}"):
        arm = arm_summary.parent.name
        if arm in ("plots", "evals"):
            continue
        (dest / arm).mkdir(exist_ok=True)
        for name in (SUMMARY_NAME, METRICS_NAME):
            if (run_dir / arm / name).exists():
                shutil.copy2(run_dir / arm / name, dest / arm / name)
    return dest

"""How long the generalist's first run spends generating its expert data.

    python benchmarks/generalist_data.py --out docs/results/generalist/data-generation.json

``engram run generalist`` generates every task's episodes once, in the main process before any
training (``Generalist.prepare``), and caches them in ``data.cache_dir``; later runs read the
cache. This times that step task by task into a fresh temporary cache with the preset's episode
counts (the training and the held-out tasks), so that a first run's wall time is this plus a
cached run's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from engramlab.config import resolve
from engramlab.engine.rundir import library_versions, machine_info, now_iso
from engramlab.experiments.generalist.generalist import Generalist, task_data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick", help="the generalist preset whose data is generated")
    parser.add_argument("--out", type=Path, help="write the timings here as JSON (default: print only)")
    args = parser.parse_args(argv)

    seconds = {}
    with tempfile.TemporaryDirectory() as cache:
        cfg = resolve(Generalist.Config, Generalist.presets[args.preset], overrides=[f"data.cache_dir={cache}"])
        for name in [*cfg.data.tasks, *cfg.data.held_out]:  # the order of Generalist.prepare
            start = time.perf_counter()
            data = task_data(cfg, name)
            seconds[name] = time.perf_counter() - start
            print(f"{name:28s} {seconds[name]:7.1f} s  ({data.generated} expert episodes, {len(data.episodes)} kept)")
    total = sum(seconds.values())
    print(f"{'total':28s} {total:7.1f} s  ({total / 60:.1f} min)")
    if args.out:
        report = {
            "preset": args.preset,
            "seconds_per_task": seconds,
            "total_s": total,
            "finished": now_iso(),
            "versions": library_versions(),
            "machine": machine_info(),
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

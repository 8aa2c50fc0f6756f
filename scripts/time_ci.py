"""Time .ci/run's steps on a fresh clone, on an idle machine: the README's test times.

    python scripts/time_ci.py --out docs/results/test-suite/timing.json

Clones HEAD into a temporary folder, then times: the install into a new venv, the default tier
(`python -m pytest`) and the slow tier (`python -m pytest -m slow`), and writes them as JSON with
the commit, the machine and pytest's summary lines. The previous file's contents go under `earlier`.
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

from engramlab.engine.rundir import cpu_model

STEPS = {
    "install_s": 'python3 -m venv .venv && . .venv/bin/activate && pip install -q -c constraints/cpu.txt -e ".[test]"',
    "default_tier_s": ". .venv/bin/activate && python -m pytest -p no:warnings",
    "slow_tier_s": ". .venv/bin/activate && python -m pytest -p no:warnings -m slow",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True).strip()
    out = {"what": "wall time of .ci/run's steps on a fresh clone", "commit": commit,
           "machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
        for key, command in STEPS.items():
            start = time.perf_counter()
            done = subprocess.run(["bash", "-c", command], cwd=clone, capture_output=True, text=True)
            out[key] = round(time.perf_counter() - start)
            lines = done.stdout.strip().splitlines()
            out[key.replace("_s", "_summary")] = lines[-1] if lines else ""
            if done.returncode:
                print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
                return done.returncode
    if args.out.exists():
        out["earlier"] = json.loads(args.out.read_text())
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "earlier"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

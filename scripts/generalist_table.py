"""Per-task tables of the generalist's quick runs: mean ± std over seeds of the normalised scores.

    python scripts/generalist_table.py docs/results/generalist/quick-seed*
    python scripts/generalist_table.py docs/results/generalist-finetune/kin-seed*

Generalist runs: the generalist with and without a demonstration prompt, the specialists and the
1-NN retrieval agent (normalised: 0 = random policy, 100 = expert, in %), then the headline
shares, and each seed's count of tasks ≥ 50 %, margin over the specialists and caption accuracy.
Fine-tuning runs (``engram run generalist-finetune``): per held-out task and number of
demonstrations, fine-tuned from the generalist and from scratch, prompted and not, then the
share of (task, demonstrations) pairs where the generalist's start wins, per seed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import yaml

COLUMNS = [
    ("generalist, prompted", "generalist/{}"),
    ("generalist, no prompt", "generalist/{}_no_prompt"),
    ("specialist", "specialist/{}"),
    ("1-NN retrieval", "nearest-neighbour/{}"),
]


def cell(values: list[float], scale: float = 100.0) -> str:
    values = np.asarray(values) * scale
    return f"{values.mean():.1f} ± {values.std():.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def transfer_table(summaries: list[dict]) -> str:
    columns = [
        (f"from {'the generalist' if start == 'pretrained' else 'scratch'}, {label}", f"{{}}-{start}/normalised{key}")
        for start in ("pretrained", "scratch")
        for label, key in (("prompted", "_prompted"), ("no prompt", ""))
    ]
    lines = ["| held-out task | demos | " + " | ".join(c for c, _ in columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for arm in (a.removesuffix("-pretrained") for a in summaries[0]["arms"] if a.endswith("-pretrained")):
        task, demos = arm.rsplit("-", 1)
        row = [cell([s["metrics"][pattern.format(arm)] for s in summaries]) for _, pattern in columns]
        lines.append(f"| {task} | {demos.removesuffix('demos')} | " + " | ".join(row) + " |")
    wins = ", ".join(f"{s['metrics']['pretrained_beats_scratch']:.2f}" for s in summaries)
    seeds = ", ".join(str(s["seed"]) for s in summaries)
    return (
        f"Seeds {seeds}; mean ± std over seeds, in % of the expert.\n\n"
        + "\n".join(lines)
        + f"\n\nShare of (task, demos) pairs where the generalist's start wins (prompted), by seed: {wins}"
    )


def main(runs: list[Path]) -> str:
    summaries = [json.loads((run / "summary.json").read_text()) for run in runs]
    if summaries[0]["experiment"] == "generalist-finetune":
        return transfer_table(summaries)
    tasks = yaml.safe_load((runs[0] / "config.yaml").read_text())["data"]["tasks"]
    lines = ["| task | " + " | ".join(c for c, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for task in tasks:
        row = [cell([s["metrics"][pattern.format(task)] for s in summaries]) for _, pattern in COLUMNS]
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    means = ["generalist/mean_normalised", "generalist/mean_normalised_no_prompt", "specialist/mean_normalised"]
    means.append("nearest-neighbour/mean_normalised")
    lines.append("| **mean** | " + " | ".join(cell([s["metrics"][m] for s in summaries]) for m in means) + " |")
    for share in ("50", "80"):
        keys = [f"generalist/tasks_above_{share}", f"generalist/tasks_above_{share}_no_prompt"]
        values = [cell([s["metrics"][k] for s in summaries]) for k in keys]
        lines.append(f"| tasks ≥ {share} % (% of {len(tasks)}) | " + " | ".join(values) + " | | |")
    seeds = ", ".join(str(s["seed"]) for s in summaries)
    return (
        f"Seeds {seeds}; mean ± std over seeds, in % of the expert.\n\n" + "\n".join(lines) + by_seed(summaries, tasks)
    )


def by_seed(summaries: list[dict], tasks: list[str]) -> str:
    """The headline numbers of each seed, so a mean never hides a seed below a bar (a number a
    run did not measure, e.g. with ``specialists=false``, is left out)."""
    parts = [
        ("training tasks ≥ 50 % (prompted)", "generalist/tasks_above_50", len(tasks), 0, f" of {len(tasks)}"),
        ("generalist minus specialists", "generalist/points_below_specialists", -1, 1, " points"),
        ("caption accuracy", "generalist/caption_accuracy", 100, 1, " %"),
    ]
    said = [
        f"{label}: " + ", ".join(f"{s['metrics'][key] * scale:.{digits}f}" for s in summaries) + unit
        for label, key, scale, digits, unit in parts
        if all(key in s["metrics"] for s in summaries)
    ]
    return "\n\nBy seed: " + "; ".join(said)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(main([Path(p) for p in sys.argv[1:]]))

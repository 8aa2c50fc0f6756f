"""Tables of the evolution experiments' quick runs, over seeds.

    python scripts/evolution_table.py docs/results/evolved-rule/quick-seed*
    python scripts/evolution_table.py docs/results/bacteria/*seed*

Evolved-rule runs: online accuracy on the held-out digits after n examples per class, per arm
(mean ± std over seeds), the evolved rule's margin over SGD after 20 by seed, and the same on
MNIST and on Omniglot (margin after 10) when a run holds an ``engram eval --set
data.mnist_dir=... --set data.omniglot=...`` of it.

Bacteria runs (a seed's arms may come from several runs, e.g. a later run of one control arm):
per arm and seed, the viable restarts, the mean distance of living cells to the
food, the signalling share and the chance of tumbling by sensed concentration change (E. coli
tumbles less while the concentration rises); the stage-1 and stage-2 bars by seed; then the stage-3 reward
maps of every viable restart of every seed pooled (per feeling: mean, spread, share positive,
and the same for the maps scaled to length 1).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import yaml

from engramlab.evolve.bacteria import DIRECTIONS, FEELINGS, unit_vectors
from engramlab.experiments.evolution.bacteria import ARMS as BACTERIA_ARMS
from engramlab.experiments.evolution.bacteria import WALKERS
from engramlab.experiments.evolution.evolved_rule import Arm

ARMS = Arm.__args__


def cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    values = np.asarray(values) * scale
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def evaluation(directory: Path, summary: dict) -> dict:
    """What a table needs from a run or one of its ``engram eval`` directories: the metrics, each
    arm's per-test-set results (their spread over episodes) and the number of test episodes."""
    results = summary.get("results") or {
        arm: json.loads((directory / arm / "summary.json").read_text())["results"]
        for arm in ARMS
        if (directory / arm / "summary.json").exists()
    }
    episodes = yaml.safe_load((directory / "config.yaml").read_text())["eval"]["episodes"]
    return {"metrics": summary["metrics"], "results": results, "episodes": episodes}


def margin(e: dict, test_set: str, n: int) -> str:
    """Evolved rule minus SGD after n, ± two standard errors over the test episodes (the two arms'
    spreads added as if independent: they share the episodes, so this errs wide)."""
    x = e["metrics"][f"evolved-rule/{test_set}/after_{n}"] - e["metrics"][f"sgd/{test_set}/after_{n}"]
    spread = [e["results"][arm][test_set]["after_std_over_episodes"][str(n)] for arm in ("evolved-rule", "sgd")]
    return f"{100 * x:+.1f} ± {200 * math.hypot(*spread) / math.sqrt(e['episodes']):.1f}"


def accuracy_table(evaluations: list[dict], test_set: str, after: list[int], margin_at: int = 20) -> str:
    metrics = [e["metrics"] for e in evaluations]
    lines = ["| arm | " + " | ".join(f"after {n}" for n in after) + " |", "|---" * (len(after) + 1) + "|"]
    for arm in ARMS:
        row = [cell([m[f"{arm}/{test_set}/after_{n}"] for m in metrics]) for n in after]
        lines.append(f"| {arm} | " + " | ".join(row) + " |")
    margins = ", ".join(margin(e, test_set, margin_at) for e in evaluations)
    return "\n".join(lines) + (
        f"\n\nEvolved rule minus SGD after {margin_at} examples, by seed (points, ± two standard errors "
        f"over the test episodes): {margins}"
    )


def eval_of(run: Path, test_set: str) -> dict | None:
    """The run's last ``engram eval`` that measured ``test_set``."""
    for path in sorted(run.glob("evals/*/summary.json"), reverse=True):
        summary = json.loads(path.read_text())
        if f"evolved-rule/{test_set}/after_1" in summary["metrics"]:
            return evaluation(path.parent, summary)
    return None


def evolved_rule(runs: list[Path], summaries: list[dict]) -> str:
    minutes = ", ".join(f"{s['wall_time_s'] / 60:.1f}" for s in summaries)
    out = [
        f"Seeds {seeds(summaries)}; held-out digits 5-9, 5-way, online accuracy in % (chance 20 %); "
        f"mean ± std over seeds. Wall time by seed (min): {minutes}.\n",
        accuracy_table([evaluation(r, s) for r, s in zip(runs, summaries)], "held_out", [0, 1, 5, 10, 20, 50]),
    ]
    extra = {
        "mnist_held_out": ("MNIST test images 5-9 (8 x 8)", [0, 1, 5, 10, 20, 50], 20),
        "omniglot": ("Omniglot characters, 5-way (8 x 8; 20 drawings each)", [0, 1, 5, 10], 10),
    }
    for test_set, (title, after, margin_at) in extra.items():
        found = [eval_of(run, test_set) for run in runs]
        if all(found):
            out += [f"\n{title}, the same rules:\n", accuracy_table(found, test_set, after, margin_at)]
    return "\n".join(out)


def bacteria(runs: list[Path], summaries: list[dict]) -> str:
    by_seed: dict[int, dict] = {}  # a seed's arms may come from several runs (e.g. --set "methods=[blind-walk]")
    for s in summaries:
        by_seed.setdefault(s["seed"], {}).update(s["metrics"])
    metrics = list(by_seed.values())
    arms = [a for a in BACTERIA_ARMS if all(f"{a}/viable" in m for m in metrics)]
    tumbling = [f"P(tumble) {d}" for d in DIRECTIONS]
    header = ["arm", "viable restarts", "distance to food", "signalling share", *tumbling]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for arm in arms:
        viable = cell([m[f"{arm}/viable"] for m in metrics], digits=0)
        distance = cell([m.get(f"{arm}/distance_to_food", np.nan) for m in metrics], scale=1.0)
        signalling = cell([m[f"{arm}/signalling"] for m in metrics]) if f"{arm}/signalling" in metrics[0] else ""
        tumble = [cell([m[f"{arm}/tumble_{d}"] for m in metrics], scale=1.0, digits=2) for d in DIRECTIONS]
        lines.append(f"| {arm} | {viable} % | {distance} | {signalling} | " + " | ".join(tumble) + " |")
    uniform = summaries[0]["metrics"]["uniform_distance"]
    out = [
        f"Seeds {', '.join(map(str, by_seed))}; mean ± std over seeds of each run's mean over its viable restarts; "
        f"distance in µm (uniformly spread cells: {uniform:.1f}).\n",
        "\n".join(lines),
        "\nBy seed:",
    ]
    nan = float("nan")
    for seed, m in by_seed.items():
        minutes = " + ".join(f"{s['wall_time_s'] / 60:.1f}" for s in summaries if s["seed"] == seed)
        ratio = {w: m.get("stage1/distance_to_food", nan) / m.get(f"{w}/distance_to_food", nan) for w in WALKERS}
        out.append(
            f"- seed {seed} ({minutes} min): stage-1 distance / random walk's {ratio['random-walk']:.2f}, "
            f"/ blind walk's {ratio['blind-walk']:.2f}; restarts signalling: hearing "
            f"{m.get('stage2/restarts_signalling', nan):.2f}, deaf {m.get('stage2-deaf/restarts_signalling', nan):.2f}"
        )
    hearing, deaf = pooled(runs, "stage2", "signalling"), pooled(runs, "stage2-deaf", "signalling")
    if len(hearing) and len(deaf):
        above = (hearing > deaf.max()).mean()
        out += [
            f"\nStage-2 signalling share of each viable restart, all seeds pooled: hearing {len(hearing)} restarts, "
            f"mean {hearing.mean():.3f}, range {hearing.min():.3f}-{hearing.max():.3f}; deaf {len(deaf)} restarts, "
            f"mean {deaf.mean():.3f}, range {deaf.min():.3f}-{deaf.max():.3f}; "
            f"share of hearing restarts above every deaf one: {above:.2f}"
        ]
    maps = pooled(runs, "stage3", "reward_maps")
    if len(maps):
        direction = unit_vectors(maps)
        out += [
            f"\nStage-3 reward maps of all {len(maps)} viable restarts (each the mean map of its living cells):\n",
            "| feeling | mean | std | share > 0 | unit-vector mean | unit-vector std |",
            "|---|---|---|---|---|---|",
        ]
        for i, feeling in enumerate(FEELINGS):
            raw, unit = maps[:, i], direction[:, i]
            out.append(
                f"| {feeling} | {raw.mean():+.2f} | {raw.std():.2f} | {(raw > 0).mean():.2f} "
                f"| {unit.mean():+.2f} | {unit.std():.2f} |"
            )
    return "\n".join(out)


def pooled(runs: list[Path], arm: str, key: str) -> np.ndarray:
    """``results[key]`` of the viable restarts of ``arm`` in every run, concatenated."""
    values = []
    for run in runs:
        path = run / arm / "summary.json"
        if path.exists():
            results = json.loads(path.read_text())["results"]
            values.append(np.asarray(results[key], dtype=float)[np.asarray(results["viable"])])
    return np.concatenate(values) if values else np.zeros(0)


def seeds(summaries: list[dict]) -> str:
    return ", ".join(str(s["seed"]) for s in summaries)


def main(runs: list[Path]) -> str:
    summaries = [json.loads((run / "summary.json").read_text()) for run in runs]
    kind = {s["experiment"] for s in summaries}
    if len(kind) != 1:
        sys.exit(f"runs of different experiments: {sorted(kind)}")
    return {"evolved-rule": evolved_rule, "bacteria": bacteria}[kind.pop()](runs, summaries)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(main([Path(p) for p in sys.argv[1:]]))

"""``engram report``: our numbers (mean ± std over seeds) next to the papers', as Markdown.

Runs are grouped by experiment and resolved config (:func:`config_fingerprint`). In a group, each
seed is one sample: when a seed ran more than once, only its most recently finished run (``finished``
in summary.json) enters the mean ± std, and the section names the others. The deviations from the
paper are the preset's, with the values of the group's resolved config (``--set`` overrides included).
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from engramlab.api import load_config
from engramlab.config import to_plain
from engramlab.engine.experiment import Experiment
from engramlab.engine.rundir import CONFIG_NAME, SUMMARY_NAME, read_json
from engramlab.errors import RunDirError
from engramlab.experiments import get_experiment


def find_runs(paths: list[Path]) -> list[Path]:
    """Finished run directories (run.json and summary.json) at or below ``paths``."""
    runs = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise RunDirError(f"{path}: no such directory")
        candidates = [path] if (path / "run.json").exists() else sorted(p.parent for p in path.rglob("run.json"))
        runs += [run for run in candidates if (run / SUMMARY_NAME).exists()]
    return sorted(set(runs))


def mean_std(values: list[float], digits: int = 4) -> str:
    """Four decimals by default, so that e.g. 0.9998 is not shown as 1.000."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def config_fingerprint(run: Path) -> str:
    """A short hash of the run's resolved config without its seed: runs differ only by seed iff equal.

    Grouping by preset name alone would mix runs whose config differs (``--set`` overrides, or a
    preset changed between runs). The config is read as ``engram eval`` reads it (migrated to
    today's key names, validated), so a run written before a key was renamed pools with a new run
    of the same config. Only the keys the file names count (``exclude_unset``): a run written
    before a key existed ran code whose value for it is unknown, and stays apart.
    """
    if not (run / CONFIG_NAME).exists():
        return ""
    _, cfg = load_config(run)
    data = to_plain(cfg.model_dump(exclude_unset=True))
    data.pop("seed", None)
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


def build_report(paths: list[Path]) -> str:
    runs = find_runs(paths)
    if not runs:
        raise RunDirError(f"no finished runs under {', '.join(str(p) for p in paths)}")
    # runs are pooled when their configs are equal, whichever preset name resolved to it (a
    # `quick` preset may equal `paper`)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        summary = read_json(run / SUMMARY_NAME)
        summary["_dir"] = run
        groups[(summary["experiment"], config_fingerprint(run))].append(summary)
    labels = {key: sorted({s.get("preset") or "custom" for s in summaries}) for key, summaries in groups.items()}
    presets = [(name, preset) for (name, _), names in labels.items() for preset in names]
    sections = []
    for (name, fingerprint), summaries in sorted(groups.items(), key=lambda item: (item[0][0], labels[item[0]])):
        names = labels[(name, fingerprint)]
        shared = any(presets.count((name, preset)) > 1 for preset in names)
        sections.append(report_group(name, names, summaries, fingerprint if shared else ""))
    return "\n\n".join(sections) + "\n"


def finished_at(summary: dict[str, Any]) -> float:
    """When the run finished (seconds since the epoch); -inf when its summary does not say."""
    return datetime.fromisoformat(summary["finished"]).timestamp() if summary.get("finished") else float("-inf")


def one_run_per_seed(summaries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """Runs of one seed and config are not independent samples: per seed, keep the run that finished last
    (on a tie, the later directory). Returns the kept runs, in their order, and the runs of every seed
    that ran more than once, in the order they finished (the kept one last)."""
    by_seed: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for s in sorted(summaries, key=lambda s: (finished_at(s), str(s["_dir"]))):
        by_seed[s["seed"]].append(s)
    kept = {id(runs[-1]) for runs in by_seed.values()}
    duplicates = {seed: runs for seed, runs in sorted(by_seed.items()) if len(runs) > 1}
    return [s for s in summaries if id(s) in kept], duplicates


def deviations(exp: Experiment, summary: dict[str, Any], preset: str) -> list[str]:
    """The preset's deviations with the values of the run's resolved config; a run without config.yaml:
    the lines its summary.json holds."""
    run = summary["_dir"]
    if not (run / CONFIG_NAME).exists():
        return summary.get("deviations", [])
    _, cfg = load_config(run)
    return exp.deviations_of(cfg, preset)


def inner_seeds(summary: dict[str, Any]) -> list[int]:
    """The seeds one run trains inside itself (a config with a ``seeds`` list, as offline-rl's), or []."""
    run = summary["_dir"]
    if not (run / CONFIG_NAME).exists():
        return []
    _, cfg = load_config(run)
    return list(getattr(cfg, "seeds", []) or [])


def report_group(name: str, presets: list[str], summaries: list[dict[str, Any]], fingerprint: str = "") -> str:
    """One section; ``fingerprint`` names the config when runs of one preset had different configs."""
    exp = get_experiment(name)
    pooled, duplicates = one_run_per_seed(summaries)
    seeds = sorted(s["seed"] for s in pooled)
    inside = inner_seeds(pooled[0])
    changes = [o for o in pooled[0].get("overrides", []) if not o.startswith("seed=")]
    variant = "".join(f" --set {o}" for o in changes) + (f", config {fingerprint}" if fingerprint else "")
    left_out = len(summaries) - len(pooled)
    values: dict[str, list[float]] = defaultdict(list)
    for s in pooled:
        for key, value in s["metrics"].items():
            if isinstance(value, (int, float)):
                values[key].append(float(value))
    repeats = [
        f"- seed {seed}: {len(runs)} runs, {', '.join(str(s['_dir']) for s in runs)}; used: {runs[-1]['_dir']} "
        "(finished last)"
        for seed, runs in duplicates.items()
    ]
    deviation_lines = deviations(exp, pooled[0], presets[0])
    lines = [
        f"### {name} — preset {' = '.join(f'`{p}`' for p in presets)}{variant} "
        f"({len(pooled)} run{'s' * (len(pooled) > 1)}, seeds {', '.join(map(str, seeds))}"
        + (f"; each run trains seeds {', '.join(map(str, inside))} and reports their mean" if inside else "")
        + (f"; {left_out} duplicate{'s' * (left_out > 1)} not pooled" if left_out else "")
        + ")",
        "",
        *(["Duplicate seeds, not pooled: one run per seed enters the mean ± std.", *repeats, ""] if repeats else []),
        *(["Deviations from the paper:", *[f"- {d}" for d in deviation_lines], ""] if deviation_lines else []),
        "| metric | ours (mean ± std over seeds) | paper | source |",
        "|---|---|---|---|",
    ]
    for paper in exp.paper:
        ours = mean_std(values[paper.key]) if paper.key in values else "not measured"
        theirs = paper.text if paper.value is None else f"{paper.value:g}" + (f" ({paper.text})" if paper.text else "")
        lines.append(f"| {paper.label} | {ours} | {theirs} | {paper.source} |")
    others = [key for key in values if key not in {p.key for p in exp.paper}]
    if others:
        lines += ["", "| other metric | ours |", "|---|---|"]
        lines += [f"| `{key}` | {mean_std(values[key])} |" for key in others]
    wall = [s["wall_time_s"] / 60 for s in pooled]
    machine = pooled[0].get("machine", {})
    lines += [
        "",
        f"Wall time per run: {mean_std(wall, digits=1)} min on {machine.get('processor', '?')} "
        f"({machine.get('cpu_count', '?')} cores, {pooled[0].get('workers', '?')} worker(s)). "
        f"Runs: {', '.join(str(s['_dir']) for s in pooled)}",
    ]
    return "\n".join(lines)

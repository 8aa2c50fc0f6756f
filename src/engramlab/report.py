"""``engram report``: our numbers (mean ± std over seeds) next to the papers', as Markdown."""

from __future__ import annotations

import hashlib
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from engramlab.api import load_config
from engramlab.config import to_plain
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


def report_group(name: str, presets: list[str], summaries: list[dict[str, Any]], fingerprint: str = "") -> str:
    """One section; ``fingerprint`` names the config when runs of one preset had different configs."""
    exp = get_experiment(name)
    preset = presets[0]
    seeds = sorted(s["seed"] for s in summaries)
    changes = [o for o in summaries[0].get("overrides", []) if not o.startswith("seed=")]
    variant = "".join(f" --set {o}" for o in changes) + (f", config {fingerprint}" if fingerprint else "")
    values: dict[str, list[float]] = defaultdict(list)
    for s in summaries:
        for key, value in s["metrics"].items():
            if isinstance(value, (int, float)):
                values[key].append(float(value))
    lines = [
        f"### {name} — preset {' = '.join(f'`{p}`' for p in presets)}{variant} "
        f"({len(summaries)} run{'s' * (len(summaries) > 1)}, "
        f"seeds {', '.join(map(str, seeds))})",
        "",
        *(
            ["Deviations from the paper:", *[f"- {d}" for d in exp.deviations.get(preset, [])], ""]
            if exp.deviations.get(preset)
            else []
        ),
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
    wall = [s["wall_time_s"] / 60 for s in summaries]
    machine = summaries[0].get("machine", {})
    lines += [
        "",
        f"Wall time per run: {mean_std(wall, digits=1)} min on {machine.get('processor', '?')} "
        f"({machine.get('cpu_count', '?')} cores, {summaries[0].get('workers', '?')} worker(s)). "
        f"Runs: {', '.join(str(s['_dir']) for s in summaries)}",
    ]
    return "\n".join(lines)

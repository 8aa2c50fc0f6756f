"""``engram report``: our numbers (mean ± std over seeds) next to the papers', as Markdown.

Runs are grouped by experiment and resolved config (:func:`config_fingerprint`). In a group, each
seed is one sample: when a seed ran more than once, only its most recently finished run (``finished``
in summary.json) enters the mean ± std, and the section names the others. The deviations from the
paper are the preset's, with the values of the group's resolved config (``--set`` overrides included).

:func:`collect_groups` computes every group's numbers once; the Markdown report (:func:`build_report`)
and the results site (:mod:`engramlab.site`) only render them.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from engramlab.api import load_config
from engramlab.config import to_plain
from engramlab.engine.experiment import Experiment, PaperNumber
from engramlab.engine.rundir import CONFIG_NAME, RUN_INFO_NAME, SUMMARY_NAME, read_json
from engramlab.errors import RunDirError
from engramlab.experiments import get_experiment


def find_runs(paths: list[Path]) -> list[Path]:
    """Finished run directories (run.json and summary.json) at or below ``paths``."""
    runs = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise RunDirError(f"{path}: no such directory")
        candidates = [path] if (path / RUN_INFO_NAME).exists() else sorted(p.parent for p in path.rglob(RUN_INFO_NAME))
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


@dataclass(frozen=True)
class PaperRow:
    """One number of the paper and our per-seed values of its metric ([] when we did not measure it)."""

    paper: PaperNumber
    ours: list[float]

    @property
    def theirs(self) -> str:
        """The paper's number as the report prints it: the value and its qualifier, or the words alone."""
        paper = self.paper
        return paper.text if paper.value is None else f"{paper.value:g}" + (f" ({paper.text})" if paper.text else "")


@dataclass
class Group:
    """The runs of one experiment and resolved config, and what the report says of them.

    ``pooled`` holds one run per seed (:func:`one_run_per_seed`), in directory order; every number
    is computed from them. ``shared``: another group has one of these preset names, so the report
    names the config's fingerprint to tell them apart.
    """

    exp: Experiment
    presets: list[str]
    fingerprint: str
    shared: bool
    summaries: list[dict[str, Any]]
    pooled: list[dict[str, Any]]
    duplicates: dict[int, list[dict[str, Any]]]
    per_seed: dict[str, dict[int, float]]  # metric -> seed -> value, metrics in the order the runs list them
    deviations: list[str]
    inside: list[int]

    @property
    def name(self) -> str:
        return self.exp.name

    @property
    def seeds(self) -> list[int]:
        return sorted(s["seed"] for s in self.pooled)

    @property
    def changes(self) -> list[str]:
        """The ``--set`` overrides the runs were made with (their seeds aside)."""
        return [o for o in self.pooled[0].get("overrides", []) if not o.startswith("seed=")]

    @property
    def left_out(self) -> int:
        return len(self.summaries) - len(self.pooled)

    def values(self, key: str) -> list[float]:
        """The metric's values over the pooled runs that report it, in their order."""
        return list(self.per_seed.get(key, {}).values())

    @property
    def paper_rows(self) -> list[PaperRow]:
        return [PaperRow(paper, self.values(paper.key)) for paper in self.exp.paper]

    @property
    def others(self) -> list[str]:
        """Metrics the paper gives no number for."""
        return [key for key in self.per_seed if key not in {p.key for p in self.exp.paper}]

    @property
    def wall_minutes(self) -> list[float]:
        return [s["wall_time_s"] / 60 for s in self.pooled]

    @property
    def machine(self) -> dict[str, Any]:
        return self.pooled[0].get("machine", {})

    @property
    def workers(self) -> Any:
        return self.pooled[0].get("workers", "?")

    @property
    def finished(self) -> float:
        """When the group's last pooled run finished (:func:`finished_at`)."""
        return max(finished_at(s) for s in self.pooled)

    def variant(self) -> str:
        """The ``--set`` overrides and, where preset names alone do not tell groups apart, the config's
        fingerprint, as the report's heading says them after the preset names."""
        return "".join(f" --set {o}" for o in self.changes) + (f", config {self.fingerprint}" if self.shared else "")

    def counts(self) -> str:
        """Runs, seeds, inner seeds and duplicates, as the report's heading says them in brackets."""
        n = len(self.pooled)
        text = f"{n} run{'s' * (n > 1)}, seeds {', '.join(map(str, self.seeds))}"
        if self.inside:
            text += f"; each run trains seeds {', '.join(map(str, self.inside))} and reports their mean"
        if self.left_out:
            text += f"; {self.left_out} duplicate{'s' * (self.left_out > 1)} not pooled"
        return text

    def wall_time(self) -> str:
        """Wall time per run and the machine of the first pooled run."""
        machine = self.machine
        return (
            f"{mean_std(self.wall_minutes, digits=1)} min on {machine.get('processor', '?')} "
            f"({machine.get('cpu_count', '?')} cores, {self.workers} worker(s))"
        )


def collect_groups(paths: list[Path]) -> list[Group]:
    """Every group of finished runs at or below ``paths``, in the report's order (experiment, then
    preset names); a path without finished runs is one :class:`RunDirError` line."""
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
    result = []
    for (name, fingerprint), summaries in sorted(groups.items(), key=lambda item: (item[0][0], labels[item[0]])):
        names = labels[(name, fingerprint)]
        shared = any(presets.count((name, preset)) > 1 for preset in names)
        result.append(make_group(name, names, summaries, fingerprint, shared))
    return result


def make_group(name: str, presets: list[str], summaries: list[dict[str, Any]], fingerprint: str, shared: bool) -> Group:
    exp = get_experiment(name)
    pooled, duplicates = one_run_per_seed(summaries)
    per_seed: dict[str, dict[int, float]] = defaultdict(dict)
    for s in pooled:
        for key, value in s["metrics"].items():
            if isinstance(value, (int, float)):
                per_seed[key][s["seed"]] = float(value)
    return Group(
        exp=exp,
        presets=presets,
        fingerprint=fingerprint,
        shared=shared,
        summaries=summaries,
        pooled=pooled,
        duplicates=duplicates,
        per_seed=dict(per_seed),
        deviations=deviations(exp, pooled[0], presets[0]),
        inside=inner_seeds(pooled[0]),
    )


def build_report(paths: list[Path]) -> str:
    return "\n\n".join(report_group(group) for group in collect_groups(paths)) + "\n"


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


def command_of(summary: dict[str, Any]) -> str:
    """The ``engram run`` line that makes the run again, from its run.json (a ``command`` it recorded
    wins); a run that was resumed says how many times, as its ``stretches`` count them."""
    info = read_json(summary["_dir"] / RUN_INFO_NAME)
    if info.get("command"):
        return info["command"]
    words = ["engram", "run", info.get("experiment", summary["experiment"])]
    words += ["--preset", info["preset"]] if info.get("preset") else []
    seeds = []
    for override in info.get("overrides", []):
        if override.startswith("seed="):
            seeds = ["--seed", override.removeprefix("seed=")]
        else:
            words += ["--set", override]
    resumes = len(info.get("stretches", [])) - 1
    return shlex.join(words + seeds) + (f"  # resumed {resumes} time{'s' * (resumes > 1)}" if resumes > 0 else "")


def report_group(group: Group) -> str:
    """One Markdown section; a config's fingerprint is named when runs of one preset had different configs."""
    repeats = [
        f"- seed {seed}: {len(runs)} runs, {', '.join(str(s['_dir']) for s in runs)}; used: {runs[-1]['_dir']} "
        "(finished last)"
        for seed, runs in group.duplicates.items()
    ]
    lines = [
        f"### {group.name} — preset {' = '.join(f'`{p}`' for p in group.presets)}{group.variant()} ({group.counts()})",
        "",
        *(["Duplicate seeds, not pooled: one run per seed enters the mean ± std.", *repeats, ""] if repeats else []),
        *(["Deviations from the paper:", *[f"- {d}" for d in group.deviations], ""] if group.deviations else []),
        "| metric | ours (mean ± std over seeds) | paper | source |",
        "|---|---|---|---|",
    ]
    for row in group.paper_rows:
        ours = mean_std(row.ours) if row.ours else "not measured"
        lines.append(f"| {row.paper.label} | {ours} | {row.theirs} | {row.paper.source} |")
    if group.others:
        lines += ["", "| other metric | ours |", "|---|---|"]
        lines += [f"| `{key}` | {mean_std(group.values(key))} |" for key in group.others]
    lines += [
        "",
        f"Wall time per run: {group.wall_time()}. Runs: {', '.join(str(s['_dir']) for s in group.pooled)}",
    ]
    return "\n".join(lines)

"""``engram eval``: evaluate a trained run again, optionally on a changed task, without retraining."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from engramlab.api import load_config
from engramlab.config import check_not_renamed, parse_override, resolve, to_yaml
from engramlab.engine.checkpoint import atomic_write_text
from engramlab.engine.rundir import (
    CONFIG_NAME,
    SUMMARY_NAME,
    new_run_dir,
    provenance,
    write_json,
)
from engramlab.engine.runner import load_arm_model
from engramlab.errors import ConfigError, RunDirError


def trained_model(exp, cfg, run_dir: Path, arm: str):
    try:
        return load_arm_model(exp, cfg, run_dir, arm)
    except RuntimeError as exc:  # state-dict shape mismatch
        first = str(exc).strip().splitlines()[-1].strip()
        raise RunDirError(f"the overrides change the shape of the trained '{arm}' model ({first})") from None


def evaluate_run(run_dir: Path, overrides: list[str]) -> tuple[dict[str, Any], Path]:
    run_dir = Path(run_dir)
    exp, cfg = load_config(run_dir)
    for text in overrides:
        key, _ = parse_override(text)
        check_not_renamed(key, exp.renamed_keys)
        if not key.startswith(exp.eval_keys):
            allowed = ", ".join(k + "*" if k.endswith(".") else k for k in exp.eval_keys)
            raise ConfigError(f"engram eval cannot change '{key}' for {exp.name} (allowed: {allowed})")
    cfg = resolve(exp.Config, cfg.model_dump(), overrides=overrides)
    out_dir = new_run_dir(run_dir, "evals")
    try:
        results, media = {}, []
        for arm in exp.arms(cfg):
            model = trained_model(exp, cfg, run_dir, arm)
            results[arm] = exp.evaluate(cfg, arm, model)
            media += exp.record(cfg, arm, model, out_dir / "plots")
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)  # nothing half-written
        raise
    metrics = exp.summarize(cfg, results)
    plots = exp.plot(cfg, results, run_dir, out_dir / "plots") + media
    atomic_write_text(out_dir / CONFIG_NAME, to_yaml(cfg))
    summary = {
        "experiment": exp.name,
        "evaluated_run": str(run_dir),
        "overrides": overrides,
        "metrics": metrics,
        "results": results,
        **provenance(),
        "plots": [str(p.relative_to(out_dir)) for p in plots],
    }
    write_json(out_dir / SUMMARY_NAME, summary)
    return summary, out_dir

"""``engram eval``: evaluate a trained run again, optionally on a changed task, without retraining."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from engramlab.api import load_config
from engramlab.config import check_not_renamed, parse_override, resolve, to_yaml
from engramlab.engine.checkpoint import CHECKPOINT_NAME, atomic_write_text, load_checkpoint
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


def unfinished_arms(exp, cfg, run_dir: Path) -> dict[str, int | None]:
    """arm -> the step of its checkpoint (None: no checkpoint) for every arm not finished (no summary)."""
    unfinished = {}
    for arm in exp.arms(cfg):
        if not (run_dir / arm / SUMMARY_NAME).exists():
            path = run_dir / arm / CHECKPOINT_NAME
            unfinished[arm] = load_checkpoint(path, with_state=False).step if path.exists() else None
    return unfinished


def check_finished(exp, cfg, run_dir: Path, unfinished: dict[str, int | None], allow_partial: bool) -> None:
    """Refuse, before any work, a run whose arms did not all finish (unless ``allow_partial``, and
    then only if some arm has a checkpoint to evaluate)."""
    words = [
        f"{arm} ({f'checkpoint at step {step}' if step is not None else 'no checkpoint'})"
        for arm, step in unfinished.items()
    ]
    if unfinished and not allow_partial:
        raise RunDirError(
            f"{run_dir} is not finished: {', '.join(words)}; finish it with `engram run {exp.name} --resume "
            f"{run_dir}`, or evaluate the checkpoints as they are with --allow-partial"
        )
    if all(unfinished.get(arm, 0) is None for arm in exp.arms(cfg)):
        raise RunDirError(f"{run_dir}: nothing to evaluate: no arm has saved a checkpoint yet")


def evaluate_run(run_dir: Path, overrides: list[str], allow_partial: bool = False) -> tuple[dict[str, Any], Path]:
    """Evaluate every arm of a trained run again (with ``overrides`` of its task or evaluation keys)
    into ``RUN_DIR/evals/<timestamp>/``. A run with unfinished arms is refused unless
    ``allow_partial``; then each unfinished arm is evaluated at its last checkpoint, whose step is in
    the summary (``unfinished_arms``: null for an arm that saved none and is left out)."""
    run_dir = Path(run_dir)
    exp, cfg = load_config(run_dir)
    unfinished = unfinished_arms(exp, cfg, run_dir)
    check_finished(exp, cfg, run_dir, unfinished, allow_partial)
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
        for arm in (arm for arm in exp.arms(cfg) if unfinished.get(arm, 0) is not None):  # not started: left out
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
        "unfinished_arms": unfinished,  # arm -> the checkpoint step it was evaluated at (--allow-partial)
        "metrics": metrics,
        "results": results,
        **provenance(),
        "plots": [str(p.relative_to(out_dir)) for p in plots],
    }
    write_json(out_dir / SUMMARY_NAME, summary)
    return summary, out_dir

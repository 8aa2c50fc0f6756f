"""Python API over run directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engramlab.config import Config, load_yaml, rename_keys, validate
from engramlab.engine.experiment import Experiment
from engramlab.engine.rundir import CONFIG_NAME, read_json
from engramlab.engine.runner import load_arm_model
from engramlab.errors import ConfigError, RunDirError
from engramlab.experiments import get_experiment


def run_info(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    if not path.is_file():
        raise RunDirError(f"{run_dir}: not an engramlab run directory (no run.json)")
    return read_json(path)


def load_config(run_dir: Path):
    """The experiment and the resolved config saved in a run directory."""
    run_dir = Path(run_dir)
    exp = get_experiment(run_info(run_dir)["experiment"])
    return exp, saved_config(exp, run_dir / CONFIG_NAME)


def saved_config(exp: Experiment, path: Path) -> Config:
    """A saved config read under today's key names (``exp.renamed_keys``, the migration on read),
    then validated. The keys the file names are the config's set fields (``model_fields_set``)."""
    data = load_yaml(path)
    try:
        return validate(exp.Config, rename_keys(data, exp.renamed_keys, defaults=exp.Config().model_dump()))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_run(run_dir: Path, arm: str | None = None):
    exp, cfg = load_config(run_dir)
    arms = exp.arms(cfg)
    arm = arm or arms[0]
    if arm not in arms:
        raise RunDirError(f"{run_dir}: no arm '{arm}' (arms: {', '.join(arms)})")
    return load_arm_model(exp, cfg, Path(run_dir), arm), cfg

"""Run directories written before a config key was renamed still load: the migration on read
(``Experiment.renamed_keys``, ``engramlab.config.rename_keys``), tested on the published runs."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import REPO

from engramlab.api import load_config
from engramlab.config import describe, load_yaml, rename_keys, resolve, to_plain, to_yaml
from engramlab.errors import ConfigError
from engramlab.experiments import get_experiment
from engramlab.report import config_fingerprint

RESULTS = REPO / "docs" / "results"
PUBLISHED = sorted(path.parent for path in RESULTS.rglob("run.json"))


def value_at(data, dotted: str):
    for part in dotted.split("."):
        data = data[part]
    return data


def test_there_are_published_runs_with_old_keys():
    old = [run for run in PUBLISHED if "lambda_p" in load_yaml(run / "config.yaml").get("model", {})]
    experiments = {json.loads((run / "run.json").read_text())["experiment"] for run in old}
    assert experiments == {"pondernet-parity", "memo-pai", "pondernet-babi", "memo-babi"} and len(old) >= 10


@pytest.mark.parametrize("run", PUBLISHED, ids=lambda run: str(run.relative_to(RESULTS)))
def test_every_published_config_loads_with_its_old_keys_moved(run):
    exp, cfg = load_config(run)
    saved = load_yaml(run / "config.yaml")
    loaded = cfg.model_dump()
    for old, new in exp.renamed_keys.items():
        try:
            before = value_at(saved, old)
        except KeyError:
            continue
        assert value_at(loaded, new) == before, (old, new)
        with pytest.raises(KeyError):
            value_at(loaded, old)


def test_a_parity_run_keeps_its_halting_values_under_the_new_names():
    _, cfg = load_config(RESULTS / "pondernet-parity" / "quick-seed0")
    saved = load_yaml(RESULTS / "pondernet-parity" / "quick-seed0" / "config.yaml")["model"]
    model = cfg.model.model_dump()
    assert model["halting"]["lambda_p"] == saved["lambda_p"] == 0.1
    for key in ("max_steps", "eval_max_steps", "beta", "epsilon", "tau", "act_epsilon"):
        assert model["halting"][key] == saved[key], key
    assert model["halting"]["fixed_steps"] == saved["fixed_depth"] == 1
    assert model["repeat_steps"] == saved["repeat_depth"] == 8


def test_memo_pai_hops_are_steps_and_the_ut_depth_its_own_key():
    _, cfg = load_config(RESULTS / "memo-pai" / "quick-seed0")
    saved = load_yaml(RESULTS / "memo-pai" / "quick-seed0" / "config.yaml")["model"]
    assert cfg.model.halting.max_steps == saved["max_hops"] == 6
    assert cfg.model.halting.fixed_steps == saved["fixed_hops"]
    assert cfg.model.halting.hop_cost == saved["hop_cost"] == 0.01
    assert cfg.model.ut_steps == saved["ut_depth"] == 4
    assert cfg.model.halting.epsilon == 0.05  # the PonderNet default the old code used


def test_the_published_quick_parity_run_is_todays_quick_preset():
    exp, cfg = load_config(RESULTS / "pondernet-parity" / "quick-seed0")
    assert cfg == resolve(exp.Config, exp.presets["quick"], overrides=["seed=0"])


@pytest.mark.parametrize("name", ["pondernet-parity", "memo-pai"])
def test_old_and_new_runs_of_one_config_share_a_fingerprint(tmp_path, name):
    """A run written before model.halting existed (its keys under the old names, and no key for a
    value the old code had built in, e.g. memo-pai's PonderNet ε) pools with a new run."""
    exp = get_experiment(name)
    cfg = resolve(exp.Config, exp.presets["quick"])
    new = to_plain(cfg.model_dump())
    old = json.loads(json.dumps(new))
    halting = old["model"].pop("halting")
    for old_key, new_key in exp.renamed_keys.items():
        source = halting if new_key.startswith("model.halting.") else old["model"]
        old["model"][old_key.removeprefix("model.")] = source.pop(new_key.rpartition(".")[2])
    runs = {}
    for era, data in (("old", old), ("new", new)):
        runs[era] = tmp_path / era
        runs[era].mkdir()
        (runs[era] / "run.json").write_text(json.dumps({"experiment": name, "preset": "quick", "overrides": []}))
        (runs[era] / "config.yaml").write_text(yaml.safe_dump(data))
    assert "halting" not in load_yaml(runs["old"] / "config.yaml")["model"]
    assert load_config(runs["old"])[1] == cfg
    assert config_fingerprint(runs["old"]) == config_fingerprint(runs["new"])
    changed = cfg.model_copy(
        update={"model": cfg.model.model_copy(update={"ut_ff" if name == "memo-pai" else "hidden": 7})}
    )
    (runs["new"] / "config.yaml").write_text(to_yaml(changed))
    assert config_fingerprint(runs["old"]) != config_fingerprint(runs["new"])


def test_rename_keys_moves_keys_and_starts_a_new_section_from_the_defaults():
    data = {"seed": 1, "model": {"hidden": 8, "lambda_p": 0.3, "repeat_depth": 4}}
    renames = {
        "model.lambda_p": "model.halting.lambda_p",
        "model.repeat_depth": "model.repeat_steps",
        "model.absent": "model.halting.absent",
    }
    defaults = {"model": {"halting": {"lambda_p": 0.2, "epsilon": 0.05}}}
    assert rename_keys(data, renames, defaults) == {
        "seed": 1,
        "model": {"hidden": 8, "halting": {"lambda_p": 0.3, "epsilon": 0.05}, "repeat_steps": 4},
    }
    assert data["model"]["lambda_p"] == 0.3  # the input is not changed
    assert rename_keys(rename_keys(data, renames), renames) == rename_keys(data, renames)  # idempotent


def test_a_key_under_both_names_is_one_error_line():
    data = {"model": {"lambda_p": 0.3, "halting": {"lambda_p": 0.2}}}
    with pytest.raises(ConfigError, match="both 'model.lambda_p' and its new name 'model.halting.lambda_p'"):
        rename_keys(data, {"model.lambda_p": "model.halting.lambda_p"})


def test_eval_keys_name_existing_keys():
    for name in ("pondernet-parity", "memo-pai", "pondernet-babi", "memo-babi"):
        exp = get_experiment(name)
        keys = {key for key, *_ in describe(exp.Config())}
        for allowed in exp.eval_keys:
            assert any(key.startswith(allowed) for key in keys), (name, allowed)


def test_an_override_under_an_old_name_gives_the_new_name(capsys):
    from engramlab.cli import main

    assert main(["run", "memo-pai", "--set", "model.max_hops=3", "--show-config"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith(
        "config key 'model.max_hops' is now 'model.halting.max_steps' (--set model.halting.max_steps=...)"
    )

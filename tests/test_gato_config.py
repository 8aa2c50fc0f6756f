"""Gato's one config: the paper's defaults, the project's heads check, the generalist's ``model:``
section, and every published generalist run still building the model it trained (its parameter
count as recorded in its summary.json)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from conftest import REPO

from engramlab.config import HeadsDivideWidth, load_yaml, validate
from engramlab.errors import ConfigError
from engramlab.experiments.generalist import finetune
from engramlab.experiments.generalist.generalist import Generalist, GeneralistConfig
from engramlab.models.gato import Gato, GatoConfig

RESULTS = REPO / "docs" / "results"
GENERALISTS = sorted((RESULTS / "generalist").glob("*/config.yaml"))
FINETUNES = sorted((RESULTS / "generalist-finetune").glob("*/config.yaml"))


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())  # as the runner records them


def recorded_arms(run: Path) -> dict[str, int]:
    summary = json.loads((run / "summary.json").read_text())
    return {arm: values["parameters"] for arm, values in summary["arms"].items()}


def run_timestamp(run: Path) -> str:
    """The run directory's name when it ran (``20261129-010003``), from its summary's start time."""
    started = json.loads((run / "summary.json").read_text())["started"]
    return datetime.fromisoformat(started).strftime("%Y%m%d-%H%M%S")


def test_the_defaults_are_the_papers_smallest_model_and_the_generalist_uses_the_class_itself():
    cfg = GatoConfig()
    assert (cfg.layers, cfg.width, cfg.heads, cfg.mlp, cfg.dropout, cfg.context) == (8, 768, 24, 3072, 0.1, 1024)
    assert isinstance(cfg, HeadsDivideWidth) and GatoConfig.width_field == "width"
    assert GeneralistConfig.model_fields["model"].annotation is GatoConfig
    assert all(field.description for field in GatoConfig.model_fields.values())


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"heads": 5}, "model.width (768) must be a multiple of model.heads (5)"),
        ({"heads": 5, "rotary": True}, "model.width (768) must be a multiple of model.heads (5)"),
        ({"width": 24, "heads": 8, "rotary": True}, "model.rotary needs an even head width; width / heads = 3"),
        ({"patch_groups": 3}, "model.patch_groups (3) must divide the patch block's 16 channels or be at least 16"),
        ({"context": 8}, "invalid value for context: 8 (allowed: an integer >= 16)"),
    ],
)
def test_a_bad_value_is_one_error_line(values, message):
    with pytest.raises(ConfigError) as error:
        validate(GatoConfig, values)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_local_positions_come_from_the_context_and_the_patch_side_from_the_data():
    small = Gato(GatoConfig(layers=1, width=16, heads=2, mlp=16, context=256), patch=7)
    assert small.local.num_embeddings == 257 and small.patches.out.in_features == 16 * 7 * 7
    assert Gato(GatoConfig(layers=1, width=16, heads=2, mlp=16, context=20)).local.num_embeddings == 65


@pytest.mark.parametrize("config", GENERALISTS, ids=lambda p: p.parent.name)
def test_a_published_generalist_run_builds_the_model_it_trained(config):
    """Its config.yaml validates as saved (no key renamed or removed) and every arm's model has the
    parameter count its summary.json recorded."""
    cfg = GeneralistConfig.model_validate(load_yaml(config))
    arms = recorded_arms(config.parent)
    assert arms and {arm: parameters(Generalist().build(cfg, arm)) for arm in arms} == arms


@pytest.mark.parametrize("config", FINETUNES, ids=lambda p: p.parent.name)
def test_a_published_fine_tuning_run_builds_the_model_it_trained(config, monkeypatch):
    """Its ``pretrained`` generalist is the published run that started at that directory's time;
    the scratch arms build from that run's config (a pretrained arm builds the same model, then
    loads the generalist's weights into it, which are not published)."""
    cfg = finetune.FinetuneConfig.model_validate(load_yaml(config))
    published = {run_timestamp(path.parent): path for path in GENERALISTS}
    pretrained = published[Path(cfg.pretrained).name]
    monkeypatch.setattr(finetune, "pretrained_config", lambda _: GeneralistConfig.model_validate(load_yaml(pretrained)))
    arms = recorded_arms(config.parent)
    built = {arm: parameters(finetune.EXPERIMENT.build(cfg, arm.replace("-pretrained", "-scratch"))) for arm in arms}
    assert arms and built == arms

"""``engram report`` over every published run (their configs read by today's code), and the deviation templates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

from engramlab.config import Config, resolve
from engramlab.engine.deviations import DEVIATION_FORMATTER
from engramlab.engine.experiment import Experiment
from engramlab.experiments import REGISTRY, get_experiment
from engramlab.report import build_report

GOLDEN = REPO / "tests" / "data" / "published_report.md"


def masked(report: str) -> str:
    """The report without its config fingerprints: short hashes that name a group of runs in a
    heading; the runs each group holds are listed in full beside them."""
    return re.sub(r", config [0-9a-f]{8}", ", config <fingerprint>", report)


def test_report_of_the_published_runs_is_unchanged(monkeypatch):
    """The tables of docs/results/ as ``engram report docs/results`` printed them when this file was
    written. After publishing a run or changing a preset's deviations on purpose, rewrite it with
    ``engram report docs/results --out tests/data/published_report.md``, then mask its fingerprints
    as :func:`masked` does."""
    monkeypatch.chdir(REPO)
    assert masked(build_report([Path("docs/results")])) == GOLDEN.read_text()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_presets_deviations_format_with_its_own_config(name):
    """Every template names existing config keys, and a preset's config fills every field of its lines."""
    exp = get_experiment(name)
    for preset in exp.deviations:
        cfg = resolve(exp.Config, exp.presets[preset], overrides=[], renamed=exp.renamed_keys)
        lines = exp.deviations_of(cfg, preset)
        assert lines and not any(mark in line for line in lines for mark in "{}?"), (preset, lines)


class Inner(Config):
    steps: int = 20_000
    lr: float = 3e-4
    optimizer: str = "adamw"
    train_k: tuple[int, int] = (1, 16)
    test_k: tuple[int, int] | None = None
    arms: dict[str, dict[str, int]] = {"lstm": {"layers": 1}}
    rotary: bool = False


class Outer(Config):
    inner: Inner = Inner()


@pytest.mark.parametrize(
    "template, text",
    [
        ("{cfg.inner.steps:k} updates, {cfg.inner.steps:,} steps", "20k updates, 20,000 steps"),
        ("lr {cfg.inner.lr:sci}, {cfg.inner.optimizer:name}", "lr 3e-4, AdamW"),
        ("k in {cfg.inner.train_k}, test k in {cfg.inner.test_k}", "k in [1, 16], test k in none"),
        (
            "a {cfg.inner.arms[lstm][layers]}-layer LSTM, a {cfg.inner.arms[gru][layers]}-layer GRU",
            "a 1-layer LSTM, a ?-layer GRU",
        ),
        ("{cfg.inner.rotary:unless}no rotary positions", "no rotary positions"),
    ],
)
def test_deviation_templates_format_config_values(template, text):
    assert DEVIATION_FORMATTER.format(template, cfg=Outer()) == text


def test_deviations_of_leave_out_the_lines_whose_condition_is_false():
    class Toy(Experiment):
        Config = Outer
        deviations = {"quick": ["{cfg.inner.rotary:if}rotary positions", "{cfg.inner.steps:k} updates"]}

    toy = Toy()
    assert toy.deviations_of(Outer(), "quick") == ["20k updates"]
    assert toy.deviations_of(Outer(inner=Inner(rotary=True, steps=500)), "quick") == ["rotary positions", "500 updates"]
    assert toy.deviations_of(Outer(), "paper") == [] and toy.deviations_of(Outer(), None) == []

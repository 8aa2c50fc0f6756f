"""The Frozen probes in scripts/ on a tiny finished run: frozen_failures.py's causes add up to the
run's own misses, and frozen_vq_probe.py and frozen_geometry.py give accuracies in [0, 100]."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
from conftest import tiny_frozen as tiny

from engramlab.config import resolve
from engramlab.engine.rundir import read_json
from engramlab.engine.runner import run_experiment
from engramlab.experiments.multimodal.frozen import EXPERIMENT, FrozenConfig

ROOT = Path(__file__).resolve().parents[1]


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_frozen_probes_read_a_finished_run(frozen_data, tmp_path):  # noqa: F811
    overrides = tiny(
        frozen_data, "kinds=[frozen, frozen-vq, flamingo]", "eval.ways=[2]", "eval.episodes=20", "eval.batch=8"
    )
    cfg = resolve(FrozenConfig, EXPERIMENT.presets["quick"], overrides=overrides)
    run = tmp_path / "run"
    run.mkdir()
    run_experiment(EXPERIMENT, cfg, run, preset="quick", overrides=overrides, threads=1, progress=False)

    assert script("frozen_failures").main([str(run), "--out", str(tmp_path / "f.json")]) == 0
    failures = json.loads((tmp_path / "f.json").read_text())
    for shots in cfg.eval.shots:
        hits = read_json(run / "frozen-vq-seed0" / "summary.json")["results"]["cells"][f"nonce/2way/{shots}shot"]
        counts = failures["frozen-vq"]["seed 0"][f"{shots} shot"]
        causes = ["query_misread", "support_confusion", "first_letter", "later_letter"]
        assert counts["episodes"] == 20 and counts["failed"] == hits.count(False) == sum(counts[c] for c in causes)
        text = read_json(run / "lm" / "summary.json")["results"]["cells"][f"nonce/2way/{shots}shot"]
        assert failures["text ceiling"][f"{shots} shot"]["failed"] == text.count(False)
        first = failures["flamingo first answer token"]["seed 0"][f"{shots} shot"]
        assert first.pop("episodes") == 20 == sum(first.values())

    copy = tmp_path / "lm-copy.safetensors"  # a copy taken while a run goes on
    shutil.copy(run / "lm" / "checkpoint.safetensors", copy)
    probe = ["--kind", "frozen-vq", "--steps", "2", "--episodes", "10", "--lm-checkpoint", str(copy)]
    assert script("frozen_vq_probe").main([str(run), *probe, "--out", str(tmp_path / "p.json")]) == 0
    probed = json.loads((tmp_path / "p.json").read_text())
    cells = [v for k, v in probed.items() if "way/" in k]
    assert cells and all(0 <= v <= 100 for v in cells)
    assert probed["lm_update"] == cfg.train.steps
    missing = [str(run), "--lm-checkpoint", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "x.json")]
    assert script("frozen_vq_probe").main(missing) == 2 and not (tmp_path / "x.json").exists()

    geometry = ["--arms", "frozen-seed0", "--episodes", "10", "--pool-images", "100", "--out", str(tmp_path / "g.json")]
    assert script("frozen_geometry").main([str(run), *geometry]) == 0
    accuracy = json.loads((tmp_path / "g.json").read_text())["arms"]["frozen-seed0"]
    accuracy = accuracy["exact_match_percent_2way_1shot_induction"]
    assert all(0 <= v <= 100 for v in accuracy.values()) and np.isfinite(list(accuracy.values())).all()

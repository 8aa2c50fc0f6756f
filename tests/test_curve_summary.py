"""scripts/curve_summary.py: window means between marks and the evaluations at the marks."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("curve_summary", ROOT / "scripts" / "curve_summary.py")
curve_summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(curve_summary)


def test_each_mark_averages_its_windows_and_keeps_its_evaluation():
    rows = [
        {"step": 50, "train/loss": 0.8},
        {"step": 100, "train/loss": 0.6, "time/steps_per_s": 9.0},
        {"step": 100, "eval/accuracy": 0.7},
        {"step": 150, "train/loss": 0.4},
        {"step": 200, "train/loss": 0.2},
        {"step": 200, "eval/accuracy": 0.9},
        {"step": 250, "train/loss": 0.1},  # an unfinished window: no row
    ]
    summary = curve_summary.summarize(rows, every=100)
    assert [r["step"] for r in summary] == [100, 200]
    assert abs(summary[0]["train/loss"] - 0.7) < 1e-12 and summary[0]["eval/accuracy"] == 0.7
    assert abs(summary[1]["train/loss"] - 0.3) < 1e-12 and summary[1]["eval/accuracy"] == 0.9
    assert "time/steps_per_s" not in summary[0]

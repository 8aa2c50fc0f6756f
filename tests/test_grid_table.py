"""scripts/grid_table.py: one row per recipe of each run, named by what the run changed, and a
clear line for a folder that is not a finished run."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("grid_table", ROOT / "scripts" / "grid_table.py")
grid_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grid_table)


def fake_run(directory: Path, overrides: list[str], metrics: dict[str, float]) -> Path:
    directory.mkdir(parents=True)
    (directory / "run.json").write_text(json.dumps({"preset": "quick", "overrides": overrides}))
    (directory / "config.yaml").write_text("a:\n  train:\n    steps: 8000\n")
    (directory / "summary.json").write_text(json.dumps({"metrics": metrics}))
    return directory


def fake_arm(run: Path, arm: str, error: float) -> None:
    (run / arm).mkdir()
    (run / arm / "summary.json").write_text(json.dumps({"results": {"decode_error_cm": error}}))


def recipe_metrics(recipe: str, seeds: int, with_grids: int, error: float, share: float) -> dict[str, float]:
    return {
        f"{recipe}/seeds": seeds,
        f"{recipe}/seeds_with_grids": with_grids,
        f"{recipe}/decode_error_cm": error,
        f"{recipe}/decode_error_cm/std": 1.5,
        f"{recipe}/frac_above_0.37_and_null95": share,
        f"{recipe}/frac_above_0.37_and_null95/std": 0.01,
        f"{recipe}/frac_above_0.37": share + 0.02,
        f"{recipe}/top_score60": 0.9,
    }


def test_rows_per_recipe_named_by_their_changes(tmp_path):
    base = fake_run(
        tmp_path / "quick",
        ["seeds=[0,1,2]"],
        {**recipe_metrics("a", 3, 2, 12.0, 0.15), **recipe_metrics("a-untrained", 1, 0, 95.0, 0.01)},
    )
    clip = fake_run(
        tmp_path / "ablation-a-clip",
        ["recipes=[a]", "untrained=false", "a.train.grad_value_clip=1e-5"],
        recipe_metrics("a", 2, 0, 90.0, 0.0),
    )
    for seed, error in ((10, 12.0), (0, 9.0), (1, 15.0)):  # seed order, not name order
        fake_arm(base, f"a-seed{seed}", error)
    out = tmp_path / "out"
    assert grid_table.main([str(base), str(clip), "--out", str(out)]) == 0
    rows = json.loads((out / "table.json").read_text())["rows"]
    assert [(r["recipe"], r["changes"], r["updates"]) for r in rows] == [
        ("a", "none", 8000),
        ("a-untrained", "none", 0),
        ("a", "a.train.grad_value_clip=1e-5", 8000),
    ]
    table = (out / "table.md").read_text().splitlines()
    assert table[2] == "| a | none | 8,000 | 2 of 3 | 12.0 (9.0, 15.0, 12.0) | 15.0 ± 1.0 | 17.0 | 0.90 |"
    assert rows[0]["decode_error_cm/std"] == pytest.approx(6**0.5)
    assert table[4].startswith("| a | a.train.grad_value_clip=1e-5 | 8,000 | 0 of 2 | 90.0 ± 1.5 | 0.0 ± 1.0 |")
    assert (out / "table.png").stat().st_size > 0


def test_a_folder_that_is_not_a_finished_run_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert grid_table.main([str(tmp_path), "--out", str(out)]) == 2
    (error,) = capsys.readouterr().err.splitlines()
    assert error == f"error: {tmp_path}: not a finished run (no run.json)"
    assert not out.exists()

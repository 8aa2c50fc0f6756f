"""scripts/sweep_plot.py: rows sorted by the swept config value, clear errors for unknown names."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("sweep_plot", ROOT / "scripts" / "sweep_plot.py")
sweep_plot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep_plot)

PUBLISHED = ROOT / "docs" / "results" / "pondernet-parity"
RUNS = [
    PUBLISHED / "paper-n16-lambda-0.9-seed0",
    PUBLISHED / "paper-n16-seed0",
    PUBLISHED / "paper-n16-lambda-0.3-seed0",
]


def test_rows_follow_the_swept_value_and_carry_each_runs_metrics(tmp_path):
    metric = "pondernet/extrapolation_accuracy"
    assert (
        sweep_plot.main(
            [*map(str, RUNS), "--key", "model.halting.lambda_p", "--metrics", metric, "--out", str(tmp_path)]
        )
        == 0
    )
    rows = json.loads((tmp_path / "sweep.json").read_text())["rows"]
    assert [row["value"] for row in rows] == [0.1, 0.3, 0.9]
    for row in rows:
        assert row[metric] == json.loads((Path(row["run"]) / "summary.json").read_text())["metrics"][metric]
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_an_unknown_key_or_metric_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        sweep_plot.main(
            [
                str(RUNS[0]),
                "--key",
                "model.halting.nope",
                "--metrics",
                "pondernet/interpolation_accuracy",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert (
        sweep_plot.main([str(RUNS[0]), "--key", "model.halting.lambda_p", "--metrics", "nope", "--out", str(out)]) == 2
    )
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        "error: config key 'model.halting.nope': no field 'nope'",
        f"error: {RUNS[0]}/summary.json: no metric nope",
    ]
    assert not out.exists()


def test_a_folder_that_is_not_a_finished_run_is_one_line(tmp_path, capsys):
    assert sweep_plot.main([str(tmp_path), "--key", "seed", "--metrics", "x", "--out", str(tmp_path / "out")]) == 2
    (error,) = capsys.readouterr().err.splitlines()
    assert error.startswith(f"error: {tmp_path}") and "no run.json" in error

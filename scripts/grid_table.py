"""The grid-cell runs side by side: what each changed from the preset, and per recipe the decoded
error, the share of units that are grid-like and how many seeds have grids (the fragility table).

    python scripts/grid_table.py docs/results/grid-cells/quick-seeds012 docs/results/grid-cells/ablation-* \
        --out docs/results/grid-cells/ablations

Each run is read from its ``run.json`` (the preset and the ``--set`` overrides, which name the
ablation), ``config.yaml`` (each recipe's number of updates, so a row says what it trained even
when a preset has changed since) and ``summary.json`` (the metrics of ``engram run grid-cells``). Writes ``table.json``,
``table.md`` and ``table.png`` (the share of seeds with grids and the decoded error per row) into
``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml

from engramlab.engine.plots import plt, save
from engramlab.engine.rundir import now_iso, read_json
from engramlab.errors import EngramError

# overrides that pick arms or seeds, not the recipe: left out of a row's name
BOOKKEEPING = ("recipes=", "seeds=", "untrained=")
FIELDS = {  # metric suffix -> column
    "seeds_with_grids": "seeds with grids",
    "decode_error_cm": "decoded error (cm)",
    "frac_above_0.37_and_null95": "units > 0.37 and null (%)",
    "frac_above_0.37": "units > 0.37 (%)",
    "top_score60": "top score60",
}


def changes(run_info: dict) -> str:
    """What the run changed from its preset, from its ``--set`` list."""
    kept = [o for o in run_info.get("overrides", []) if not o.replace(" ", "").startswith(BOOKKEEPING)]
    return ", ".join(kept) or "none"


def rows_of(run: Path) -> list[dict]:
    """One row per recipe (and untrained network) the run holds."""
    for name in ("run.json", "config.yaml", "summary.json"):
        if not (run / name).exists():
            raise EngramError(f"{run}: not a finished run (no {name})")
    info, metrics = read_json(run / "run.json"), read_json(run / "summary.json")["metrics"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    recipes = sorted({key.split("/")[0] for key in metrics if key.endswith("/seeds")})
    rows = []
    for recipe in recipes:
        row = {"run": str(run), "preset": info.get("preset"), "changes": changes(info), "recipe": recipe}
        row["updates"] = 0 if recipe.endswith("-untrained") else config[recipe]["train"]["steps"]
        row["seeds"] = int(metrics[f"{recipe}/seeds"])
        for field in FIELDS:
            value = metrics.get(f"{recipe}/{field}")
            row[field] = value
            row[f"{field}/std"] = metrics.get(f"{recipe}/{field}/std")
        errors = seed_errors(run, recipe)
        if errors:  # the summary keeps only the mean; the arms' own summaries give the spread
            row["decode_error_cm/seeds"] = errors
            row["decode_error_cm/std"] = float(np.std(errors))
        rows.append(row)
    return rows


def seed_errors(run: Path, recipe: str) -> list[float]:
    """Each trained seed's decoded error (cm) from its arm's ``summary.json``, in seed order."""
    if recipe.endswith("-untrained"):
        return []
    paths = sorted(run.glob(f"{recipe}-seed*/summary.json"), key=lambda p: int(p.parent.name.split("seed")[-1]))
    return [read_json(path)["results"]["decode_error_cm"] for path in paths]


def cell(row: dict, field: str) -> str:
    value, spread = row[field], row[f"{field}/std"]
    if value is None:
        return "-"
    if field == "seeds_with_grids":
        return f"{int(value)} of {row['seeds']}"
    scale = 100 if field.startswith("frac") else 1
    text = f"{scale * value:.1f}" if field != "top_score60" else f"{value:.2f}"
    if field == "decode_error_cm" and len(row.get("decode_error_cm/seeds", [])) > 1:
        return text + " (" + ", ".join(f"{e:.1f}" for e in row["decode_error_cm/seeds"]) + ")"
    if spread and row["seeds"] > 1:
        text += f" ± {scale * spread:.1f}" if field != "top_score60" else f" ± {spread:.2f}"
    return text


def markdown(rows: list[dict]) -> str:
    header = ["recipe", "changed from the preset", "updates", *FIELDS.values()]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in rows:
        name = row["recipe"] + ("" if row["preset"] == "quick" else f" ({row['preset']})")
        cells = [row["changes"], f"{row['updates']:,}", *(cell(row, f) for f in FIELDS)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    labels = [f"{row['recipe']} ({Path(row['run']).name})" for row in rows]  # the table says what changed
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.4 * len(rows) + 1.6), sharey=True)
    y = range(len(rows))
    axes[0].barh(y, [row["seeds_with_grids"] / row["seeds"] for row in rows], color="tab:green")
    axes[0].set(xlim=(0, 1), xlabel="share of seeds with grids\n(≥ 10 % of units above 0.37 and null, top ≥ 0.8)")
    axes[0].set_yticks(list(y), labels, fontsize=8)
    axes[0].invert_yaxis()
    errors = [row["decode_error_cm"] for row in rows]
    spreads = [row["decode_error_cm/std"] or 0 for row in rows]
    axes[1].barh(y, errors, xerr=spreads, color="tab:blue")
    axes[1].set(xlabel="decoded position error\n(cm, mean ± std over seeds)")
    save(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished grid-cells run directories")
    parser.add_argument("--out", type=Path, required=True, help="folder for table.json, table.md and table.png")
    args = parser.parse_args(argv)
    try:
        rows = [row for run in args.runs for row in rows_of(run)]
    except EngramError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    command = "python scripts/grid_table.py " + " ".join(map(str, args.runs)) + f" --out {args.out}"
    (args.out / "table.json").write_text(json.dumps({"command": command, "written": now_iso(), "rows": rows}, indent=2))
    (args.out / "table.md").write_text(table + "\n")
    plot(rows, args.out / "table.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

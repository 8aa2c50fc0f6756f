"""The README's self-contained Python examples run as written, and its leaderboard quotes the published one."""

import re

from conftest import REPO


def test_readme_python_examples_run():
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    runnable = [b for b in blocks if "load_run(" not in b]  # that one needs a trained run directory
    assert runnable
    for block in runnable:
        exec(compile(block, "README.md", "exec"), {})


def test_readme_memory_leaderboard_is_the_published_one():
    published = (REPO / "docs" / "results" / "memory" / "leaderboard.md").read_text()
    (table,) = re.findall(r"<!-- overview -->\n(.*?)<!-- overview -->", published, flags=re.S)
    for doc in ("README.md", "docs/memory.md"):
        assert table.strip() in (REPO / doc).read_text(), f"copy the overview of leaderboard.md into {doc}"


def test_readme_pai_table_quotes_the_published_runs():
    """Every number in the README's MEMO/PAI table is the mean ± std of the published seeds."""
    import json
    import statistics

    runs = sorted((REPO / "docs" / "results" / "memo-pai").glob("quick-seed*"))
    assert len(runs) == 3
    metrics = [json.loads((run / "summary.json").read_text())["metrics"] for run in runs]

    def quoted(key: str, digits: int) -> str:
        values = [m[key] for m in metrics]
        return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    text = (REPO / "README.md").read_text()
    (section,) = re.findall(r"### MEMO on paired associative inference.*?\n\n(\|.*?)\n\n", text, flags=re.S)
    for arm, label in (("memo-pondernet", "MEMO + PonderNet"), ("memo-reinforce", "MEMO + REINFORCE"), ("ut", "UT")):
        (row,) = [line for line in section.splitlines() if line.startswith(f"| {label}")]
        for query in ("A-B", "B-C", "A-C"):
            assert quoted(f"{arm}/accuracy_{query}", 4) in row, (arm, query)
        if arm != "ut":
            assert f"{quoted(f'{arm}/direct_hops', 2)} → {quoted(f'{arm}/indirect_hops', 2)}" in row, arm


def test_readme_memn2n_babi_row_quotes_the_published_runs():
    import json
    import statistics

    runs = sorted((REPO / "docs" / "results" / "memn2n-babi").glob("quick-seed*"))
    assert len(runs) == 3
    metrics = [json.loads((run / "summary.json").read_text())["metrics"] for run in runs]
    (row,) = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| MemN2N |")]
    for key, digits in (("memn2n/mean_error", 2), ("memn2n/failed_tasks", 1)):
        values = [m[key] for m in metrics]
        assert f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}" in row, key


def test_readme_babi_10k_rows_quote_the_published_runs():
    import json
    import statistics

    text = (REPO / "README.md").read_text()
    (section,) = re.findall(r"### bAbI 10k, 20 tasks jointly.*?\n(.*?)\n###", text, flags=re.S)
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    for experiment, arms in (
        ("pondernet-babi", (("ut-pondernet", "UT + PonderNet"), ("ut-act", "UT + ACT"))),
        ("memo-babi", (("memo-pondernet", "MEMO + PonderNet"), ("memo-reinforce", "MEMO + REINFORCE"))),
    ):
        runs = sorted((REPO / "docs" / "results" / experiment).glob("quick-seed*"))
        assert len(runs) == 3, experiment
        metrics = [json.loads((run / "summary.json").read_text())["metrics"] for run in runs]
        for arm, label in arms:
            (row,) = [line for line in rows if line.startswith(f"| {label} |")]
            for key, digits in (("mean_error", 2), ("failed_tasks", 1), ("mean_steps", 2)):
                values = [m[f"{arm}/{key}"] for m in metrics]
                assert f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}" in row, (
                    arm,
                    key,
                )

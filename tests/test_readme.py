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

"""The README's self-contained Python examples run as written."""

import re

from conftest import REPO


def test_readme_python_examples_run():
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    runnable = [b for b in blocks if "load_run(" not in b]  # that one needs a trained run directory
    assert runnable
    for block in runnable:
        exec(compile(block, "README.md", "exec"), {})

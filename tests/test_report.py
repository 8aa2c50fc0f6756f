"""``engram report`` over every published run, and every published run's config, read by today's code."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO

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

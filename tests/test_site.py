"""The results site (``engram report --html``): its rules, its files, and the site in a real browser.

The browser test opens every page in Debian's headless Chromium through Playwright. Without Chromium
or Playwright it is skipped, unless ``ENGRAM_REQUIRE_BROWSER=1`` (CI sets it), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

import pytest
from conftest import REPO

from engramlab.browser import CHROMIUM, launch, serve
from engramlab.errors import RunDirError
from engramlab.report import collect_groups, command_of, find_runs
from engramlab.site import build_site, headline, status

PUBLISHED = Path("docs/results")  # as the checked-in site names it: relative to the repository
CHECKED_IN = REPO / "docs" / "site"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A fresh site of the published runs, built once for the module."""
    out = tmp_path_factory.mktemp("site")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        build_site([PUBLISHED], out)
    return out


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- rules -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ours, paper, mark",
    [
        (1.0, 1.0, "✓"),
        (0.0, 0.0, "✓"),  # two zeros agree
        (0.9, 1.0, "✓"),  # 10 % of the larger magnitude, inclusive
        (110.0, 100.0, "✓"),  # the larger magnitude is ours
        (0.8, 1.0, "≈"),
        (0.75, 1.0, "≈"),  # 25 %, inclusive
        (0.7, 1.0, "✗"),
        (1.0, 0.7, "✗"),  # symmetric
        (-1.0, 1.0, "✗"),
        (0.1, 0.0, "✗"),  # any gap to a zero is the whole magnitude
        (None, 1.0, "—"),  # not measured
        (1.0, None, "—"),  # the paper states it in words only
    ],
)
def test_status_marks_the_gap_relative_to_the_larger_magnitude(ours, paper, mark):
    assert status(ours, paper) == mark


def test_headline_group_is_plain_quick_then_most_seeds_then_last_finished():
    def group(presets, changes=(), seeds=1, finished=0.0):
        return SimpleNamespace(presets=presets, changes=list(changes), pooled=[{}] * seeds, finished=finished)

    paper3, ablation3 = group(["paper"], seeds=3), group(["quick"], ["x=1"], seeds=3)
    quick1, quick2_old, quick2_new = group(["quick"]), group(["quick"], seeds=2), group(["quick"], seeds=2, finished=9)
    assert headline([paper3, ablation3, quick1, quick2_old, quick2_new]) is quick2_new
    assert headline([paper3, ablation3, quick1]) is quick1
    same = group(["paper", "quick"], seeds=2)  # a quick preset equal to paper counts as quick
    assert headline([same, quick1]) is same
    assert headline([paper3, ablation3]) is paper3  # no plain quick group: every group competes


def test_command_is_rebuilt_from_run_json(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    info = {
        "experiment": "memory-copy",
        "preset": "quick",
        "overrides": ["methods=[ntm, lstm]", "train.steps=50", "seed=2"],
        "stretches": [{"started": "a"}, {"started": "b"}],
    }
    (run / "run.json").write_text(json.dumps(info))
    summary = {"_dir": run, "experiment": "memory-copy"}
    assert command_of(summary) == (
        "engram run memory-copy --preset quick --set 'methods=[ntm, lstm]' --set train.steps=50 --seed 2"
        "  # resumed 1 time"
    )
    (run / "run.json").write_text(json.dumps({**info, "command": "engram run memory-copy --seed 2"}))
    assert command_of(summary) == "engram run memory-copy --seed 2"


# --- the site's files --------------------------------------------------------------------------
def test_index_lists_every_experiment_with_published_runs(site):
    index = (site / "index.html").read_text()
    names = {json.loads((run / "summary.json").read_text())["experiment"] for run in find_runs([REPO / PUBLISHED])}
    assert names
    for name in names:
        assert f'href="{name}.html"' in index and (site / f"{name}.html").is_file(), name


def test_checked_in_site_is_up_to_date(site):
    """docs/site is ``engram report docs/results --html docs/site`` of today's runs and code. After
    publishing a run or changing the site, build it again with that command (from the repository root)."""
    fresh, checked_in = files_of(site), files_of(CHECKED_IN)
    assert sorted(fresh) == sorted(checked_in)
    assert [name for name in fresh if fresh[name] != checked_in[name]] == []


def test_same_runs_give_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    first, second = (
        build_site([PUBLISHED / "memory"], tmp_path / "a"),
        build_site([PUBLISHED / "memory"], tmp_path / "b"),
    )
    assert first.name == "index.html"
    assert files_of(first.parent) == files_of(second.parent)


def test_a_rebuild_removes_the_pages_of_runs_no_longer_given(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "site"
    build_site([PUBLISHED / "memory"], out)
    (out / "CNAME").write_text("kept")
    build_site([PUBLISHED / "memory" / "memory-copy"], out)
    assert sorted(p.name for p in out.glob("*.html")) == ["index.html", "memory-copy.html"]
    assert not list((out / "img").rglob("*mqar*")) and (out / "CNAME").read_text() == "kept"


def test_text_from_the_runs_is_escaped(tmp_path):
    source = REPO / PUBLISHED / "memory" / "memory-copy" / "quick-seed0"
    run = tmp_path / "results" / "a&b <i>run"
    run.mkdir(parents=True)
    for name in ("run.json", "config.yaml"):
        shutil.copy(source / name, run / name)
    shutil.copytree(source / "plots", run / "plots")
    summary = json.loads((source / "summary.json").read_text())
    summary["metrics"]["<script>alert(1)</script>"] = 1.0
    (run / "summary.json").write_text(json.dumps(summary))
    build_site([tmp_path / "results"], tmp_path / "site")
    page = (tmp_path / "site" / "memory-copy.html").read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<i>run" not in page and "a&amp;b &lt;i&gt;run" in page
    assert (tmp_path / "site" / "img" / "a&b <i>run" / "plots" / "learning_curves.png").is_file()
    assert 'src="img/a%26b%20%3Ci%3Erun/plots/learning_curves.png"' in page


def test_a_path_without_finished_runs_is_a_run_dir_error(tmp_path):
    with pytest.raises(RunDirError, match="no finished runs"):
        build_site([tmp_path], tmp_path / "site")
    with pytest.raises(RunDirError, match="no such directory"):
        build_site([tmp_path / "missing"], tmp_path / "site")
    assert not (tmp_path / "site").exists()


class Links(HTMLParser):
    """Every ``href`` and ``src`` of a page, and its element ids."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[key] for key in ("href", "src") if attrs.get(key)]
        if attrs.get("id"):
            self.ids.add(attrs["id"])


def parse(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text())
    return links


def test_every_link_stays_in_the_site_and_resolves(site):
    """Self-contained: no network address, no absolute path; each file and anchor exists."""
    pages = {p.name: parse(p) for p in site.glob("*.html")}
    for name, links in pages.items():
        for link in links.links:
            if link.startswith("data:"):
                continue
            parts = urlsplit(link)
            assert not parts.scheme and not parts.netloc and not parts.path.startswith("/"), (name, link)
            target = unquote(parts.path) or name
            assert (site / target).is_file(), (name, link)
            if parts.fragment:
                assert parts.fragment in pages[target].ids, (name, link)


# --- in a browser ------------------------------------------------------------------------------
def playwright_or_skip():
    """Playwright's sync API, or skip (fail where ``ENGRAM_REQUIRE_BROWSER=1``) without a browser."""
    reason = ""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "Playwright for Python is not installed (pip install -e '.[test]')"
    if not reason and not CHROMIUM.exists():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if reason:
        if os.environ.get("ENGRAM_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ENGRAM_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return sync_playwright


class PageWatch:
    """What went wrong while a page loaded: console errors, uncaught exceptions, failed requests and
    requests for anything outside the site (stopped before they leave the machine)."""

    def __init__(self, page, *sites: str):
        self.problems: list[str] = []
        self.sites = sites  # URL prefixes of the site (over HTTP, as files)
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))
        page.route("**/*", self.within_site)

    def within_site(self, route):
        if route.request.url.startswith(self.sites):
            route.continue_()
        else:
            self.problems.append(f"left the site: {route.request.url}")
            route.abort()


BROKEN_IMAGES = "els => els.filter(e => !(e.complete && e.naturalWidth > 0)).map(e => e.getAttribute('src'))"


def open_page(page, watch: PageWatch, url: str) -> list[str]:
    """Load ``url`` (images included); returns what went wrong, broken images included."""
    watch.problems.clear()
    page.goto(url, wait_until="load", timeout=60_000)
    broken = page.eval_on_selector_all("img", BROKEN_IMAGES)
    return watch.problems + [f"broken image: {src}" for src in broken]


def column(table, col: int) -> list[str]:
    """A table's column, top to bottom: each cell's sort key, else its text."""
    return table.eval_on_selector_all(
        "tbody tr", f"rows => rows.map(r => r.cells[{col}].getAttribute('data-sort') || r.cells[{col}].textContent)"
    )


def test_site_in_headless_chromium(site):
    """Every page loads with no console error, failed request or broken image; the index shows every
    experiment's name and its headline paper number; a column header sorts its table."""
    sync_playwright = playwright_or_skip()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        experiments = {}
        for group in collect_groups([PUBLISHED]):
            experiments.setdefault(group.name, []).append(group)
    pages = ["index.html", "leaderboards.html", *(f"{name}.html" for name in experiments)]
    with serve(site) as base, sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page()
            watch = PageWatch(page, base, site.as_uri() + "/")
            problems = {name: open_page(page, watch, base + name) for name in pages}
            for name in pages[:3]:  # the index, the leaderboards and one experiment's page, as files
                problems[f"file://{name}"] = open_page(page, watch, (site / name).as_uri())
            assert {name: p for name, p in problems.items() if p} == {}

            page.goto(base + "index.html", wait_until="load")
            text = page.inner_text("main")
            for name, groups in experiments.items():
                assert name in text
                for first in headline(groups).exp.paper[:1]:
                    assert first.label in text, name
                    assert (first.text if first.value is None else f"{first.value:g}") in text, name

            page.goto(base + "leaderboards.html", wait_until="load")
            table = page.query_selector("table.sortable")
            header, before = table.query_selector_all("thead th")[1], column(table, 0)
            header.click()
            up, names_up = [float(v) for v in column(table, 1)], column(table, 0)
            header.click()
            down, names_down = [float(v) for v in column(table, 1)], column(table, 0)
            assert up == sorted(up) and down == sorted(up, reverse=True)
            assert before != names_up or before != names_down
        finally:
            browser.close()

"""``engram report --html DIR``: every published result as one static, self-contained site.

The site shows what ``engram report`` shows, from the same numbers (:func:`engramlab.report.collect_groups`):
an index of the experiments, each with its headline runs' numbers beside the paper's and a status
mark computed from the two, one page per experiment with every group of runs, and the leaderboards
(``leaderboard.json`` files under the paths, as ``engram bench memory`` writes them).

Nothing on it is written by hand, and nothing leaves the folder: one CSS and one JavaScript file
beside the pages (not a copy in each), the plots copied under ``img/``, and every link is relative,
so the folder works from ``file://`` and from any static host (GitHub Pages). The same runs give
byte-identical files (no build time is written), so a checked-in site can be tested for being up to date.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from engramlab.report import Group, PaperRow, collect_groups, command_of, mean_std

# --- the two rules the index states -------------------------------------------------------------
NEAR, FAR = 0.10, 0.25  # a gap within 10 % of the larger magnitude: ✓; within 25 %: ≈; beyond: ✗
MARKS = {"✓": "match", "≈": "near", "✗": "off", "—": "none"}  # mark -> CSS class, in sort order
MARK_WORDS = {
    "✓": f"within {NEAR:.0%} of the paper",
    "≈": f"within {FAR:.0%} of the paper",
    "✗": "further from the paper",
    "—": "nothing to compare",
}

STATUS_RULE = (
    f"✓: ours is within {NEAR:.0%} of the larger magnitude of the two numbers; ≈: within {FAR:.0%}; "
    "✗: further apart; —: the paper states no number, or we did not measure it. Ours is the mean over seeds."
)
HEADLINE_RULE = (
    "An experiment's headline runs are its group of runs with the quick preset and no --set overrides "
    "(every group, when it has none), the one with the most seeds; on a tie, the one whose last run finished "
    "last. The index shows its first paper numbers, in the experiment's order."
)
INDEX_ROWS = 3  # paper numbers per experiment on the index; its page has them all


def status(ours: float | None, paper: float | None) -> str:
    """Our number against the paper's: ✓, ≈ or ✗ by their gap relative to the larger magnitude
    (two zeros match), — when either is missing (see :data:`STATUS_RULE`)."""
    if ours is None or paper is None:
        return "—"
    gap, scale = abs(ours - paper), max(abs(ours), abs(paper))
    if gap <= NEAR * scale:
        return "✓"
    return "≈" if gap <= FAR * scale else "✗"


def row_status(row: PaperRow) -> str:
    """The mark of a paper number against our mean over seeds."""
    return status(statistics.mean(row.ours) if row.ours else None, row.paper.value)


def headline(groups: list[Group]) -> Group:
    """The experiment's group the index shows (:data:`HEADLINE_RULE`); ``groups`` are one experiment's."""
    plain = [g for g in groups if "quick" in g.presets and not g.changes] or groups
    return min(plain, key=lambda g: (-len(g.pooled), -g.finished, groups.index(g)))


# --- building ----------------------------------------------------------------------------------
def build_site(paths: list[Path], out_dir: Path) -> Path:
    """Write the site of the finished runs at or below ``paths`` into ``out_dir``; returns its index.

    A path without finished runs is one :class:`~engramlab.errors.RunDirError` line, as for the
    Markdown report. The files of an earlier build (``*.html`` and ``img/``) are replaced; other files
    in ``out_dir`` are left alone.
    """
    experiments: dict[str, list[Group]] = {}
    for group in collect_groups(paths):
        experiments.setdefault(group.name, []).append(group)
    for name, groups in experiments.items():  # a page opens with its headline runs
        main = headline(groups)
        experiments[name] = [main, *(g for g in groups if g is not main)]
    out_dir = Path(out_dir)
    clear(out_dir)
    site = Site(out_dir, experiments)
    site.write("site.css", CSS.lstrip())  # one copy for every page, beside them (the folder stays self-contained)
    site.write("sort.js", SORT_JS.lstrip())
    for name, exp_groups in experiments.items():
        site.write(f"{name}.html", experiment_page(site, name, exp_groups))
    boards = leaderboards(paths)
    if boards:
        site.write("leaderboards.html", leaderboards_page(site, boards))
    return site.write("index.html", index_page(site, paths, experiments, bool(boards)))


def clear(out_dir: Path) -> None:
    """Remove what an earlier build wrote, so that a run no longer published leaves no page behind."""
    shutil.rmtree(out_dir / "img", ignore_errors=True)
    for page in out_dir.glob("*.html"):
        page.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


class Site:
    """Where pages and images go, and where each run's group is shown (for links to it)."""

    def __init__(self, out_dir: Path, experiments: dict[str, list[Group]]):
        self.out_dir = out_dir
        self.pages = set(experiments)  # experiments with a page
        runs = [s["_dir"] for groups in experiments.values() for g in groups for s in g.summaries]
        self.root = Path(os.path.commonpath([run.resolve().parent for run in runs]))
        self.anchors = {  # run directory as the runs name it -> its group on its experiment's page
            str(s["_dir"]): f"{name}.html#{group_id(i)}"
            for name, groups in experiments.items()
            for i, group in enumerate(groups)
            for s in group.summaries
        }

    def write(self, name: str, text: str) -> Path:
        path = self.out_dir / name
        path.write_text(text, encoding="utf-8")
        return path

    def copy_image(self, source: Path, below: Path | None = None) -> str:
        """Copy an image to ``img/<below>`` (default: its path below the runs' common folder, so a run's
        plot goes to ``img/<experiment folder>/<run>/<plot>``); returns its link."""
        below = below or source.resolve().relative_to(self.root)
        target = self.out_dir / "img" / below
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return quote((Path("img") / below).as_posix())


def group_id(index: int) -> str:
    return f"group-{index + 1}"


# --- pages -------------------------------------------------------------------------------------
def index_page(site: Site, paths: list[Path], experiments: dict[str, list[Group]], has_boards: bool) -> str:
    rows, marks = [], []
    for name, groups in experiments.items():
        main = headline(groups)
        shown = main.paper_rows[:INDEX_ROWS]
        marks += [row_status(row) for row in shown]
        rows.append(index_rows(name, groups, main, shown))
    runs = sum(len(g.summaries) for gs in experiments.values() for g in gs)
    tally = " · ".join(f'<span class="mark {MARKS[m]}">{m}</span> {marks.count(m)}' for m in MARKS)
    body = f"""
<h1>Published results</h1>
<p class="lead">{len(experiments)} experiments, {runs} finished runs under {paths_text(paths)}. Every number
here is read from the runs' <code>summary.json</code>; the papers' numbers are the experiments' own
(<code>Experiment.paper</code>).</p>
{nav(has_boards)}
<dl class="rules" id="rules">
<dt>Status</dt><dd>{escape(STATUS_RULE)}</dd>
<dt>Headline runs</dt><dd>{escape(HEADLINE_RULE)}</dd>
<dt>Ours</dt><dd>Mean ± standard deviation over seeds, one run per seed (when a seed ran twice, the run that
finished last), and how many seeds reported the metric.</dd>
</dl>
<p class="tally">Headline numbers: {tally}</p>
<div class="scroll"><table class="index">
<thead><tr><th>experiment</th><th>headline runs</th><th>paper's number</th><th>paper</th><th>ours</th>
<th>status</th></tr></thead>
<tbody>
{"".join(rows)}</tbody></table></div>"""
    return page("Published results", body)


def index_rows(name: str, groups: list[Group], main: Group, shown: list[PaperRow]) -> str:
    """One experiment: its cells span one row per paper number shown."""
    exp, n = main.exp, max(len(shown), 1)
    runs = sum(len(g.summaries) for g in groups)
    more = len(main.paper_rows) - len(shown)
    first = (
        f'<td rowspan="{n}" class="exp"><a href="{escape(name)}.html">{escape(name)}</a>'
        f'<div class="desc">{escape(exp.description)}</div>'
        f'<div class="small">{len(groups)} group{"s" * (len(groups) > 1)} of runs, {runs} run{"s" * (runs > 1)}'
        + (f'; <a href="{name}.html#{group_id(groups.index(main))}">{more} more paper numbers</a>' if more else "")
        + "</div></td>"
        f'<td rowspan="{n}"><a href="{name}.html#{group_id(groups.index(main))}">{escape(group_title(main))}</a>'
        f'<div class="small">{escape(main.counts())}</div></td>'
    )
    if not shown:
        return f'<tr>{first}<td colspan="4" class="small">the paper states no number for this experiment</td></tr>\n'
    cells = [paper_cells(row) for row in shown]
    return "".join(f"<tr>{first if i == 0 else ''}{c}</tr>\n" for i, c in enumerate(cells))


def paper_cells(row: PaperRow) -> str:
    """Label, the paper's number, ours (with its seed count) and the status mark."""
    return (
        f"<td>{escape(row.paper.label)}</td>"
        f"<td>{theirs_html(row)}</td>"
        f"<td{sort_attr(statistics.mean(row.ours) if row.ours else None)}>{ours_html(row.ours)}</td>"
        f"{mark_cell(row_status(row))}"
    )


def experiment_page(site: Site, name: str, groups: list[Group]) -> str:
    exp, main = groups[0].exp, headline(groups)
    toc = "".join(
        f'<li><a href="#{group_id(i)}">{escape(group_title(g))}</a> <span class="small">({escape(g.counts())})</span>'
        + (' <span class="badge">headline</span>' if g is main else "")
        + "</li>"
        for i, g in enumerate(groups)
    )
    sections = "".join(group_section(site, i, g, g is main) for i, g in enumerate(groups))
    body = f"""
<p class="crumbs"><a href="index.html">← all results</a></p>
<h1>{escape(name)}</h1>
<p class="lead">{escape(exp.description)}</p>
<p>{len(groups)} group{"s" * (len(groups) > 1)} of runs: runs of one group share their resolved config and
differ only by seed. Status marks: <a href="index.html#rules">the rules</a>.</p>
<ol class="toc">{toc}</ol>
{sections}"""
    return page(name, body)


def group_section(site: Site, index: int, group: Group, is_headline: bool) -> str:
    parts = [
        f'<section id="{group_id(index)}"><h2>{escape(group_title(group))}'
        + (' <span class="badge">headline</span>' if is_headline else "")
        + f'</h2><p class="small">{escape(group.counts())}</p>',
        duplicates_html(group),
        bullet_list("Deviations from the paper", group.deviations),
        paper_table(group),
        seeds_table(group),
        runs_table(group),
        f"<p>Wall time per run: {escape(group.wall_time())}.</p>",
        plots_html(site, group),
        "</section>\n",
    ]
    return "\n".join(part for part in parts if part)


def group_title(group: Group) -> str:
    """The Markdown report's heading without the experiment: preset names, overrides, maybe the config."""
    return "preset " + " = ".join(group.presets) + group.variant()


def duplicates_html(group: Group) -> str:
    lines = [
        f"seed {seed}: {', '.join(str(s['_dir']) for s in runs)}; used: {runs[-1]['_dir']} (finished last)"
        for seed, runs in group.duplicates.items()
    ]
    return bullet_list("Duplicate seeds, not pooled: one run per seed enters the mean ± std", lines)


def bullet_list(title: str, lines: list[str]) -> str:
    if not lines:
        return ""
    items = "".join(f"<li>{escape(line)}</li>" for line in lines)
    return f"<h3>{escape(title)}</h3><ul>{items}</ul>"


def paper_table(group: Group) -> str:
    rows = "".join(
        f"<tr>{paper_cells(row)}<td>{escape(row.paper.source)}</td><td><code>{escape(row.paper.key)}</code></td></tr>"
        for row in group.paper_rows
    )
    if not rows:
        return ""
    head = "<th>metric</th><th>paper</th><th>ours (mean ± std)</th><th>status</th><th>source</th><th>key</th>"
    return f"<h3>Paper and ours</h3>{table(head, rows)}"


def seeds_table(group: Group) -> str:
    """Every metric of the pooled runs: mean ± std and each seed's value (the paper's metrics first)."""
    paper_keys = [row.paper.key for row in group.paper_rows if row.ours]
    keys = list(dict.fromkeys(paper_keys + list(group.per_seed)))
    runs = sorted(group.pooled, key=lambda s: s["seed"])
    head = "<th>metric</th><th>mean ± std</th>" + "".join(
        f'<th>seed {s["seed"]}<br><span class="small">{escape(s["_dir"].name)}</span></th>' for s in runs
    )
    rows = "".join(
        f"<tr><td><code>{escape(key)}</code></td>"
        f"<td{sort_attr(statistics.mean(group.values(key)))}>{escape(mean_std(group.values(key)))}</td>"
        + "".join(number_cell(group.per_seed[key].get(s["seed"])) for s in runs)
        + "</tr>"
        for key in keys
    )
    opened = " open" if len(keys) <= 20 else ""
    return (
        f"<details{opened}><summary>All {len(keys)} metrics, per seed</summary>"
        f'<p class="small">Runs: {", ".join(escape(str(s["_dir"])) for s in runs)}</p>{table(head, rows)}</details>'
    )


def runs_table(group: Group) -> str:
    """Each run's directory with the command that makes it again, when it finished and how long it took."""
    pooled = {id(s) for s in group.pooled}
    rows = "".join(
        f"<tr><td{sort_attr(s['seed'])}>{s['seed']}</td><td><code>{escape(str(s['_dir']))}</code>"
        + ("" if id(s) in pooled else ' <span class="small">(not pooled: its seed ran again)</span>')
        + f'<code class="cmd">{escape(command_of(s))}</code></td>'
        f'<td class="num">{escape(s.get("finished") or "?")}</td>'
        f"<td{sort_attr(s['wall_time_s'] / 60)}>{s['wall_time_s'] / 60:.1f}</td></tr>"
        for s in sorted(group.summaries, key=lambda s: (s["seed"], str(s["_dir"])))
    )
    head = "<th>seed</th><th>run directory and command</th><th>finished</th><th>minutes</th>"
    return f"<h3>Runs and the commands that reproduce them</h3>{table(head, rows)}"


def plots_html(site: Site, group: Group) -> str:
    """Every plot the pooled runs list in their summary.json that exists, copied into the site; one
    plot's seeds side by side."""
    runs = sorted(group.pooled, key=lambda s: s["seed"])
    names = dict.fromkeys(plot for s in runs for plot in s.get("plots", []))
    figures = [figure(site, s, plot) for plot in names for s in runs if plot in s.get("plots", [])]
    figures = [f for f in figures if f]
    return f'<h3>Plots</h3><div class="plots">{"".join(figures)}</div>' if figures else ""


def figure(site: Site, summary: dict[str, Any], plot: str) -> str:
    """One run's plot, or "" when its file is missing (or lies outside the run)."""
    run = summary["_dir"]
    source = run / plot
    if not source.is_file() or not source.resolve().is_relative_to(run.resolve()):
        return ""
    link, caption = site.copy_image(source), f"seed {summary['seed']} · {run.name}/{plot}"
    return (
        f'<figure><a href="{escape(link)}"><img src="{escape(link)}" alt="{escape(caption)}" '
        f'loading="eager"></a><figcaption>{escape(caption)}</figcaption></figure>'
    )


# --- leaderboards ------------------------------------------------------------------------------
def leaderboards(paths: list[Path]) -> list[tuple[Path, list[dict[str, Any]]]]:
    """The ``leaderboard.json`` files at or below ``paths`` (``engram bench``'s rows), in path order."""
    files = set()
    for path in map(Path, paths):
        files |= {path} if path.name == "leaderboard.json" else set(path.rglob("leaderboard.json"))
    return [(f, json.loads(f.read_text())) for f in sorted(files)]


def leaderboards_page(site: Site, boards: list[tuple[Path, list[dict[str, Any]]]]) -> str:
    sections = "".join(leaderboard_section(site, path, rows) for path, rows in boards)
    body = f"""
<p class="crumbs"><a href="index.html">← all results</a></p>
<h1>Leaderboards</h1>
<p class="lead">Each experiment's headline metric for every model, mean ± std over seeds. Click a column's
header to sort by it; click again to reverse.</p>
{sections}"""
    return page("Leaderboards", body)


def leaderboard_section(site: Site, path: Path, rows: list[dict[str, Any]]) -> str:
    from engramlab.experiments.memory.plots import METRIC_WORDS

    parts = [f'<section><h2>{escape(path.parent.name)}</h2><p class="small">{escape(str(path))}</p>']
    picture = path.with_name("leaderboard.png")
    if picture.is_file():
        link = site.copy_image(picture, Path("leaderboards") / path.parent.name / picture.name)
        parts.append(f'<figure class="wide"><img src="{escape(link)}" alt="leaderboard" loading="eager"></figure>')
    for name in dict.fromkeys(r["experiment"] for r in rows):
        exp_rows = [r for r in rows if r["experiment"] == name]
        metric = exp_rows[0]["metric"]
        title = f'<a href="{escape(name)}.html">{escape(name)}</a>' if name in site.pages else escape(name)
        parts.append(f"<h3>{title} ({escape(METRIC_WORDS.get(metric, metric))})</h3>")
        parts.append(leaderboard_table(site, exp_rows))
    return "\n".join(parts) + "</section>\n"


def leaderboard_table(site: Site, rows: list[dict[str, Any]]) -> str:
    settings = list(dict.fromkeys(s for r in rows for s in r["settings"]))
    head = (
        "<th>model</th>"
        + "".join(f"<th>{escape(s)}</th>" for s in settings)
        + "<th>parameters</th><th>train time (s)</th><th>steps/s</th><th>seeds</th>"
    )
    body = "".join(
        f"<tr><td>{escape(r['memory'])}</td>"
        + "".join(spread_cell(r["settings"].get(s, [])) for s in settings)
        + number_cell(r.get("parameters"), "{:,.0f}")
        + spread_cell(r.get("train_wall_time_s", []), 0)
        + spread_cell(r.get("steps_per_s", []), 1)
        + f"<td>{runs_links(site, r)}</td></tr>"
        for r in rows
    )
    return table(head, body)


def runs_links(site: Site, row: dict[str, Any]) -> str:
    """The row's seeds, each a link to the group of its run where the site shows it."""
    links = []
    for seed, run in zip(row.get("seeds", []), row.get("runs", [])):
        target = site.anchors.get(str(run))
        links.append(f'<a href="{escape(target)}">{seed}</a>' if target else escape(str(seed)))
    return ", ".join(links)


# --- small pieces ------------------------------------------------------------------------------
def paths_text(paths: Iterable[Path]) -> str:
    return ", ".join(f"<code>{escape(str(p))}</code>" for p in paths)


def nav(has_boards: bool) -> str:
    return '<p class="nav"><a href="leaderboards.html">Leaderboards</a></p>' if has_boards else ""


def table(head: str, rows: str) -> str:
    """A table whose column headers sort its rows on click (the page's script)."""
    sortable = f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
    return f'<div class="scroll">{sortable}</div>'


def sort_attr(value: float | None) -> str:
    return "" if value is None else f' data-sort="{value!r}"'


def number_cell(value: float | None, form: str = "{:.4f}") -> str:
    return f"<td{sort_attr(value)}>{'—' if value is None else escape(form.format(value))}</td>"


def spread_cell(values: list[float], digits: int = 4) -> str:
    if not values:
        return "<td>—</td>"
    return f"<td{sort_attr(statistics.mean(values))}>{escape(mean_std(values, digits))}</td>"


def ours_html(values: list[float]) -> str:
    if not values:
        return '<span class="small">not measured</span>'
    seeds = f'<div class="small">{len(values)} seed{"s" * (len(values) > 1)}</div>'
    return f'<span class="num">{escape(mean_std(values))}</span>{seeds}'


def theirs_html(row: PaperRow) -> str:
    paper = row.paper
    if paper.value is None:
        return f'<span class="words">{escape(paper.text)}</span>'
    words = f' <span class="small">({escape(paper.text)})</span>' if paper.text else ""
    return f"<b>{paper.value:g}</b>{words}"


def mark_cell(mark: str) -> str:
    rank = list(MARKS).index(mark)
    return f'<td data-sort="{rank}" class="mark {MARKS[mark]}" title="{MARK_WORDS[mark]}">{mark}</td>'


def page(title: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · engramlab results</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="site.css">
</head>
<body>
<main>{body}
</main>
<footer>Generated by <code>engram report --html</code> from the runs' files; nothing here is written by hand.</footer>
<script src="sort.js"></script>
</body>
</html>
"""


CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg2: #f6f8fa; --link: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.45;
  font: 15px/1.45 -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 8px; }
footer { max-width: 1180px; margin: 0 auto; padding: 12px 28px 32px; color: var(--muted); font-size: 13px; }
h1 { font-size: 28px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 36px 0 4px; padding-top: 12px; border-top: 1px solid var(--line); }
h3 { font-size: 15px; margin: 20px 0 6px; }
a { color: var(--link); text-decoration: none; }
a:hover { text-decoration: underline; }
code { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--bg2);
  padding: 1px 4px; border-radius: 4px; }
code.cmd { display: block; margin-top: 4px; white-space: pre-wrap; overflow-wrap: anywhere; background: #eef1f4; }
.lead { font-size: 16px; color: var(--muted); max-width: 860px; }
.small, .desc { color: var(--muted); font-size: 13px; }
.desc { margin: 2px 0; max-width: 420px; }
.nav, .crumbs { margin: 8px 0 16px; }
.tally { font-size: 15px; }
.badge { font-size: 12px; font-weight: 600; color: #fff; background: #1a7f37; border-radius: 10px;
  padding: 1px 8px; vertical-align: middle; }
.scroll { overflow-x: auto; margin: 6px 0 12px; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 5px 9px; text-align: left; vertical-align: top; }
th { background: var(--bg2); font-weight: 600; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
table.index td.exp { min-width: 260px; }
table.index td.exp > a { font-weight: 600; font-size: 15px; }
table.sortable th { cursor: pointer; user-select: none; white-space: nowrap; }
table.sortable th::after { content: " ↕"; color: #aab4be; font-size: 12px; }
table.sortable th[aria-sort="ascending"]::after { content: " ▲"; color: var(--fg); }
table.sortable th[aria-sort="descending"]::after { content: " ▼"; color: var(--fg); }
td.mark, span.mark { font-weight: 700; text-align: center; }
.mark.match { color: #1a7f37; } .mark.near { color: #9a6700; } .mark.off { color: #cf222e; }
.mark.none { color: #8c959f; }
.words { font-style: italic; }
dl.rules { background: var(--bg2); border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px;
  font-size: 14px; display: grid; grid-template-columns: max-content 1fr; gap: 4px 14px; }
dl.rules dt { font-weight: 600; }
dl.rules dd { margin: 0; }
.num { white-space: nowrap; }
ol.toc li { margin: 2px 0; }
details { margin: 10px 0; }
summary { cursor: pointer; font-weight: 600; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 14px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 6px; background: #fff; }
figure img { display: block; width: 100%; height: auto; }
figure.wide { max-width: 100%; margin: 8px 0; }
figcaption { font-size: 12px; color: var(--muted); margin-top: 4px; word-break: break-all; }
"""

# Sorts a table's body rows by the clicked column: numbers by value (a cell's data-sort, else its text),
# then text; empty and "—" cells last. A second click reverses the order.
SORT_JS = """
(function () {
  function key(row, col) {
    var cell = row.cells[col];
    if (!cell) return null;
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (raw === "" || raw === "\\u2014") return null;
    var num = Number(raw);
    return isFinite(num) ? num : raw.toLowerCase();
  }
  function compare(a, b) {
    if (a === b) return 0;
    if (typeof a !== typeof b) return typeof a === "number" ? -1 : 1;
    return a < b ? -1 : 1;
  }
  function sortBy(table, th, col) {
    var body = table.tBodies[0];
    var down = th.getAttribute("aria-sort") === "ascending";
    var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
      return { row: row, key: key(row, col), i: i };
    });
    rows.sort(function (a, b) {
      if (a.key === null || b.key === null) return (a.key === null) - (b.key === null) || a.i - b.i;
      return (down ? -1 : 1) * compare(a.key, b.key) || a.i - b.i;
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) { cell.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", down ? "descending" : "ascending");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.title = "sort by this column";
      th.addEventListener("click", function () { sortBy(table, th, col); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th, col); }
      });
    });
  });
})();
"""

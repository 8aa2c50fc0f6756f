"""Fuzz of the command line's config handling: bad ``--set KEY=VALUE`` pairs against every experiment.

Every pair is certainly invalid, whatever the other keys hold: a value of the wrong type or out of its
field's bounds, malformed YAML, an unknown key, a key below a leaf, a section given a value, a key
with an empty part, no ``=`` at all. The pairs are derived from the config schema (the pydantic models
of ``engramlab.experiments.REGISTRY``), so new experiments and keys are fuzzed without a change here.
Each must end ``engram run`` with exit status 2 and one ``engram: error: ...`` line on stderr, with no
traceback and nothing written under ``--out``; a run that starts anyway fails the test at once.
Hypothesis draws ``EXAMPLES`` pairs per experiment, the same ones on every run (``derandomize``);
``pytest --hypothesis-show-statistics`` shows how many of each kind. Besides, every key of every
experiment is tried once, and the cases of issue #19 (and those the fuzz found) are written out.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import operator
import os
import re
import string
import tempfile
import typing
from pathlib import Path
from typing import Any

import annotated_types as at
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from engramlab import cli
from engramlab.config import Config, config_class, parse_value
from engramlab.engine import rundir, runner
from engramlab.experiments import REGISTRY

EXAMPLES = 100  # per experiment
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):  # hypothesis caches constants of our sources: not in the repo
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "engramlab-hypothesis")
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same examples on every run and machine
    database=None,  # nothing written into the repository
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# ---------------------------------------------------------------------------------------------
# the command line, with every way into a run closed


class RunStarted(Exception):
    """Not an EngramError, so the command line lets it through: a bad pair was accepted."""


def refuse(*args, **kwargs):
    raise RunStarted("a run started: the --set pair was accepted as valid")


@pytest.fixture(scope="module", autouse=True)
def no_runs():
    """A pair that passes config validation fails the test before any data is read or a directory made."""
    with pytest.MonkeyPatch.context() as mp:
        for name in REGISTRY:  # prepare runs first, and may read data sets
            mp.setattr(type(REGISTRY.experiment(name)), "prepare", refuse)
        mp.setattr(rundir, "new_run_dir", refuse)
        mp.setattr(runner, "run_experiment", refuse)
        yield


def engram_run(experiment: str, pair: str, out: Path) -> tuple[int, str]:
    """``engram run EXPERIMENT --out OUT --set PAIR`` in this process: (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = cli.main(["run", experiment, "--out", str(out), "--set", pair])
        except SystemExit as exc:  # argparse's own usage errors, e.g. a pair that starts with '--'
            status = exc.code
    return status, err.getvalue()


ERROR_LINE = re.compile(r"engram( run)?: error: ")  # ours, or argparse's (e.g. a pair that starts with '-')


def assert_one_clean_error(experiment: str, pair: str, out: Path) -> str:
    status, stderr = engram_run(experiment, pair, out)
    lines = stderr.splitlines()
    context = f"engram run {experiment} --set {pair!r}: exit {status}, stderr:\n{stderr}"
    assert status == 2, context
    assert 1 <= len(lines) <= 3 and "Traceback" not in stderr, context
    assert sum(bool(ERROR_LINE.match(line)) for line in lines) == 1, context
    assert not any(out.iterdir()), f"{context}\nwritten: {sorted(out.rglob('*'))}"
    return stderr


# ---------------------------------------------------------------------------------------------
# the schema


def fields(cls: type[Config], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, pydantic FieldInfo) of every field of ``cls`` at any depth, sections included."""
    rows = []
    for name, field in cls.model_fields.items():
        rows.append((prefix + name, field))
        if (sub := config_class(field.annotation)) is not None:
            rows += fields(sub, f"{prefix}{name}.")
    return rows


def sections(cls: type[Config]) -> list[tuple[str, type[Config]]]:
    """(dotted key, class) of the top level ('') and every section."""
    return [("", cls)] + [(key, config_class(f.annotation)) for key, f in fields(cls) if config_class(f.annotation)]


def split_optional(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return annotation, False


# ---------------------------------------------------------------------------------------------
# values that no field of a type accepts: each strategy draws Python values, written as text by ``as_text``

WORD = st.text(string.ascii_lowercase + "_", max_size=8).map(lambda s: "x" + s)  # never a number, bool or null
# key names: identifiers, and text with line breaks, control and YAML characters (an error must stay one line)
NASTY = "ab_- \n\r\t\x00\x0b\x1b\x85\u2028'\"{[:#"
NAME = st.one_of(
    st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True),
    st.text(NASTY, min_size=1, max_size=6),
    st.text(max_size=10),
).filter(lambda s: s and s == s.strip() and not {".", "="} & set(s))
MAPPING_KEYS = st.one_of(NAME, st.integers(), st.none(), st.booleans())  # YAML keys need not be strings
NON_INTEGRAL = st.integers(-(10**6), 10**6).map(lambda i: i + 0.5)
NON_FINITE = st.sampled_from([math.inf, -math.inf, math.nan])
SMALL_INTS = st.integers(-(10**9), 10**9)
LISTS = st.lists(st.integers(0, 9), max_size=3)
MAPPINGS = st.dictionaries(WORD, st.integers(0, 9), max_size=2)


class Raw(str):
    """Text given as it is after the '=': malformed YAML, which ``parse_value`` keeps as a string, or a number
    too large to write otherwise; inside a list or mapping it becomes a plain string."""


MALFORMED = st.sampled_from(["[1,", "{a: 1", "[a, {b", "a: b: c", "{[1]: 2}", "'open", "]"]).map(Raw)
TOO_DEEP = st.just(Raw("[" * 600 + "]" * 600))  # deeper than YAML's reader recurses (at Python's default limit)
TOO_LONG = st.just(Raw("[" + "1" * 5000 + "]"))  # an integer longer than Python reads from text


class NumberText(Raw):
    """A number as text: inside a list or mapping, as a string, a field of numbers could read it."""


INFINITE = st.just(NumberText("9" * 5000))  # read as a float: inf
HUGE = st.just(NumberText("0x" + "f" * 5000))  # read as an integer of 20000 bits (too many digits to print)
UNREADABLE = st.one_of(MALFORMED, TOO_DEEP, TOO_LONG)  # text that only a string field takes

BOUND_CHECKS = {
    at.Gt: ("gt", operator.gt),
    at.Ge: ("ge", operator.ge),
    at.Lt: ("lt", operator.lt),
    at.Le: ("le", operator.le),
}


def out_of_bounds(field, integer: bool) -> list[st.SearchStrategy]:
    """Numbers that break one bound of ``field``, each checked against the bound as pydantic checks it."""
    out = []
    for meta in field.metadata:
        for cls, (attr, check) in BOUND_CHECKS.items():
            if not isinstance(meta, cls):
                continue
            limit = getattr(meta, attr)
            below = cls in (at.Gt, at.Ge)  # a lower bound is broken below it, an upper one above
            if integer:
                edges = {at.Gt: math.floor(limit), at.Ge: math.ceil(limit) - 1, at.Lt: math.ceil(limit)}
                edge = edges.get(cls, math.floor(limit) + 1)  # the first integer past the limit
                numbers = st.integers(max_value=edge) if below else st.integers(min_value=edge)
            else:
                side = {"max_value" if below else "min_value": limit, "allow_nan": False}
                numbers = st.floats(**side, exclude_max=cls is at.Ge, exclude_min=cls is at.Le)
            out.append(numbers.filter(lambda x, limit=limit, check=check: not check(x, limit)))
    return out


def min_length(field) -> int:
    return max([meta.min_length for meta in field.metadata if isinstance(meta, at.MinLen)], default=0)


def bad_values(annotation: Any, field=None) -> st.SearchStrategy:
    """Python values (or raw texts, see :class:`Raw`) that a field of this type and bounds never accepts."""
    base, optional = split_optional(annotation)
    nulls = [] if optional else [st.none()]
    origin, args = typing.get_origin(base), typing.get_args(base)
    capped = field is not None and any(isinstance(meta, (at.Lt, at.Le)) for meta in field.metadata)
    if (section := config_class(base)) is not None:
        return st.one_of(*nulls, SMALL_INTS, WORD, LISTS, UNREADABLE, HUGE, bad_section(section))
    if base is bool:
        ints = SMALL_INTS.filter(lambda i: i not in (0, 1))
        return st.one_of(*nulls, ints, NON_INTEGRAL, WORD, LISTS, MAPPINGS, UNREADABLE, INFINITE, HUGE)
    if base is int:
        numbers = out_of_bounds(field, integer=True) if field is not None else []
        big = [INFINITE] + [HUGE] * capped
        return st.one_of(*nulls, *numbers, *big, NON_INTEGRAL, NON_FINITE, WORD, LISTS, MAPPINGS, UNREADABLE)
    if base is float:
        numbers = out_of_bounds(field, integer=False) if field is not None else []
        nan = [st.just(math.nan)] if numbers else []  # NaN breaks every bound
        big = [INFINITE, HUGE] if capped else []
        return st.one_of(*nulls, *numbers, *nan, *big, WORD, LISTS, MAPPINGS, UNREADABLE)
    if base is str:  # not numbers: a string key might one day read '2024' as a name
        return st.one_of(*nulls, LISTS, MAPPINGS)
    if origin is typing.Literal:
        others = st.one_of(WORD, SMALL_INTS).filter(lambda v: v not in args and str(v) not in map(str, args))
        return st.one_of(*nulls, others, LISTS, MAPPINGS, UNREADABLE, INFINITE, HUGE)
    if origin is tuple and args[-1] is not Ellipsis:
        size = len(args)
        wrong_size = st.lists(st.integers(0, 9), max_size=size + 2).filter(lambda v: len(v) != size)
        bad_item = st.sampled_from(range(size)).flatmap(
            lambda i: bad_item_values(args[i]).map(lambda v: [1] * i + [v] + [1] * (size - i - 1))
        )  # the other items are 1, which a tuple of numbers or booleans takes; a string item refuses it
        return st.one_of(*nulls, wrong_size, bad_item, SMALL_INTS, WORD, UNREADABLE, INFINITE, HUGE)
    if origin in (list, tuple):
        too_short = [st.just([])] if field is not None and min_length(field) > 0 else []
        bad_item = st.lists(bad_item_values(args[0]), min_size=1, max_size=2)
        return st.one_of(*nulls, *too_short, bad_item, SMALL_INTS, WORD, MAPPINGS, UNREADABLE, INFINITE, HUGE)
    if origin is dict:
        inner = [st.dictionaries(WORD, bad_item_values(args[1]), min_size=1, max_size=1)] if args[1] is not Any else []
        return st.one_of(*nulls, *inner, SMALL_INTS, WORD, LISTS, UNREADABLE, INFINITE, HUGE)
    raise NotImplementedError(f"no bad values for {annotation!r}: teach bad_values this type")


def bad_item_values(annotation: Any, field=None) -> st.SearchStrategy:
    """Items of a list, tuple or mapping that its item type refuses (raw texts become plain strings in them)."""
    return bad_values(annotation, field).filter(lambda v: not isinstance(v, NumberText)).map(plain)


def bad_section(cls: type[Config]) -> st.SearchStrategy:
    """A mapping given to a section: one unknown key, or one key (at any depth) with a bad value."""
    leaves = {key: field for key, field in fields(cls) if config_class(field.annotation) is None}
    unknown = MAPPING_KEYS.filter(lambda name: name not in cls.model_fields).map(lambda name: {name: 1})
    known = st.sampled_from(sorted(leaves)).flatmap(
        lambda key: bad_item_values(leaves[key].annotation, leaves[key]).map(lambda v: nested(key, v))
    )
    return st.one_of(unknown, known)


def plain(value: Any) -> Any:
    return str(value) if isinstance(value, Raw) else value


def nested(dotted: str, value: Any) -> dict[str, Any]:
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def as_text(value: Any) -> str:
    """The text after '=' that ``parse_value`` reads back as ``value``."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (int, float)):
        return repr(value)  # round-trips, nan and inf included
    if isinstance(value, str):
        return value  # the words are plain YAML strings
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=math.inf).strip()


# ---------------------------------------------------------------------------------------------
# bad pairs


@functools.cache
def bad_pairs(experiment: str) -> st.SearchStrategy:
    """Strategy of (kind of case, the key the error must name or None, KEY=VALUE text) for one experiment."""
    exp = REGISTRY.experiment(experiment)
    every = dict(fields(exp.Config))
    leaves = sorted(key for key, field in every.items() if config_class(field.annotation) is None)
    section_keys = sorted(key for key, field in every.items() if config_class(field.annotation) is not None)

    def bad_pair(kind: str, keys: list[str]) -> st.SearchStrategy:
        return st.sampled_from(keys).flatmap(
            lambda key: bad_values(every[key].annotation, every[key]).map(lambda v: (kind, key, f"{key}={as_text(v)}"))
        )

    leaf_value, section_value = bad_pair("leaf value", leaves), bad_pair("section value", section_keys)
    unknown_key = st.sampled_from(sections(exp.Config)).flatmap(
        lambda sc: NAME.filter(lambda name, cls=sc[1]: name not in cls.model_fields).map(
            lambda name, prefix=sc[0]: ("unknown key", None, f"{prefix}{'.' * bool(prefix)}{name}=1")
        )
    )
    # a key below a leaf makes the leaf a mapping; a mapping-valued leaf could take it, so those are left out
    scalar_leaves = [key for key in leaves if typing.get_origin(split_optional(every[key].annotation)[0]) is not dict]
    below_leaf = st.tuples(st.sampled_from(scalar_leaves), NAME, st.integers(0, 9)).map(
        lambda t: ("key below a leaf", t[0], f"{t[0]}.{t[1]}={t[2]}")
    )
    empty_part = st.tuples(st.sampled_from(sorted(every)), st.integers(0, 3), st.sampled_from(["", " "])).map(
        lambda t: (
            "empty or blank key part",
            None,
            ".".join(t[0].split(".")[: t[1]] + [""] + t[0].split(".")[t[1] :]) + "=1",
        )
    )
    no_key = st.one_of(
        st.text(max_size=12).filter(lambda s: "=" not in s),  # no '=' at all
        st.text(" \t", max_size=3).map(lambda s: s + "=1"),  # nothing before it
    ).map(lambda text: ("not key=value", None, text))
    cases = [leaf_value, leaf_value, leaf_value, section_value, unknown_key, below_leaf, empty_part, no_key]
    if exp.renamed_keys:  # keys renamed since older runs: the error gives the new name
        renamed = st.sampled_from(sorted(exp.renamed_keys))
        cases.append(renamed.map(lambda key: ("renamed key", exp.renamed_keys[key], f"{key}=1")))
    return st.one_of(cases)


@pytest.fixture(scope="module")
def out_dirs(tmp_path_factory):
    return {name: tmp_path_factory.mktemp(name) for name in REGISTRY}


@pytest.mark.parametrize("experiment", list(REGISTRY))
@FUZZ
@given(data=st.data())
def test_a_bad_set_pair_is_one_error_line_and_writes_nothing(experiment, out_dirs, data):
    kind, key, pair = data.draw(bad_pairs(experiment), label="case")
    event(kind)  # pytest --hypothesis-show-statistics counts the kinds of cases
    stderr = assert_one_clean_error(experiment, pair, out_dirs[experiment])
    assert key is None or key in stderr, f"the error does not name {key}: {stderr}"


@pytest.mark.parametrize("experiment", list(REGISTRY))
def test_every_key_refuses_a_value_of_the_wrong_shape(experiment, out_dirs):
    """Each key once, so that no key is left to chance: a mapping for a section or a leaf (a mapping of
    mappings gets a number)."""
    for key, field in fields(REGISTRY.experiment(experiment).Config):
        mapping_of_mappings = typing.get_origin(split_optional(field.annotation)[0]) is dict
        pair = f"{key}={as_text(3 if mapping_of_mappings else {'xa': [1]})}"
        stderr = assert_one_clean_error(experiment, pair, out_dirs[experiment])
        assert key in stderr, f"the error does not name {key}: {stderr}"


# ---------------------------------------------------------------------------------------------
# the generator itself, and the cases of the issue


@FUZZ
@given(data=st.data())
def test_the_generated_texts_read_back_as_the_values_meant(data):
    experiment = data.draw(st.sampled_from(list(REGISTRY)))
    key, field = data.draw(st.sampled_from(fields(REGISTRY.experiment(experiment).Config)))
    value = data.draw(bad_values(field.annotation, field))
    read = parse_value(as_text(value))
    if not isinstance(value, Raw) or len(value) < 1000:  # a deep nesting is read as the text itself
        assert repr(read) == repr(plain(value)), (key, value, read)  # repr: NaN equals NaN, 1 differs from 1.0


@pytest.mark.parametrize(
    "pair, message",
    [
        ("model.hidden=abc", "invalid value for model.hidden: 'abc' (allowed: an integer >= 1)"),
        ("task.train_k=[1,", "invalid value for task.train_k: '[1,' (allowed: a list [integer, integer])"),
        ("methods=[nosuch]", "invalid value for methods[0]: 'nosuch' (allowed: a list of 'pondernet', 'act'"),
        ("train.steps=-1", "invalid value for train.steps: -1 (allowed: an integer >= 1)"),
        (
            "nosuch.key=1",
            "unknown config key 'nosuch' (keys in the top level: eval, methods, model, seed, task, train)",
        ),
        ("model=3", "invalid value for model: 3 ('model' is a section: set one of its keys, e.g. --set model.step="),
        ("=1", "--set expects key=value (for example model.halting.lambda_p=0.1), got '=1'"),
        ("keyonly", "--set expects key=value (for example model.halting.lambda_p=0.1), got 'keyonly'"),
        # found by the fuzz: each was a traceback or more than one line
        ("train={1: 2}", "unknown config key 'train.1' (keys in 'train': "),
        ("model={halting: {3: 1}}", "unknown config key 'model.halting.3'"),
        ("train.steps=[" + "1" * 5000 + "]", "invalid value for train.steps: '[1111"),
        ("train.steps=" + "[" * 600 + "]" * 600, "invalid value for train.steps: '[[[["),
        ("model.halting.max_steps=0x" + "f" * 5000, "model.halting.max_steps: <int too large to show>"),
        ("mo\ndel=1", r"unknown config key 'mo\ndel'"),
        ("model..hidden=1", "--set 'model..hidden': a key is names joined by single dots, none empty"),
        ("model.hidden.x=1", "invalid value for model.hidden: {'x': 1} (allowed: an integer >= 1)"),
        ("model={halting.max_steps: 3}", "(inside a mapping, nest the keys: {a: {b: 1}}, not {a.b: 1})"),
        # numbers are finite: an infinite learning rate or a NaN prior would only show up as a NaN loss
        ("train.lr=inf", "invalid value for train.lr: inf (allowed: a number > 0)"),
        ("model.halting.lambda_p=.nan", "invalid value for model.halting.lambda_p: nan"),
    ],
)
def test_the_issues_cases_give_one_line_that_names_key_value_and_what_is_allowed(pair, message, tmp_path):
    stderr = assert_one_clean_error("pondernet-parity", pair, tmp_path)
    assert stderr.count("\n") == 1 and message in stderr, stderr
    assert len(stderr) < 400, "values are cut, not printed whole"


@pytest.mark.parametrize(
    "experiment, pair, message",
    [
        # an error message from an experiment's own check that holds the user's text keeps to one line
        ("memory-copy", 'methods=["a\\nb"]', r"invalid config: methods: unknown memory kind 'a\nb'"),
        ("memory-copy", 'eval.settings={"x\\ny": {nosuch: 1}}', r"invalid config: eval.settings.x\ny: nosuch:"),
        # a field's own check names the key and the value
        ("memn2n-babi", "task.tasks=[0]", "invalid value for task.tasks: [0] (tasks must be distinct numbers"),
        ("generalist", "data.tasks=[cartpol]", "invalid value for data.tasks: ['cartpol'] (unknown control task"),
    ],
)
def test_errors_of_the_experiments_own_checks_are_one_line(experiment, pair, message, tmp_path):
    stderr = assert_one_clean_error(experiment, pair, tmp_path)
    assert stderr.count("\n") == 1 and message in stderr, stderr

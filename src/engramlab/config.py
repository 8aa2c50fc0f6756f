"""Typed configs: pydantic models, presets, `--set key=value` overrides and YAML.

Every experiment's config is a tree of :class:`Config` models. A run's config is resolved as
defaults <- preset <- ``--set`` overrides, validated once, and saved as YAML in the run directory.
Validation errors become one :class:`~engramlab.errors.ConfigError` line that names the key, the
value and what is allowed.
"""

from __future__ import annotations

import copy
import difflib
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import annotated_types as at
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from engramlab.errors import ConfigError


class Config(BaseModel):
    """Base class of every config section: unknown keys are errors, values are immutable, numbers finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class HeadsDivideWidth(Config):
    """A model config whose attention splits its width (the field named by ``width_field``) into
    ``heads`` equal parts, checked when the config is read, so a bad pair is one error line and no
    run directory is written. :meth:`splits_width` says whether this config uses heads at all."""

    width_field: ClassVar[str] = "hidden"

    def splits_width(self) -> bool:
        return True

    @model_validator(mode="after")
    def _heads_divide_width(self):
        width = getattr(self, self.width_field)
        if self.splits_width() and width % self.heads:
            raise ValueError(f"model.{self.width_field} ({width}) must be a multiple of model.heads ({self.heads})")
        return self


# ---------------------------------------------------------------------------------------------
# building a config from layers of plain dicts


def resolve(
    cls: type[Config],
    *layers: Mapping[str, Any] | None,
    overrides: Iterable[str] = (),
    renamed: Mapping[str, str] | None = None,
) -> Config:
    """Validate ``cls`` from its defaults, then each layer (nested dicts), then ``key=value`` strings.

    Layers are merged onto the full default tree, so a partial section (``{"task": {"n": 8}}``)
    keeps the defaults of the keys it does not name, including defaults set by a parent config.
    ``renamed`` (old dotted key -> new, an experiment's ``renamed_keys``): an override that uses an
    old name is an error that gives the new one.
    """
    data: dict[str, Any] = cls().model_dump()
    for layer in layers:
        if layer:
            check_keys(cls, layer)
            data = deep_merge(data, layer)
    for text in overrides:
        key, value = parse_override(text)
        check_not_renamed(key, renamed or {})
        check_keys(cls, nest(key, value))
        data = deep_merge(data, nest(key, value))
    return validate(cls, data)


def check_not_renamed(key: str, renamed: Mapping[str, str]) -> None:
    if key in renamed:
        raise ConfigError(f"config key '{key}' is now '{renamed[key]}' (--set {renamed[key]}=...)")


def validate(cls: type[Config], data: Mapping[str, Any]) -> Config:
    try:
        return cls.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(cls, exc)) from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"model.halting.lambda_p=0.1"`` -> ``("model.halting.lambda_p", 0.1)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects key=value (for example model.halting.lambda_p=0.1), got {shown(text)}")
    if "" in key.split("."):
        raise ConfigError(
            f"--set {shown(key)}: a key is names joined by single dots, none empty (for example model.halting.lambda_p)"
        )
    return key, parse_value(raw.strip())


def parse_value(raw: str) -> Any:
    for number in (int, float):  # YAML 1.1 reads "1e-3" as a string; users mean a number
        try:
            return number(raw)
        except ValueError:
            pass
    try:
        return yaml.safe_load(raw) if raw else ""
    # not YAML, an integer longer than Python reads (ValueError) or lists nested too deep: the text itself,
    # which the config then names as a value that is not allowed
    except (yaml.YAMLError, ValueError, RecursionError):
        return raw


def nest(dotted: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def check_keys(cls: type[Config], data: Mapping[str, Any], prefix: str = "") -> None:
    """Reject keys the config does not have, naming the allowed ones (and a close match)."""
    fields = cls.model_fields
    for key, value in data.items():
        where = f"{prefix}{key}"  # a key inside a YAML mapping may be a number, true or null
        if key not in fields:
            allowed = sorted(fields)
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            if isinstance(key, str) and "." in key:
                hint += " (inside a mapping, nest the keys: {a: {b: 1}}, not {a.b: 1})"
            section = f"'{prefix[:-1]}'" if prefix else "the top level"
            raise ConfigError(f"unknown config key {shown(where)}{hint} (keys in {section}: {', '.join(allowed)})")
        sub = config_class(fields[key].annotation)
        if sub is not None and isinstance(value, Mapping):
            check_keys(sub, value, prefix=f"{where}.")


def config_class(annotation: Any) -> type[Config] | None:
    """The Config subclass a field holds, if any (also through ``X | None``)."""
    candidates = typing.get_args(annotation) or (annotation,)
    for cand in candidates:
        if isinstance(cand, type) and issubclass(cand, Config):
            return cand
    return None


# ---------------------------------------------------------------------------------------------
# messages


SHOWN_CHARS = 100  # a value longer than this is cut in an error message


def format_validation_error(cls: type[Config], exc: ValidationError) -> str:
    """The first error of ``exc`` as one line: the key, the value given and what is allowed."""
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).removeprefix(".")
    msg = err["msg"].removeprefix("Value error, ")
    field = find_field(cls, loc)
    section = config_class(field.annotation) if field is not None else None
    if not loc or (err["type"] == "value_error" and (field is None or section is not None)):
        return one_line(f"invalid config: {msg}")  # a check of a whole section: our cross-field checks name the keys
    given = f"invalid value for {key}: {shown(err.get('input'))}"
    if err["type"] == "value_error":  # the field's own check
        return one_line(f"{given} ({msg})")
    if section is not None:
        keys = list(section.model_fields)
        return one_line(
            f"{given} ('{key}' is a section: set one of its keys, e.g. --set {key}.{keys[0]}=...; "
            f"keys in '{key}': {', '.join(sorted(keys))})"
        )
    return one_line(f"{given} (allowed: {(describe_allowed(field) if field is not None else '') or msg})")


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped, so that an error stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def shown(value: Any) -> str:
    """A value as an error message shows it: its repr, on one line, cut to :data:`SHOWN_CHARS`."""
    try:
        text = one_line(repr(value))
    except ValueError:  # an integer with more digits than Python prints
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def find_field(cls: type[Config], loc: list[str]):
    field = None
    for part in loc:
        if cls is None or part not in cls.model_fields:
            return None
        field = cls.model_fields[part]
        cls = config_class(field.annotation)
    return field


def describe_allowed(field) -> str:
    """Human words for a field's type and bounds, e.g. 'a number > 0 and < 1'."""
    bounds = []
    for meta in field.metadata:
        for cls, attr, sign in ((at.Gt, "gt", ">"), (at.Ge, "ge", ">="), (at.Lt, "lt", "<"), (at.Le, "le", "<=")):
            if isinstance(meta, cls):
                bounds.append(f"{sign} {getattr(meta, attr)}")
    lengths = [
        f"{words} {getattr(meta, attr)} item{'s' * (getattr(meta, attr) != 1)}"
        for meta in field.metadata
        for cls, attr, words in ((at.MinLen, "min_length", "at least"), (at.MaxLen, "max_length", "at most"))
        if isinstance(meta, cls) and getattr(meta, attr)
    ]
    annotation, args = field.annotation, typing.get_args(field.annotation)
    optional = type(None) in args
    if optional:  # the bounds belong to the value, not to null
        annotation = next(a for a in args if a is not type(None))
    words = " ".join([type_words(annotation)] + ([" and ".join(bounds)] if bounds else []))
    return words + "".join(f", {length}" for length in lengths) + (" or null" if optional else "")


def type_words(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if args and type(None) in args:  # X | None
        rest = [a for a in args if a is not type(None)]
        return f"{type_words(rest[0])} or null"
    if origin is tuple:
        return f"a list [{', '.join(type_words(a).split(' ', 1)[-1] for a in args)}]"
    if origin is list:
        return f"a list of {plural_words(args[0])}"
    if origin is dict:
        return f"a mapping of {plural_words(args[0])} to {plural_words(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, Config):
        return f"a section with the keys {', '.join(annotation.model_fields)}"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return words.get(annotation, getattr(annotation, "__name__", str(annotation)))


def plural_words(annotation: Any) -> str:
    """The items of a list or mapping in the plural ('integers', 'lists [integer, integer]'), or a Literal's choices."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return type_words(annotation).removeprefix("one of ")
    if origin in (list, dict, tuple):
        kind, rest = type_words(annotation).split(" ", 2)[1:]
        return f"{kind}s {rest}"
    words = {int: "integers", float: "numbers", bool: "true or false", str: "strings", Any: "values"}
    return words.get(annotation, type_words(annotation))


# ---------------------------------------------------------------------------------------------
# YAML and documentation


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_plain(cfg.model_dump()), sort_keys=False)


def to_plain(value: Any) -> Any:
    """Tuples become lists so that the YAML stays plain."""
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys")
    return data


def rename_keys(
    data: Mapping[str, Any], renames: Mapping[str, str], defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``data`` (a saved config, nested dicts) with every key of ``renames`` it holds moved to its new name.

    Keys are dotted (``model.lambda_p`` -> ``model.halting.lambda_p``); a key already under its new
    name stays as it is, and a key under both names is an error. A section that a new name creates
    starts as that section of ``defaults`` (an experiment's default config): the keys the old
    config lacked there were constants of the code that wrote it, which the defaults keep, so the
    section is complete like a new run's.
    """
    out = copy.deepcopy(dict(data))
    for old, new in renames.items():
        *old_path, old_key = old.split(".")
        parent = mapping_at(out, old_path)
        if parent is None or old_key not in parent:
            continue
        *new_path, new_key = new.split(".")
        if new_key in (mapping_at(data, new_path) or {}):
            raise ConfigError(f"config has both '{old}' and its new name '{new}': keep one")
        target = out
        for depth, part in enumerate(new_path, start=1):
            if part not in target:
                target[part] = copy.deepcopy(dict(mapping_at(defaults or {}, new_path[:depth]) or {}))
            target = target[part]
        target[new_key] = parent.pop(old_key)
    return out


def mapping_at(data: Mapping[str, Any], path: list[str]) -> Mapping[str, Any] | None:
    """The nested mapping at ``path`` (a dotted key split at the dots), or None."""
    for part in path:
        data = data.get(part) if isinstance(data, Mapping) else None
    return data if isinstance(data, Mapping) else None


def describe(cfg: Config, prefix: str = "") -> list[tuple[str, Any, str, str]]:
    """(key, current value, allowed values, description) for every leaf field of ``cfg``."""
    rows = []
    for name, field in type(cfg).model_fields.items():
        value = getattr(cfg, name)
        if isinstance(value, Config):
            rows += describe(value, prefix=f"{prefix}{name}.")
        else:
            rows.append((f"{prefix}{name}", to_plain(value), describe_allowed(field), field.description or ""))
    return rows

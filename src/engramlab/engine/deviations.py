"""Deviation lines as templates of a run's config: ``"n = {cfg.task.n} (paper: 96)"`` reads the
value the run was given (its preset's, or a ``--set``), so the report never states a preset's value
for a run that changed it. :func:`format_deviations` fills them with :class:`DeviationFormatter`."""

from __future__ import annotations

import string
from typing import Any

MISSING = "?"  # how a missing dict key or list item prints
PROPER_NAMES = {
    "adam": "Adam",
    "adamw": "AdamW",
    "sgd": "SGD",
    "gru": "GRU",
    "rnn": "RNN",
    "lstm": "LSTM",
    "mlp": "MLP",
    "ff": "feed-forward",
    "cma": "CMA-ES",
    "sep-cma": "sep-CMA-ES",
    "antithetic": "antithetic ES",
}


class LeftOut(Exception):
    """A deviation line whose ``if`` (``unless``) field is false (true): the line does not apply."""


class DeviationFormatter(string.Formatter):
    """``str.format`` for deviation templates (:meth:`Experiment.deviations_of`), with a few specs:

    - lists and tuples print as ``[1, 16]``, None as ``none``; a missing dict key or list item as ``?``;
    - ``{cfg.train.steps:k}``: 20000 as ``20k`` (other counts with thousands commas: ``2,500``);
    - ``{cfg.train.lr:sci}``: 0.003 as ``3e-3``;
    - ``{cfg.train.optimizer:name}``: a value's proper name (``adamw`` as ``AdamW``, ``gru`` as ``GRU``);
    - ``{cfg.model.rotary:if}`` (``unless``) prints nothing, and the whole line is left out when the
      value is false (true).
    """

    def get_field(self, field_name: str, args, kwargs):
        try:
            return super().get_field(field_name, args, kwargs)
        except (KeyError, IndexError):  # e.g. an arm_models entry a --set removed
            return MISSING, field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec in ("if", "unless"):
            if bool(value) != (format_spec == "if"):
                raise LeftOut
            return ""
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(self.format_field(item, format_spec) for item in value) + "]"
        if value is None or value is MISSING:
            return "none" if value is None else MISSING
        if format_spec == "k":
            return f"{value // 1000}k" if value >= 1000 and value % 1000 == 0 else f"{value:,}"
        if format_spec == "sci":
            mantissa, exponent = f"{value:e}".split("e")
            return f"{float(mantissa):g}e{int(exponent)}"
        if format_spec == "name":
            return PROPER_NAMES.get(value, value)
        return super().format_field(value, format_spec)


DEVIATION_FORMATTER = DeviationFormatter()


def format_deviations(templates: list[str], cfg: Any) -> list[str]:
    """Each template filled from ``cfg``; a line whose ``:if`` (``:unless``) field is false (true) is left out."""
    lines = []
    for template in templates:
        try:
            lines.append(DEVIATION_FORMATTER.format(template, cfg=cfg))
        except LeftOut:
            pass
    return lines

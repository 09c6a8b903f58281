"""Business KPIs declared beside a model and computed from its logs, per version and window.

In `shipyard.yaml` (or `[tool.shipyard]` in pyproject.toml):

    models:
      fraud-detector:
        kpis:
          fraud_blocked_usd: sum(transaction_amount) where label = 1 and prediction = 1
          fraud_missed_usd: sum(transaction_amount) where label = 1 and prediction = 0
          approval_rate: rate where prediction = 0

The grammar is small on purpose, parsed here and compiled to SQL with quoted identifiers and
bound values, so a KPI can never become arbitrary SQL:

    kpi        sum|mean|avg|min|max|count ( column | * ) [where condition [and condition]...]
               rate where condition [and condition]...      the share of predictions matching
    condition  column =|!=|<>|<|<=|>|>= number | 'text' | true | false
    column     label (the true label, from feedback), prediction (the predicted label, or the
               value of a regressor), score, value, or any input feature by name

A condition on `label` holds only for predictions whose label came back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipyard.core.errors import ConfigurationError, InvalidInput
from shipyard.core.project import read_project_file

__all__ = ["FUNCTIONS", "Kpi", "load_kpis", "parse_kpi"]

FUNCTIONS = ("sum", "mean", "avg", "min", "max", "count", "rate")
_OPS = ("<=", ">=", "!=", "<>", "=", "<", ">")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TOKEN = re.compile(
    r"""\s*(?:(?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<text>'[^']*'|"[^"]*")|"""
    r"""(?P<op><=|>=|!=|<>|=|<|>)|(?P<punct>[()*])|(?P<word>[A-Za-z_][A-Za-z0-9_.-]*))"""
)
_HELP = (
    "write it as `sum(transaction_amount) where label = 1 and prediction = 1` or "
    "`rate where prediction = 0` (functions: sum, mean, min, max, count, rate)"
)


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: float | str | bool


@dataclass(frozen=True)
class Kpi:
    """One KPI: `function` over `column` (None: every row) of the predictions matching all of
    `where`."""

    name: str
    expression: str
    function: str
    column: str | None
    where: tuple[Condition, ...]

    def columns(self) -> set[str]:
        named = {c.column for c in self.where}
        return named | ({self.column} if self.column else set())


def _tokens(text: str) -> list[tuple[str, str]]:
    out, at = [], 0
    text = text.strip()
    while at < len(text):
        found = _TOKEN.match(text, at)
        if found is None or found.end() == at:
            raise InvalidInput(f"cannot read {text[at : at + 20]!r} in KPI {text!r}; {_HELP}")
        kind = found.lastgroup
        assert kind is not None
        out.append((kind, found.group(kind)))
        at = found.end()
        while at < len(text) and text[at].isspace():
            at += 1
    return out


def _column(word: str, expression: str) -> str:
    if not _NAME.match(word):
        raise InvalidInput(f"{word!r} in KPI {expression!r} is not a column name; {_HELP}")
    return word


def parse_kpi(name: str, expression: str) -> Kpi:
    """The KPI `expression` says; `InvalidInput` naming what is wrong otherwise."""
    if not _NAME.match(name):
        raise InvalidInput(f"KPI name {name!r} must be letters, digits and _ (at most 63)")
    if not isinstance(expression, str) or not expression.strip() or len(expression) > 500:
        raise InvalidInput(f"KPI {name!r} needs an expression of at most 500 characters; {_HELP}")
    tokens = _tokens(expression)
    at = 0

    def take(kind: str | None = None, value: str | None = None) -> str:
        nonlocal at
        if at >= len(tokens):
            raise InvalidInput(f"KPI {expression!r} ends too early; {_HELP}")
        got_kind, got = tokens[at]
        if (kind and got_kind != kind) or (value and got.lower() != value):
            raise InvalidInput(f"unexpected {got!r} in KPI {expression!r}; {_HELP}")
        at += 1
        return got

    function = take("word").lower()
    if function not in FUNCTIONS:
        raise InvalidInput(f"KPI {expression!r}: {function!r} is not a function; {_HELP}")
    column: str | None = None
    if function != "rate":
        take("punct", "(")
        if at < len(tokens) and tokens[at] == ("punct", "*"):
            take()
            if function != "count":
                raise InvalidInput(f"KPI {expression!r}: only count takes *; {_HELP}")
        else:
            column = _column(take("word"), expression)
        take("punct", ")")
    where: list[Condition] = []
    if at < len(tokens):
        take("word", "where")
        while True:
            left = _column(take("word"), expression)
            op = take("op")
            kind, raw = tokens[at] if at < len(tokens) else ("", "")
            take()
            value: float | str | bool
            if kind == "number":
                value = float(raw)
            elif kind == "text":
                value = raw[1:-1]
            elif kind == "word" and raw.lower() in ("true", "false"):
                value = raw.lower() == "true"
            else:
                raise InvalidInput(
                    f"KPI {expression!r}: compare {left} with a number, 'text', true or false"
                )
            if isinstance(value, str) and op not in ("=", "!=", "<>"):
                raise InvalidInput(f"KPI {expression!r}: text compares with = or != only")
            where.append(Condition(left, op, value))
            if at >= len(tokens):
                break
            take("word", "and")
    if function == "rate" and not where:
        raise InvalidInput(f"KPI {expression!r}: rate needs a where clause; {_HELP}")
    return Kpi(name, expression.strip(), function, column, tuple(where))


def load_kpis(path: Path | None = None) -> dict[str, list[Kpi]]:
    """The KPIs of every model in `path` (a shipyard.yaml or pyproject.toml), or of the first of
    `./shipyard.yaml`, `./shipyard.yml`, `./pyproject.toml` that exists; {} when none."""
    found = read_project_file(path)
    return {} if found is None else kpis_of(*found)


def kpis_of(raw: Any, source: Path | str) -> dict[str, list[Kpi]]:
    models = raw.get("models") if isinstance(raw, dict) else None
    out: dict[str, list[Kpi]] = {}
    if not isinstance(models, dict):
        return out
    for model, body in models.items():
        declared = (body or {}).get("kpis") if isinstance(body, dict) else None
        if declared is None:
            continue
        if not isinstance(declared, dict):
            raise ConfigurationError(
                f"{source}: model {model!r}: kpis must map names to expressions"
            )
        try:
            out[str(model)] = [parse_kpi(str(k), v) for k, v in declared.items()]
        except InvalidInput as error:
            raise ConfigurationError(f"{source}: model {model!r}: {error.message}") from None
    return out

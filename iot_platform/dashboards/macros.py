"""Grafana's SQL interpolation for PostgreSQL, reproduced so panel SQL can run in tests.

Grafana turns a panel's SQL into the statement PostgreSQL sees in two steps, and so does
:func:`expand`: first the front end replaces template variables (``$tenant``, ``${tenant:sqlstring}``,
``[[tenant]]``, ``$__interval``, ...), then the PostgreSQL data source replaces macros of the form
``$__name(args)`` (``$__timeFilter(col)``, ``$__timeGroupAlias(col, 1h)``, ``$__timeFrom()``, ...).
Formats follow Grafana's sources (pkg/tsdb/grafana-postgresql-datasource/macros.go): times as
RFC 3339 in UTC, buckets as ``floor(extract(epoch from col)/N)*N``. Unlike Grafana, a reference to
an unknown variable or macro is an error here, so a typo fails a test instead of reaching SQL.
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal


class MacroError(ValueError):
    """The SQL references a variable or macro that cannot be expanded."""


@dataclass(frozen=True)
class Variable:
    """Selected values of a template variable; ``multi`` also stands for "include All"."""

    values: tuple[str, ...]
    multi: bool = False


@dataclass(frozen=True)
class Expansion:
    """Everything Grafana knows when it runs a panel: the time range, the interval, the variables."""

    start: datetime
    end: datetime
    interval: timedelta = timedelta(minutes=1)
    variables: Mapping[str, Variable] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise MacroError("the time range needs timezone-aware datetimes")
        if self.interval <= timedelta(0):
            raise MacroError("the interval must be positive")


_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?::([^}]+))?\}")
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")
_INTERVAL = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
_UNIT_SECONDS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600), "d": Decimal(86400), "w": Decimal(604800)}


def expand(sql: str, expansion: Expansion) -> str:
    """The statement Grafana would send to PostgreSQL for ``sql`` under ``expansion``."""
    return _expand_macros(_expand_variables(sql, expansion), expansion)


def rfc3339(moment: datetime) -> str:
    """Go's ``time.RFC3339Nano`` in UTC: fractional seconds without trailing zeros, ``Z`` suffix."""
    utc = moment.astimezone(timezone.utc)
    fraction = f".{utc.microsecond:06d}".rstrip("0") if utc.microsecond else ""
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def interval_seconds(text: str) -> Decimal:
    """Seconds in a Grafana interval such as ``5m`` or ``'1h'`` (quotes allowed, as in Grafana)."""
    match = _INTERVAL.match(text.strip().strip("'"))
    if match is None:
        raise MacroError(f"unsupported interval {text!r}: use a number and one of ms, s, m, h, d, w")
    return Decimal(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def go_number(value: Decimal) -> str:
    """A number as Go's ``%v`` prints a float64: exponent form from 1e+06 on, shortest digits."""
    normal = value.normalize()
    sign, digits, exponent = normal.as_tuple()
    magnitude = len(digits) + int(exponent) - 1
    if -4 <= magnitude < 6:
        text = format(normal, "f")
        return text
    mantissa = "".join(map(str, digits))
    mantissa = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'+' if magnitude >= 0 else '-'}{abs(magnitude):02d}"


def _format_interval(interval: timedelta) -> str:
    milliseconds = round(interval.total_seconds() * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if milliseconds % size == 0:
            return f"{milliseconds // size}{unit}"
    return f"{milliseconds}ms"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _format_variable(name: str, variable: Variable, fmt: str | None) -> str:
    values = variable.values
    if not values:
        raise MacroError(f"variable ${name} has no value")
    if fmt is None:  # the PostgreSQL data source's own rule for an unformatted reference
        return ",".join(map(_quote, values)) if variable.multi or len(values) > 1 else values[0]
    if fmt == "sqlstring":
        return ",".join(map(_quote, values))
    if fmt == "csv":
        return ",".join(values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "raw" and len(values) == 1:
        return values[0]
    raise MacroError(f"unsupported format {fmt!r} for variable ${name}")


def _builtins(expansion: Expansion) -> dict[str, str]:
    return {
        "__interval": _format_interval(expansion.interval),
        "__interval_ms": str(round(expansion.interval.total_seconds() * 1000)),
        "__from": str(int(expansion.start.timestamp() * 1000)),
        "__to": str(int(expansion.end.timestamp() * 1000)),
    }


def _expand_variables(sql: str, expansion: Expansion) -> str:
    builtins = _builtins(expansion)

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(5)
        if name in builtins and fmt is None:
            return builtins[name]
        if name in expansion.variables:
            return _format_variable(name, expansion.variables[name], fmt)
        if match.group(1) and sql[match.end() : match.end() + 1] == "(":
            return match.group(0)  # a macro call: the data source's step
        raise MacroError(f"unknown variable ${name}")

    return _VARIABLE.sub(replace, sql)


def _expand_macros(sql: str, expansion: Expansion) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        # Grafana's pre-5.3 compatibility: $__timeGroup(...) directly followed by ',' gets an alias.
        if name == "__timeGroup" and sql[match.end() : match.end() + 1] == ",":
            name = "__timeGroupAlias"
        args = [arg.strip() for arg in match.group(2).split(",")]
        return _macro(name, args, expansion)

    return _MACRO.sub(replace, sql)


def _macro(name: str, args: list[str], expansion: Expansion) -> str:
    column = args[0] if args and args[0] else None
    start, end = rfc3339(expansion.start), rfc3339(expansion.end)
    if name in ("__time", "__timeEpoch", "__timeFilter", "__timeGroup", "__timeGroupAlias", "__unixEpochFilter") and not column:
        raise MacroError(f"missing time column argument for macro ${name}")
    if name == "__time":
        return f'{column} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {column}) as "time"'
    if name == "__timeFilter":
        return f"{column} BETWEEN '{start}' AND '{end}'"
    if name == "__timeFrom":
        return f"'{start}'"
    if name == "__timeTo":
        return f"'{end}'"
    if name in ("__timeGroup", "__timeGroupAlias"):
        if len(args) < 2:
            raise MacroError(f"macro ${name} needs a time column and an interval")
        seconds = go_number(interval_seconds(args[1]))
        group = f"floor(extract(epoch from {column})/{seconds})*{seconds}"
        return group + (' AS "time"' if name == "__timeGroupAlias" else "")
    if name == "__unixEpochFilter":
        return f"{column} >= {int(expansion.start.timestamp())} AND {column} <= {int(expansion.end.timestamp())}"
    raise MacroError(f"unknown macro ${name}")

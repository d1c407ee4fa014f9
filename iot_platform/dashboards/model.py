"""What a dashboard says, independent of Grafana's JSON: panels, their SQL, their variables.

The two dashboards are values of these frozen dataclasses; :mod:`iot_platform.dashboards.render`
turns them into Grafana JSON with grafana-foundation-sdk. Keeping the SQL here, typed and
enumerable (:meth:`Dashboard.queries`), is what lets the tests run every query of every panel
against a real database. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

PanelKind = Literal["timeseries", "stat", "table"]
QueryFormat = Literal["time_series", "table"]


@dataclass(frozen=True)
class Panel:
    """One visualisation backed by one SQL query (Grafana macros and variables allowed)."""

    title: str
    kind: PanelKind
    sql: str
    format: QueryFormat = "time_series"
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    repeat: str | None = None  # repeat the panel for each value of this variable
    min_interval: str | None = None  # lower bound of $__interval for this panel
    stacked: bool = False


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class QueryVariable:
    """A template variable whose options come from a SQL query."""

    name: str
    label: str
    sql: str
    multi: bool = False
    include_all: bool = False


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    variables: tuple[QueryVariable, ...] = ()
    tags: tuple[str, ...] = ("iot-platform",)
    time_from: str = "now-24h"
    refresh: str = "1m"

    def panels(self) -> Iterator[Panel]:
        for row in self.rows:
            yield from row.panels

    def queries(self) -> Iterator[tuple[str, str]]:
        """(name, SQL) of every query Grafana runs for this dashboard: variables, then panels."""
        for variable in self.variables:
            yield f"variable ${variable.name}", variable.sql
        for panel in self.panels():
            yield f"panel {panel.title!r}", panel.sql

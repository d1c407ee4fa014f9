"""Grafana dashboard JSON from a :class:`~iot_platform.dashboards.model.Dashboard`.

Built with grafana-foundation-sdk (Grafana's own generated builders) so the JSON follows
Grafana's schema; the SDK has no PostgreSQL query type, so :class:`SqlTarget` adds one through
the SDK's ``Dataquery`` extension point. Output is deterministic (explicit panel ids, a fixed
layout, sorted keys) so regenerated files diff cleanly. Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cog_builder
from grafana_foundation_sdk.cog import variants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos, VariableRefresh, VariableSort

from iot_platform.dashboards.model import Dashboard, Panel, QueryVariable

DATASOURCE_TYPE = "grafana-postgresql-datasource"
DATASOURCE_UID = "iot-postgres"
GRID_WIDTH = 24


class SqlTarget(variants.Dataquery, cog_builder.Builder["SqlTarget"]):
    """A raw-SQL query of Grafana's PostgreSQL data source (code mode)."""

    def __init__(self, sql: str, query_format: str, ref_id: str = "A") -> None:
        self.sql, self.query_format, self.ref_id = sql, query_format, ref_id

    def build(self) -> "SqlTarget":
        return self

    def to_json(self) -> dict[str, Any]:
        return {"refId": self.ref_id, "rawSql": self.sql, "format": self.query_format,
                "editorMode": "code", "rawQuery": True}


def datasource_ref(uid: str = DATASOURCE_UID) -> DataSourceRef:
    return DataSourceRef(type_val=DATASOURCE_TYPE, uid=uid)


def _panel_builder(panel: Panel) -> Any:
    if panel.kind == "timeseries":
        builder = (timeseries.Panel().fill_opacity(20 if panel.stacked else 10).line_width(1)
                   .legend(common_builders.VizLegendOptions().show_legend(True)
                           .display_mode(common.LegendDisplayMode.TABLE).placement(common.LegendPlacement.BOTTOM)
                           .calcs(["sum", "max", "lastNotNull"])))
        if panel.stacked:
            builder = builder.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
        return builder
    if panel.kind == "stat":
        return (stat.Panel().graph_mode(common.BigValueGraphMode.NONE)
                .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    return table.Panel()


def _render_panel(panel: Panel, panel_id: int, x: int, y: int, datasource_uid: str) -> Any:
    builder = (_panel_builder(panel).id(panel_id).title(panel.title).description(panel.description)
               .datasource(datasource_ref(datasource_uid)).unit(panel.unit)
               .with_target(SqlTarget(panel.sql, panel.format))
               .grid_pos(GridPos(h=panel.height, w=panel.width, x=x, y=y)))
    if panel.repeat:
        builder = builder.repeat(panel.repeat).repeat_direction("h")
    if panel.min_interval:
        builder = builder.interval(panel.min_interval)
    return builder


def _render_variable(variable: QueryVariable, datasource_uid: str) -> Any:
    return (dashboard_builders.QueryVariable(variable.name).label(variable.label)
            .datasource(datasource_ref(datasource_uid)).query(variable.sql)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
            .multi(variable.multi).include_all(variable.include_all))


def render(dashboard: Dashboard, datasource_uid: str = DATASOURCE_UID) -> dict[str, Any]:
    """Grafana's JSON model of ``dashboard``, its panels bound to data source ``datasource_uid``."""
    builder = (dashboard_builders.Dashboard(dashboard.title).uid(dashboard.uid).description(dashboard.description)
               .tags(list(dashboard.tags)).time(dashboard.time_from, "now").refresh(dashboard.refresh)
               .timezone("utc").editable())
    for variable in dashboard.variables:
        builder = builder.with_variable(_render_variable(variable, datasource_uid))
    panel_id, y = 1, 0
    for row in dashboard.rows:
        builder = builder.with_row(dashboard_builders.Row(row.title).id(panel_id).grid_pos(GridPos(h=1, w=GRID_WIDTH, x=0, y=y)))
        panel_id, y, x, row_height = panel_id + 1, y + 1, 0, 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y, row_height = 0, y + row_height, 0
            builder = builder.with_panel(_render_panel(panel, panel_id, x, y, datasource_uid))
            panel_id, x, row_height = panel_id + 1, x + panel.width, max(row_height, panel.height)
        y += row_height
    # Round-trip through JSON: plain dicts and lists only, as Grafana's API and the files take them.
    return json.loads(json.dumps(builder.build(), cls=JSONEncoder))


def to_json_text(model: dict[str, Any]) -> str:
    """Stable text of a JSON model: sorted keys, two-space indent, final newline."""
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

"""The *Tenant telemetry* dashboard: one tenant's projects, devices and numeric fields over time.

Reads only the live hourly rollups (``iot.rollup_hourly_live`` and ``iot.rollup_hourly_fields_live``:
the materialized hours, plus the current hour and any hour not rolled up yet aggregated from raw
rows when queried, so the current hour shows within seconds). It is
provisioned in the main organisation (analyst data source: ``$tenant`` lists every tenant) and in
each tenant's organisation, where the data source logs in as that tenant's role: row-level
security then leaves one choice in ``$tenant``, whatever SQL an editor writes.
"""

from __future__ import annotations

from iot_platform.dashboards.model import Dashboard, Panel, QueryVariable, Row

_SCOPE = "tenant_id IN (${tenant:sqlstring}) AND project_id IN (${project:sqlstring})"

TENANT = QueryVariable(
    name="tenant",
    label="Tenant",
    sql="SELECT DISTINCT tenant_id FROM iot.rollup_hourly_live ORDER BY 1",
)
PROJECT = QueryVariable(
    name="project",
    label="Project",
    sql="SELECT DISTINCT project_id FROM iot.rollup_hourly_live WHERE tenant_id IN (${tenant:sqlstring}) ORDER BY 1",
    multi=True,
    include_all=True,
)
FIELD = QueryVariable(
    name="field",
    label="Field",
    sql=f"SELECT DISTINCT field FROM iot.rollup_hourly_fields_live WHERE {_SCOPE} ORDER BY 1",
    multi=True,
    include_all=True,
)

MESSAGES = Panel(
    title="Messages per hour",
    kind="timeseries",
    sql=f"""SELECT $__timeGroupAlias(hour, 1h), project_id AS metric, sum(message_count) AS messages
FROM iot.rollup_hourly_live
WHERE $__timeFilter(hour) AND {_SCOPE}
GROUP BY 1, 2
ORDER BY 1, 2""",
    stacked=True,
)

BYTES = Panel(
    title="Payload bytes per hour",
    kind="timeseries",
    sql=f"""SELECT $__timeGroupAlias(hour, 1h), project_id AS metric, sum(payload_bytes) AS bytes
FROM iot.rollup_hourly_live
WHERE $__timeFilter(hour) AND {_SCOPE}
GROUP BY 1, 2
ORDER BY 1, 2""",
    unit="bytes",
    stacked=True,
)

DEVICES = Panel(
    title="Active devices per hour",
    kind="timeseries",
    sql=f"""SELECT $__timeGroupAlias(hour, 1h), project_id AS metric, sum(distinct_devices) AS devices
FROM iot.rollup_hourly_live
WHERE $__timeFilter(hour) AND {_SCOPE}
GROUP BY 1, 2
ORDER BY 1, 2""",
    width=24,
)

FIELD_TREND = Panel(
    title="$field",
    kind="timeseries",
    description="Hourly average, minimum and maximum of one numeric field (one panel per field).",
    sql=f"""SELECT $__timeGroupAlias(hour, 1h),
       sum(sum_value) / nullif(sum(value_count), 0) AS average,
       min(min_value) AS minimum,
       max(max_value) AS maximum
FROM iot.rollup_hourly_fields_live
WHERE $__timeFilter(hour) AND {_SCOPE} AND field IN (${{field:sqlstring}})
GROUP BY 1
ORDER BY 1""",
    repeat="field",
)

FIELD_SUMMARY = Panel(
    title="Fields over the range",
    kind="table",
    format="table",
    sql=f"""SELECT project_id AS project, field, sum(value_count) AS "values",
       min(min_value) AS minimum, sum(sum_value) / nullif(sum(value_count), 0) AS average,
       max(max_value) AS maximum
FROM iot.rollup_hourly_fields_live
WHERE $__timeFilter(hour) AND {_SCOPE} AND field IN (${{field:sqlstring}})
GROUP BY 1, 2
ORDER BY 1, 2""",
    width=24,
)

TENANT_TELEMETRY = Dashboard(
    uid="iot-tenant-telemetry",
    title="Tenant telemetry",
    description="Hourly trends of one tenant's projects, devices and numeric fields (live rollups: the current hour included).",
    variables=(TENANT, PROJECT, FIELD),
    rows=(
        Row("Traffic", (MESSAGES, BYTES, DEVICES)),
        Row("Fields", (FIELD_TREND, FIELD_SUMMARY)),
    ),
    time_from="now-7d",
    refresh="1m",  # the current hour is live
)

"""Hourly rollups in SQL: the fast twin of :mod:`iot_platform.core.rollup_math`.

Guarantee: :func:`refresh_hour` makes ``iot.rollup_hourly`` and ``iot.rollup_hourly_fields`` hold
exactly the aggregates of the raw rows received in that hour, in one transaction. Rows are upserted
and only rewritten when a number changed (``computed_at`` is when they last changed), and rows that
no longer have raw data behind them are deleted, so re-running an hour gives identical rows.
A refresh that starts after the hour closed also records the hour in ``iot.rollup_hours`` (in the
same transaction): from then on the live views (``iot.rollup_hourly_live``, ``..._fields_live``)
serve that hour from these tables instead of aggregating its raw rows.
The aggregation is the database's ``iot.rollup_hourly_compute`` / ``iot.rollup_hourly_fields_compute``
(migration 060), which the live views use too; its numeric-field rules (top-level JSON numbers with
magnitude 0 or within [1e-300, 1e300]) are those of the pure module, and the integration tests
check that both agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from iot_platform.core.rollup_math import hour_of
from iot_platform.settings import Settings
from iot_platform.storage.db import connect

# The aggregation itself lives in the database (migration 060), shared with the live views.
_FRESH = """
CREATE TEMP TABLE fresh_rollup ON COMMIT DROP AS
SELECT tenant_id, project_id, message_count, payload_bytes, distinct_devices
FROM iot.rollup_hourly_compute(%(start)s, %(end)s);

CREATE TEMP TABLE fresh_fields ON COMMIT DROP AS
SELECT tenant_id, project_id, field, value_count, min_value, max_value, avg_value, sum_value
FROM iot.rollup_hourly_fields_compute(%(start)s, %(end)s);
"""

# A refresh that starts after the hour closed settles it: the live views then read the hour from
# the rollup tables. A refresh of the open hour (or under a clock that went back) unsettles it.
_SETTLE = """
INSERT INTO iot.rollup_hours (hour, refreshed_at) SELECT %(start)s, now() WHERE now() >= %(end)s
ON CONFLICT (hour) DO UPDATE SET refreshed_at = EXCLUDED.refreshed_at;
DELETE FROM iot.rollup_hours WHERE hour = %(start)s AND now() < %(end)s;
"""

_UPSERT_ROLLUP = """
INSERT INTO iot.rollup_hourly AS r (hour, tenant_id, project_id, message_count, payload_bytes, distinct_devices)
SELECT %(start)s, tenant_id, project_id, message_count, payload_bytes, distinct_devices FROM fresh_rollup
ON CONFLICT (hour, tenant_id, project_id) DO UPDATE
SET message_count = EXCLUDED.message_count, payload_bytes = EXCLUDED.payload_bytes,
    distinct_devices = EXCLUDED.distinct_devices, computed_at = now()
WHERE (r.message_count, r.payload_bytes, r.distinct_devices)
      IS DISTINCT FROM (EXCLUDED.message_count, EXCLUDED.payload_bytes, EXCLUDED.distinct_devices)
"""

_DELETE_STALE_ROLLUP = """
DELETE FROM iot.rollup_hourly r WHERE r.hour = %(start)s
AND NOT EXISTS (SELECT 1 FROM fresh_rollup f WHERE f.tenant_id = r.tenant_id AND f.project_id = r.project_id)
"""

_UPSERT_FIELDS = """
INSERT INTO iot.rollup_hourly_fields AS r
    (hour, tenant_id, project_id, field, value_count, min_value, max_value, avg_value, sum_value)
SELECT %(start)s, tenant_id, project_id, field, value_count, min_value, max_value, avg_value, sum_value
FROM fresh_fields
ON CONFLICT (hour, tenant_id, project_id, field) DO UPDATE
SET value_count = EXCLUDED.value_count, min_value = EXCLUDED.min_value, max_value = EXCLUDED.max_value,
    avg_value = EXCLUDED.avg_value, sum_value = EXCLUDED.sum_value
WHERE (r.value_count, r.min_value, r.max_value, r.avg_value, r.sum_value) IS DISTINCT FROM
      (EXCLUDED.value_count, EXCLUDED.min_value, EXCLUDED.max_value, EXCLUDED.avg_value, EXCLUDED.sum_value)
"""

_DELETE_STALE_FIELDS = """
DELETE FROM iot.rollup_hourly_fields r WHERE r.hour = %(start)s
AND NOT EXISTS (SELECT 1 FROM fresh_fields f
                WHERE f.tenant_id = r.tenant_id AND f.project_id = r.project_id AND f.field = r.field)
"""


@dataclass(frozen=True)
class HourRefresh:
    hour: datetime
    groups: int  # (tenant, project) rows the hour now has
    messages: int  # raw rows behind them
    written: int  # rollup rows inserted or changed
    deleted: int  # rollup rows removed (their raw data is gone or moved)
    field_rows: int


def refresh_hour(settings: Settings, hour: datetime) -> HourRefresh:
    """Recompute one hour's rollup rows from ``iot.messages`` (idempotent)."""
    start = hour_of(hour)
    params = {"start": start, "end": start + timedelta(hours=1)}
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            # One snapshot for both temp tables: fields never describe rows the counts did not see.
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute(_FRESH, params)
            cur.execute("SELECT count(*), coalesce(sum(message_count), 0) FROM fresh_rollup")
            groups, messages = cur.fetchone()
            cur.execute(_UPSERT_ROLLUP, params)
            written = cur.rowcount
            cur.execute(_DELETE_STALE_ROLLUP, params)  # cascades to their fields
            deleted = cur.rowcount
            cur.execute(_UPSERT_FIELDS, params)
            written += cur.rowcount
            cur.execute(_DELETE_STALE_FIELDS, params)
            deleted += cur.rowcount
            cur.execute("SELECT count(*) FROM fresh_fields")
            (field_rows,) = cur.fetchone()
            cur.execute(_SETTLE, params)
    finally:
        conn.close()
    return HourRefresh(start, int(groups), int(messages), written, deleted, int(field_rows))

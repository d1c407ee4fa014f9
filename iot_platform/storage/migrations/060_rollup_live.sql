-- Real-time rollups: iot.rollup_hourly_live and iot.rollup_hourly_fields_live have the columns of
-- iot.rollup_hourly and iot.rollup_hourly_fields. For every hour they serve exactly one source:
--   * a *settled* hour (listed in iot.rollup_hours: refreshed after it closed) is read from the
--     rollup tables, as materialized, even if late rows arrived since (the next re-run absorbs them);
--   * every other hour (the open one, closed hours not refreshed yet, gaps left while Dagster was
--     down) is aggregated from iot.messages when queried.
-- So no hour is counted twice or missed. The aggregation is written once, in the two *_compute
-- functions below, and iot_platform.storage.rollups materializes hours through the same
-- functions: the live part and the materialized part cannot disagree on a definition.

-- The numeric-field rule of iot_platform.core.rollup: a JSON number with magnitude 0 or within
-- [1e-300, 1e300] (outside it float8 underflows or overflows); anything else is not a value.
-- CASE, not AND: only CASE guarantees the type test runs before the cast.
CREATE FUNCTION iot.rollup_numeric(value jsonb) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(value) IS DISTINCT FROM 'number' THEN NULL
                WHEN value::numeric = 0 OR abs(value::numeric) BETWEEN 1e-300 AND 1e300
                THEN value::numeric::float8 END
$$;

-- Aggregates of the raw rows received in [since, until), one row per (hour, tenant, project).
-- Plain SQL, STABLE, not STRICT and not SECURITY DEFINER: PostgreSQL inlines it into the calling
-- query, so partitions are pruned on the bounds and row-level security applies to the caller.
CREATE FUNCTION iot.rollup_hourly_compute(since timestamptz, until timestamptz)
RETURNS TABLE (hour timestamptz, tenant_id text, project_id text, message_count bigint, payload_bytes bigint,
               distinct_devices bigint)
LANGUAGE sql STABLE AS $$
    SELECT date_trunc('hour', m.received_at, 'UTC'), m.tenant_id, m.project_id, count(*),
           sum(octet_length(m.payload))::bigint, count(DISTINCT m.device_id)
    FROM iot.messages m
    WHERE m.received_at >= since AND m.received_at < until
    GROUP BY 1, 2, 3
$$;

CREATE FUNCTION iot.rollup_hourly_fields_compute(since timestamptz, until timestamptz)
RETURNS TABLE (hour timestamptz, tenant_id text, project_id text, field text, value_count bigint,
               min_value double precision, max_value double precision, avg_value double precision,
               sum_value double precision)
LANGUAGE sql STABLE AS $$
    SELECT date_trunc('hour', m.received_at, 'UTC'), m.tenant_id, m.project_id, f.key, count(*), min(n.v), max(n.v),
           sum(n.v) / count(*), sum(n.v)
    FROM iot.messages m
    CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(m.payload_json) = 'object' THEN m.payload_json ELSE '{}' END)
        AS f(key, value)
    CROSS JOIN LATERAL (SELECT iot.rollup_numeric(f.value) AS v) AS n
    WHERE m.received_at >= since AND m.received_at < until AND n.v IS NOT NULL
    GROUP BY 1, 2, 3, 4
$$;

-- Settled hours: refreshed by iot_platform.storage.rollups.refresh_hour at or after the hour's end,
-- in the transaction that wrote the hour's rollup rows. A refresh of the open hour removes its entry.
CREATE TABLE iot.rollup_hours (
    hour         timestamptz NOT NULL PRIMARY KEY CHECK (hour = date_trunc('hour', hour, 'UTC')),
    refreshed_at timestamptz NOT NULL
);
COMMENT ON TABLE iot.rollup_hours IS
    'Hours whose rollup rows were computed after the hour closed; the *_live views serve these from the rollup tables.';

-- Rollups written before this migration were written by the hourly schedule, i.e. after their hour
-- closed; an hour with no rollup row cannot be told apart from one never rolled up, so it stays live.
INSERT INTO iot.rollup_hours (hour, refreshed_at)
SELECT hour, max(computed_at) FROM iot.rollup_hourly
WHERE hour + interval '1 hour' <= now()
GROUP BY hour;

-- The time ranges the live views aggregate from raw rows: everything outside the settled hours.
-- [-infinity, first settled hour), each gap between settled hours, [last settled hour + 1 h, infinity);
-- [-infinity, infinity) before any hour is settled. Consecutive hours form one range, so the cost
-- grows with the number of gaps (one per outage), not with the number of hours.
CREATE FUNCTION iot.rollup_live_ranges() RETURNS TABLE (since timestamptz, until timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT e.since, e.until FROM (
        SELECT h.hour + interval '1 hour' AS since,
               lead(h.hour, 1, 'infinity'::timestamptz) OVER (ORDER BY h.hour) AS until
        FROM iot.rollup_hours h
        UNION ALL
        SELECT '-infinity'::timestamptz, coalesce(min(h.hour), 'infinity'::timestamptz) FROM iot.rollup_hours h
    ) AS e
    WHERE e.since < e.until
$$;

-- computed_at of a live row is the time of the query (now()): the numbers are that fresh.
CREATE VIEW iot.rollup_hourly_live WITH (security_invoker = true) AS
SELECT r.hour, r.tenant_id, r.project_id, r.message_count, r.payload_bytes, r.distinct_devices, r.computed_at
FROM iot.rollup_hourly r
WHERE r.hour IN (SELECT s.hour FROM iot.rollup_hours s)
UNION ALL
SELECT c.hour, c.tenant_id, c.project_id, c.message_count, c.payload_bytes, c.distinct_devices, now()
FROM iot.rollup_live_ranges() l
CROSS JOIN LATERAL iot.rollup_hourly_compute(l.since, l.until) c;

CREATE VIEW iot.rollup_hourly_fields_live WITH (security_invoker = true) AS
SELECT r.hour, r.tenant_id, r.project_id, r.field, r.value_count, r.min_value, r.max_value, r.avg_value, r.sum_value
FROM iot.rollup_hourly_fields r
WHERE r.hour IN (SELECT s.hour FROM iot.rollup_hours s)
UNION ALL
SELECT c.hour, c.tenant_id, c.project_id, c.field, c.value_count, c.min_value, c.max_value, c.avg_value, c.sum_value
FROM iot.rollup_live_ranges() l
CROSS JOIN LATERAL iot.rollup_hourly_fields_compute(l.since, l.until) c;

COMMENT ON VIEW iot.rollup_hourly_live IS
    'iot.rollup_hourly for settled hours, aggregated from iot.messages for every other hour (incl. the current one).';
COMMENT ON VIEW iot.rollup_hourly_fields_live IS
    'iot.rollup_hourly_fields for settled hours, aggregated from iot.messages for every other hour.';

-- JIT compilation off for this database: the planner's estimate for the live views' nested loop
-- (one raw-row aggregation per live range) is far above the real cost, and PostgreSQL then spent
-- about 2 s compiling a query that runs in 80 ms; on whole-table aggregations over 1.2M rows JIT
-- saved nothing (measured, docs/design.md). Needs ownership of the database; skipped otherwise.
DO $jit$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_database WHERE datname = current_database() AND datdba = current_user::regrole) THEN
        EXECUTE format('ALTER DATABASE %I SET jit = off', current_database());
    ELSE
        RAISE NOTICE 'not the owner of database %: jit stays as configured', current_database();
    END IF;
END
$jit$;

-- security_invoker: the caller's privileges and row-level security apply inside the views, so a
-- tenant sees its own rows (and needs SELECT on what the views read; rollup_hours holds no tenant data).
GRANT SELECT ON iot.rollup_hours, iot.rollup_hourly_live, iot.rollup_hourly_fields_live TO iot_tenant_reader, iot_analyst;

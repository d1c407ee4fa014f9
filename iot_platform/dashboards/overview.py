"""The *Platform overview* dashboard: is data flowing, for whom, and is anything stuck?

For operators, on the analyst data source (every tenant). Rates and delays come from the raw
table (``iot.messages``, three days); per-tenant volumes from the live hourly rollups (long ranges
stay cheap, and the current hour is aggregated from raw rows when queried). Kafka's end offsets are not in the database, so consumer lag is shown as what it costs:
the delay between the bridge receiving a message and the consumer storing it, and the age of
each partition's last committed offset (the consumer's Prometheus metrics carry record lag).
"""

from __future__ import annotations

from iot_platform.dashboards.model import Dashboard, Panel, Row

MESSAGE_RATE = Panel(
    title="Message rate",
    kind="timeseries",
    description="Messages stored per second, by the time the bridge received them.",
    sql="""SELECT $__timeGroupAlias(received_at, $__interval),
       count(*) / ($__interval_ms / 1000.0) AS "messages/s"
FROM iot.messages
WHERE $__timeFilter(received_at)
GROUP BY 1
ORDER BY 1""",
    unit="cps",
    min_interval="1m",
)

MESSAGES_PER_TENANT = Panel(
    title="Messages per tenant (hourly)",
    kind="timeseries",
    description="From iot.rollup_hourly_live: rolled-up hours, and the current hour aggregated from raw rows.",
    sql="""SELECT $__timeGroupAlias(hour, 1h), tenant_id AS metric, sum(message_count) AS messages
FROM iot.rollup_hourly_live
WHERE $__timeFilter(hour)
GROUP BY 1, 2
ORDER BY 1, 2""",
    stacked=True,
)

BYTES_PER_TENANT = Panel(
    title="Payload bytes per tenant (hourly)",
    kind="timeseries",
    description="Sum of payload sizes, from iot.rollup_hourly_live (the current hour included).",
    sql="""SELECT $__timeGroupAlias(hour, 1h), tenant_id AS metric, sum(payload_bytes) AS bytes
FROM iot.rollup_hourly_live
WHERE $__timeFilter(hour)
GROUP BY 1, 2
ORDER BY 1, 2""",
    unit="bytes",
    stacked=True,
)

TENANTS_AND_PROJECTS = Panel(
    title="Tenants and projects",
    kind="table",
    format="table",
    description="Totals over the selected range, from iot.rollup_hourly_live (the current hour included).",
    sql="""SELECT tenant_id AS tenant, project_id AS project,
       sum(message_count) AS messages, sum(payload_bytes) AS bytes,
       max(distinct_devices) AS "devices (busiest hour)", max(hour) AS "last hour with data"
FROM iot.rollup_hourly_live
WHERE $__timeFilter(hour)
GROUP BY 1, 2
ORDER BY 3 DESC, 1, 2""",
    width=24,
)

DEAD_LETTERS_BY_REASON = Panel(
    title="Dead letters by reason",
    kind="timeseries",
    description="Messages the bridge or consumer refused, by reason (iot.dead_letters).",
    sql="""SELECT $__timeGroupAlias(dead_lettered_at, $__interval), reason AS metric, count(*) AS "dead letters"
FROM iot.dead_letters
WHERE $__timeFilter(dead_lettered_at)
GROUP BY 1, 2
ORDER BY 1, 2""",
    min_interval="1m",
    stacked=True,
)

DEAD_LETTER_TOTALS = Panel(
    title="Dead letters: totals",
    kind="table",
    format="table",
    sql="""SELECT reason, source, coalesce(tenant_id, '(unknown)') AS tenant, count(*) AS "dead letters",
       max(dead_lettered_at) AS latest
FROM iot.dead_letters
WHERE $__timeFilter(dead_lettered_at)
GROUP BY 1, 2, 3
ORDER BY 4 DESC, 1, 2, 3""",
)

INGEST_DELAY = Panel(
    title="Consumer delay (received to stored)",
    kind="timeseries",
    description="Seconds from the bridge receiving a message to the consumer committing it: "
    "grows when the consumer lags behind Kafka.",
    sql="""SELECT $__timeGroupAlias(received_at, $__interval),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM ingested_at - received_at)) AS "p95 delay",
       max(extract(epoch FROM ingested_at - received_at)) AS "max delay"
FROM iot.messages
WHERE $__timeFilter(received_at)
GROUP BY 1
ORDER BY 1""",
    unit="s",
    min_interval="1m",
)

CONSUMER_OFFSETS = Panel(
    title="Consumer offsets per partition",
    kind="table",
    format="table",
    description="Next offset the consumer will read, stored in the same transaction as the rows.",
    sql="""SELECT topic, partition, next_offset AS "next offset", updated_at AS "committed at",
       extract(epoch FROM now() - updated_at) AS "seconds since commit"
FROM iot.ingest_offsets
ORDER BY 1, 2""",
)

NEWEST_MESSAGE_AGE = Panel(
    title="Newest message age",
    kind="stat",
    format="table",
    description="Seconds since the newest stored message was received.",
    sql="""SELECT extract(epoch FROM now() - max(received_at)) AS "seconds since newest message"
FROM iot.messages
WHERE received_at > now() - interval '3 days'""",
    unit="s",
    width=6,
)

ROLLUP_AGE = Panel(
    title="Last rollup run",
    kind="stat",
    format="table",
    description="Seconds since iot_rollup_hourly last wrote a row.",
    sql="""SELECT extract(epoch FROM now() - max(computed_at)) AS "seconds since last rollup"
FROM iot.rollup_hourly""",
    unit="s",
    width=6,
)

FRESHNESS_PER_TENANT = Panel(
    title="Freshness per tenant and project",
    kind="table",
    format="table",
    sql="""SELECT tenant_id AS tenant, project_id AS project, max(received_at) AS "newest message",
       extract(epoch FROM $__timeTo()::timestamptz - max(received_at)) AS "age at end of range (s)"
FROM iot.messages
WHERE $__timeFilter(received_at)
GROUP BY 1, 2
ORDER BY 4 DESC, 1, 2""",
)

PLATFORM_OVERVIEW = Dashboard(
    uid="iot-platform-overview",
    title="Platform overview",
    description="Message flow, tenants, dead letters, consumer delay and freshness of the IoT platform.",
    rows=(
        Row("Message flow", (MESSAGE_RATE, MESSAGES_PER_TENANT, BYTES_PER_TENANT, TENANTS_AND_PROJECTS)),
        Row("Dead letters", (DEAD_LETTERS_BY_REASON, DEAD_LETTER_TOTALS)),
        Row("Consumer", (INGEST_DELAY, CONSUMER_OFFSETS)),
        Row("Freshness", (NEWEST_MESSAGE_AGE, ROLLUP_AGE, FRESHNESS_PER_TENANT)),
    ),
)

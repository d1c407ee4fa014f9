"""The consumer's SQL statements (all values bound; identifiers are fixed schema names, and a day
partition's name composed with ``psycopg2.sql.Identifier``)."""

from psycopg2 import sql

from iot_platform.consumer.copy_format import MESSAGE_COLUMNS

# The staging table has no statistics, so the planner's cost estimate of a 10,000-row insert is far
# above jit_above_cost: LLVM compilation then took 1.2-1.5 s of every batch's ~1.7 s. Never worth it
# for these statements.
SESSION_SETUP = "SET jit = off"

# The fast path (no copy of an earlier message id expected): the batch's message ids are claimed in
# iot.message_ids by one prepared statement from array literals (consumer/claims.py), then the rows
# are copied straight into their day partition (a partition has no policies of its own; iot_ingest
# holds INSERT on each, migration 080). COPY into the table itself inserts a page of rows at a time
# (one WAL record per page, no executor per row): PostgreSQL's CPU per row fell by about a fifth
# against COPY into a staging table and INSERT ... SELECT (docs/benchmarks.md, "Rows copied into
# their partition"). ingest_staging, with the columns of iot.messages, serves the statement that
# handles copies and replays; only a transaction that uses it pays for emptying it at commit.
CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS ingest_staging (
    tenant_id text, project_id text, mqtt_topic text, payload bytea, payload_json jsonb,
    message_id text, device_id text, device_ts timestamptz, received_at timestamptz,
    kafka_partition integer, kafka_offset bigint
) ON COMMIT DELETE ROWS
"""

COPY_STAGING = f"COPY ingest_staging ({', '.join(MESSAGE_COLUMNS)}) FROM STDIN WITH (FORMAT binary)"
EMPTY_STAGING = "TRUNCATE ingest_staging"

# The statements every transaction runs, prepared once per connection: parsing, analysing and
# planning them each time was about a quarter of a one-row transaction's CPU in PostgreSQL
# (docs/design.md §11). Creating the missing offset rows, then locking every row of the batch in
# key order (two writers never deadlock) and reading the stored positions is one round trip
# (LOCK_OFFSETS). iot_claim_ids unnests its arrays in the select list, where they advance in step
# without being stored first (in FROM, each function's result is written to a tuplestore: 1.4-1.5
# µs more per claim, docs/benchmarks.md "A transaction's fixed work"), and converts the receive time
# with integer arithmetic (seconds, then milliseconds), so the instant is exact over the whole range
# of receive times, as the COPY's is.
PREPARE_STATEMENTS = """
PREPARE iot_create_offsets (text[], int[]) AS
INSERT INTO iot.ingest_offsets (topic, partition, next_offset)
SELECT topic, partition, 0 FROM unnest($1, $2) AS k (topic, partition)
ON CONFLICT DO NOTHING;

PREPARE iot_lock_offsets (text[], int[]) AS
SELECT topic, partition, next_offset FROM iot.ingest_offsets
WHERE (topic, partition) IN (SELECT * FROM unnest($1, $2))
ORDER BY topic, partition
FOR UPDATE;

PREPARE iot_claim_ids (text[], text[], bigint[], int[], bigint[]) AS
INSERT INTO iot.message_ids (tenant_id, message_id, received_at, kafka_partition, kafka_offset)
SELECT tenant_id, message_id,
       timestamptz 'epoch' + (ms / 1000) * interval '1 second' + (ms % 1000) * interval '1 millisecond',
       kafka_partition, kafka_offset
FROM (SELECT unnest($1) AS tenant_id, unnest($2) AS message_id, unnest($3) AS ms, unnest($4) AS kafka_partition,
             unnest($5) AS kafka_offset) AS c;

PREPARE iot_update_offsets (text[], int[], bigint[]) AS
UPDATE iot.ingest_offsets o SET next_offset = v.next_offset, updated_at = now()
FROM unnest($1, $2, $3) AS v (topic, partition, next_offset)
WHERE o.topic = v.topic AND o.partition = v.partition
"""
LOCK_OFFSETS = "EXECUTE iot_create_offsets(%(topics)s, %(partitions)s); EXECUTE iot_lock_offsets(%(topics)s, %(partitions)s)"
# No ON CONFLICT: a unique violation sends the batch to INSERT_FROM_STAGING.
CLAIM_IDS = "EXECUTE iot_claim_ids(%s, %s, %s, %s, %s)"
UPDATE_OFFSETS = "EXECUTE iot_update_offsets(%s, %s, %s)"


def copy_into_partition(partition: str) -> sql.Composed:
    """COPY of message rows into ``partition`` (``iot.messages_pYYYYMMDD``, as iot.ensure_messages_partition names it)."""
    schema, table = partition.split(".")
    return sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary)").format(
        sql.Identifier(schema, table), sql.SQL(", ").join(map(sql.Identifier, MESSAGE_COLUMNS)))


# Copies and replays: a batch whose fast path met a unique violation (a copy of an earlier message
# id, two copies inside the batch, a replay the offset fence did not catch), or that follows a batch
# with copies, is staged in ingest_staging and inserted by this statement. The first occurrence of
# each (tenant, message id) in the batch (sorted bytewise: equality is the same under any
# deterministic collation, and "C" skips strcoll) claims the id unless an earlier batch did; rows
# without an id, or whose id was claimed by this very record, become messages (the statement's row
# count).
INSERT_FROM_STAGING = """
WITH firsts AS (
    SELECT DISTINCT ON (tenant_id COLLATE "C", message_id COLLATE "C")
           tenant_id, message_id, received_at, kafka_partition, kafka_offset
    FROM ingest_staging WHERE message_id IS NOT NULL
    ORDER BY tenant_id COLLATE "C", message_id COLLATE "C", kafka_partition, kafka_offset
), claimed AS (
    INSERT INTO iot.message_ids (tenant_id, message_id, received_at, kafka_partition, kafka_offset)
    SELECT tenant_id, message_id, received_at, kafka_partition, kafka_offset FROM firsts
    ON CONFLICT DO NOTHING
    RETURNING kafka_partition, kafka_offset
)
INSERT INTO iot.messages (tenant_id, project_id, mqtt_topic, payload, payload_json, message_id,
                          device_id, device_ts, received_at, kafka_partition, kafka_offset)
SELECT s.tenant_id, s.project_id, s.mqtt_topic, s.payload, s.payload_json, s.message_id,
       s.device_id, s.device_ts, s.received_at, s.kafka_partition, s.kafka_offset
FROM ingest_staging s
WHERE s.message_id IS NULL
   OR EXISTS (SELECT 1 FROM claimed c WHERE c.kafka_partition = s.kafka_partition AND c.kafka_offset = s.kafka_offset)
ON CONFLICT DO NOTHING
"""

# Run only when fewer rows were inserted than staged (some row is a copy, or a replay). Every claim
# of this batch is in iot.message_ids by now, so a row with an id is a copy unless the claim there is
# its own (a claim with its own coordinates from an earlier batch means a replay, not a copy).
INSERT_DUPLICATES = """
INSERT INTO iot.duplicate_messages (kafka_partition, kafka_offset, tenant_id, message_id, received_at,
                                    first_kafka_partition, first_kafka_offset)
SELECT s.kafka_partition, s.kafka_offset, s.tenant_id, s.message_id, s.received_at, m.kafka_partition, m.kafka_offset
FROM ingest_staging s
LEFT JOIN iot.message_ids m ON m.tenant_id = s.tenant_id AND m.message_id = s.message_id
WHERE s.message_id IS NOT NULL
  AND (m.kafka_partition, m.kafka_offset) IS DISTINCT FROM (s.kafka_partition, s.kafka_offset)
ON CONFLICT DO NOTHING
"""

# Any conflict skips the row: a replayed record (its Kafka coordinates), or a later copy of a bad
# message the bridge produced twice (its topic and message id); the writer records the latter below.
INSERT_DEAD_LETTERS = """
INSERT INTO iot.dead_letters (reason, source, mqtt_topic, tenant_id, payload, received_at, kafka_topic,
                              kafka_partition, kafka_offset, bridge_id, original_size, truncated, message_id)
VALUES %s
ON CONFLICT DO NOTHING
RETURNING kafka_topic, kafka_partition, kafka_offset
"""

INSERT_DUPLICATE_DEAD_LETTERS = """
INSERT INTO iot.duplicate_dead_letters (kafka_topic, kafka_partition, kafka_offset, mqtt_topic, message_id,
                                        tenant_id, received_at)
VALUES %s
ON CONFLICT DO NOTHING
"""

SELECT_OFFSETS = """
SELECT topic, partition, next_offset FROM iot.ingest_offsets
WHERE (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))
"""

# Offsets Kafka's retention deleted before the consumer read them, recorded with the batch that moves
# past them; a replay of that batch records nothing new.
INSERT_EXPIRED = """
INSERT INTO iot.expired_offsets (topic, partition, first_offset, last_offset)
VALUES %s
ON CONFLICT DO NOTHING
RETURNING topic, partition, first_offset, last_offset
"""

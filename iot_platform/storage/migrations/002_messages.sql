-- Raw telemetry, one row per Kafka record of the messages topic, partitioned by UTC day on
-- received_at (the bridge's receive time). Partitions are created ahead by migrate.ensure_partitions
-- and on demand by the consumer through iot.ensure_messages_partition (003).
CREATE TABLE iot.messages (
    tenant_id       text        NOT NULL,
    project_id      text        NOT NULL,
    mqtt_topic      text        NOT NULL,
    payload         bytea       NOT NULL,          -- the exact bytes the device published
    payload_json    jsonb,                         -- NULL: not JSON, or not storable as jsonb (\u0000)
    message_id      text,                          -- payload's message id field, when present
    device_id       text,
    device_ts       timestamptz,                   -- the payload's own timestamp, when present
    received_at     timestamptz NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    ingested_at     timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (received_at);

-- A replayed Kafka record is harmless: the same (partition, offset) always has the same received_at.
CREATE UNIQUE INDEX messages_kafka_record_key ON iot.messages (kafka_partition, kafka_offset, received_at);
CREATE INDEX messages_tenant_time ON iot.messages (tenant_id, received_at);
CREATE INDEX messages_tenant_project_time ON iot.messages (tenant_id, project_id, received_at);

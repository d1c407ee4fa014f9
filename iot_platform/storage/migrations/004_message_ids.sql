-- Deduplication of messages the bridge produced twice (two Kafka offsets, same payload message id).
-- A unique index on partitioned iot.messages would have to include received_at, which differs
-- between the two copies, so the first occurrence of each (tenant, message id) is recorded here.
-- Retention prunes both tables by received_at: the dedupe window equals the raw retention.
CREATE TABLE iot.message_ids (
    tenant_id       text        NOT NULL,
    message_id      text        NOT NULL,
    received_at     timestamptz NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    PRIMARY KEY (tenant_id, message_id)
);
CREATE INDEX message_ids_received_at ON iot.message_ids (received_at);

-- Each skipped copy, so completeness can be proven: per Kafka partition, every consumed offset is a
-- row of iot.messages, of iot.dead_letters (source 'consumer') or of this table.
CREATE TABLE iot.duplicate_messages (
    kafka_partition       integer     NOT NULL,
    kafka_offset          bigint      NOT NULL,
    tenant_id             text        NOT NULL,
    message_id            text        NOT NULL,
    received_at           timestamptz NOT NULL,
    first_kafka_partition integer,
    first_kafka_offset    bigint,
    skipped_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_partition, kafka_offset)
);
CREATE INDEX duplicate_messages_received_at ON iot.duplicate_messages (received_at);

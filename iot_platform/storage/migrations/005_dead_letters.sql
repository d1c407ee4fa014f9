-- Messages that could not be stored as telemetry, with the reason and the original bytes.
-- source 'bridge': read from the dead-letter topic; 'consumer': a data error found by the consumer
-- (undecodable headers, a row PostgreSQL rejects). One Kafka record gives at most one dead letter.
CREATE TABLE iot.dead_letters (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reason           text        NOT NULL,
    source           text        NOT NULL CHECK (source IN ('bridge', 'consumer')),
    mqtt_topic       text        NOT NULL,
    tenant_id        text,
    payload          bytea       NOT NULL,
    received_at      timestamptz NOT NULL,
    kafka_topic      text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    bridge_id        text,
    original_size    integer,
    truncated        boolean     NOT NULL DEFAULT false,
    CONSTRAINT dead_letters_kafka_record_key UNIQUE (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX dead_letters_received_at ON iot.dead_letters (received_at);
CREATE INDEX dead_letters_tenant_time ON iot.dead_letters (tenant_id, received_at);

-- Kafka records deleted by retention before the consumer read them (issue 12). The consumer inserts
-- each range in the same transaction as the batch whose records move past it, so the loss is recorded
-- exactly when the position skips it. kafka_offsets_all_stored fails on any range in its window and
-- `iot-platform verify` reports them. Not tenant data (no tenant column): tenants get no privilege.
CREATE TABLE iot.expired_offsets (
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    first_offset bigint      NOT NULL,
    last_offset  bigint      NOT NULL CHECK (last_offset >= first_offset),
    detected_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, first_offset)
);
COMMENT ON TABLE iot.expired_offsets IS 'Kafka offsets deleted by retention before the consumer stored them: lost records.';
GRANT SELECT, INSERT ON iot.expired_offsets TO iot_ingest;
GRANT SELECT ON iot.expired_offsets TO iot_analyst;

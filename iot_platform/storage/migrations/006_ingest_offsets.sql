-- The consumer's position: the next Kafka offset to store per topic and partition, written in the
-- same transaction as the rows. This, not Kafka's committed offset, is the source of truth.
CREATE TABLE iot.ingest_offsets (
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

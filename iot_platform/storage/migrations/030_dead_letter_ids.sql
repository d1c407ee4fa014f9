-- A bad message that the bridge produced twice (it crashed between the Kafka delivery and the MQTT
-- ack) reaches the dead-letter topic twice. Where its payload carries a message id, the first copy is
-- the dead letter and each later copy is recorded in iot.duplicate_dead_letters, so dead letters count
-- bad messages once while every consumed offset of the dead-letter topic stays accounted for.
ALTER TABLE iot.dead_letters ADD COLUMN message_id text;
CREATE UNIQUE INDEX dead_letters_bridge_message_id ON iot.dead_letters (mqtt_topic, message_id)
    WHERE source = 'bridge' AND message_id IS NOT NULL;

CREATE TABLE iot.duplicate_dead_letters (
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    mqtt_topic      text        NOT NULL,
    message_id      text        NOT NULL,
    tenant_id       text,       -- always NULL today (the bridge does not know it); kept for row-level security
    received_at     timestamptz NOT NULL,
    skipped_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX duplicate_dead_letters_received_at ON iot.duplicate_dead_letters (received_at);

-- The same row-level security as the other tables (020): the platform reads and writes, tenants see
-- only rows of their tenant (none here).
DO $policies$
DECLARE
    all_tenants constant text :=
        '(SELECT pg_has_role(%1$s, ''iot_analyst'', ''MEMBER'') OR pg_has_role(%1$s, ''iot_ingest'', ''MEMBER''))';
    platform constant text := format(all_tenants, 'current_user') || ' AND ' || format(all_tenants, 'session_user');
BEGIN
    ALTER TABLE iot.duplicate_dead_letters ENABLE ROW LEVEL SECURITY;
    ALTER TABLE iot.duplicate_dead_letters FORCE ROW LEVEL SECURITY;
    EXECUTE format('CREATE POLICY platform_insert ON iot.duplicate_dead_letters FOR INSERT TO PUBLIC WITH CHECK (%s)', platform);
    EXECUTE format('CREATE POLICY platform_delete ON iot.duplicate_dead_letters FOR DELETE TO PUBLIC USING (%s)', platform);
    EXECUTE format('CREATE POLICY platform_read ON iot.duplicate_dead_letters FOR SELECT TO PUBLIC USING (%s)', platform);
END
$policies$;

REVOKE ALL ON iot.duplicate_dead_letters FROM PUBLIC;
GRANT SELECT, INSERT ON iot.duplicate_dead_letters TO iot_ingest;
GRANT SELECT ON iot.duplicate_dead_letters TO iot_analyst;

-- Day partitions of iot.messages: iot.messages_pYYYYMMDD holds [day 00:00 UTC, next day 00:00 UTC).
-- Idempotent and safe under concurrent callers (consumer, migrations, Dagster): the advisory lock
-- serialises creators so two never race on the same name.
CREATE OR REPLACE FUNCTION iot.ensure_messages_partition(day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    partition_name text := 'messages_p' || to_char(day, 'YYYYMMDD');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('iot.messages partitions'));
    IF to_regclass(format('iot.%I', partition_name)) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE iot.%I PARTITION OF iot.messages FOR VALUES FROM (%L) TO (%L)',
            partition_name,
            (day::timestamp AT TIME ZONE 'UTC'),
            ((day + 1)::timestamp AT TIME ZONE 'UTC')
        );
    END IF;
    RETURN 'iot.' || partition_name;
END;
$$;

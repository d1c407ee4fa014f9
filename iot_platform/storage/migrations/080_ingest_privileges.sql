-- The consumer COPYs rows straight into their day partition (consumer/sql.py): COPY is refused on
-- iot.messages itself, which is under row-level security, and a partition has no policies of its
-- own. So iot_ingest holds INSERT (only) on every partition, granted here for those that exist and
-- by iot.ensure_messages_partition for each new one. Reading a partition directly stays closed:
-- nothing else is granted on partitions, and `iot-platform tenants sync` still revokes any tenant
-- or PUBLIC privilege on them. The platform write policy on iot.messages only ever admitted
-- iot_ingest and iot_analyst members, so no one may write a row who could not before.
CREATE OR REPLACE FUNCTION iot.ensure_messages_partition(day date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
        EXECUTE format('GRANT INSERT ON iot.%I TO iot_ingest', partition_name);
    END IF;
    RETURN 'iot.' || partition_name;
END;
$$;

DO $grants$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'iot.messages'::regclass LOOP
        EXECUTE format('GRANT INSERT ON %s TO iot_ingest', part);
    END LOOP;
END
$grants$;

-- The read policy of every tenant table looks up iot.tenant_roles, and a policy's subquery runs with
-- the privileges of the user querying: without SELECT on it, the ingest role could not read back a
-- single row of iot.message_ids, so every INSERT ... RETURNING the consumer runs for a copy of a
-- message id (and its lookup of the first claim) failed when it logged in as that role. Its own
-- policy shows a platform role every mapping, role names and tenant ids only: the ingest role reads
-- every tenant's rows already.
GRANT SELECT ON iot.tenant_roles TO iot_ingest;

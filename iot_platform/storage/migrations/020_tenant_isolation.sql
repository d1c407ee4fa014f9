-- Tenant isolation: row-level security keyed on database roles (issue 6).
-- Tables under RLS: iot.messages, iot.message_ids, iot.duplicate_messages, iot.dead_letters,
-- iot.rollup_hourly, iot.rollup_hourly_fields, iot.tenant_roles. Tenants are granted SELECT on
-- messages, dead_letters and the two rollup tables only.
--
-- Guarantee: a row of tenant data is visible to a query only when BOTH current_user and
-- session_user are entitled to its tenant. A role is entitled to a tenant when it is listed with
-- that tenant in iot.tenant_roles, and to every tenant when it is a member of iot_analyst or
-- iot_ingest (the platform role that runs this migration is made a member of iot_analyst).
--
-- Why both identities: current_user alone is raised by any SECURITY DEFINER function a tenant may
-- call (functions are executable by PUBLIC by default); session_user alone would ignore a
-- privileged session's SET ROLE to a tenant. Neither can be changed by SQL a tenant writes:
-- SET ROLE only reaches roles the tenant is a member of, and SET SESSION AUTHORIZATION needs a
-- superuser. No session variable (set_config, GUC) takes part: Grafana editors can run any SQL.
-- Views: current_user inside a view is the invoking user, so a view owned by the platform shows a
-- tenant only its rows; views in schema iot are also made security_invoker.
-- Partitions of iot.messages: RLS applies to queries through the parent only, so no tenant
-- privilege exists on any partition (iot-platform tenants sync re-asserts this).
-- FORCE: the owner is subject to the policies too; it keeps every row through its membership of
-- iot_analyst (reads) and the platform write policy (writes).
-- COPY FROM is refused by PostgreSQL on a table under RLS: writers COPY into a temporary staging
-- table and INSERT ... SELECT from it.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'iot_tenant_reader') THEN
        CREATE ROLE iot_tenant_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'iot_analyst') THEN
        CREATE ROLE iot_analyst NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'iot_ingest') THEN
        CREATE ROLE iot_ingest NOLOGIN;
    END IF;
    IF NOT pg_has_role(current_user, 'iot_analyst', 'MEMBER') THEN
        EXECUTE format('GRANT iot_analyst TO %I', current_user);
    END IF;
END
$roles$;

COMMENT ON ROLE iot_tenant_reader IS 'iot-platform: group of per-tenant read-only login roles (rows limited by iot.tenant_roles)';
COMMENT ON ROLE iot_analyst IS 'iot-platform: reads every row of schema iot';
COMMENT ON ROLE iot_ingest IS 'iot-platform: writes what the consumer writes, reads nothing else';

CREATE TABLE iot.tenant_roles (
    role_name text NOT NULL,
    tenant_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role_name, tenant_id)
);
CREATE INDEX tenant_roles_tenant_idx ON iot.tenant_roles (tenant_id);
COMMENT ON TABLE iot.tenant_roles IS 'Which database role may read which tenant''s rows (maintained by iot-platform tenants sync).';

DO $policies$
DECLARE
    -- A role expression entitled to every tenant. Wrapped in a scalar subquery so that it runs
    -- once per query (an InitPlan), not once per row; the tenant list is a hashed subplan.
    all_tenants constant text :=
        '(SELECT pg_has_role(%1$s, ''iot_analyst'', ''MEMBER'') OR pg_has_role(%1$s, ''iot_ingest'', ''MEMBER''))';
    entitled constant text :=
        '(' || all_tenants || ' OR tenant_id IN '
        '(SELECT r.tenant_id FROM iot.tenant_roles r WHERE r.role_name = %1$s::text))';
    platform constant text := format(all_tenants, 'current_user') || ' AND ' || format(all_tenants, 'session_user');
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['messages', 'message_ids', 'duplicate_messages', 'dead_letters',
                               'rollup_hourly', 'rollup_hourly_fields', 'tenant_roles'] LOOP
        EXECUTE format('ALTER TABLE iot.%I ENABLE ROW LEVEL SECURITY', tbl);
        EXECUTE format('ALTER TABLE iot.%I FORCE ROW LEVEL SECURITY', tbl);
        -- Writes: the platform only (tenants hold no write privilege either). Separate commands,
        -- not FOR ALL, so that reads are decided by the read policy alone.
        EXECUTE format('CREATE POLICY platform_insert ON iot.%I FOR INSERT TO PUBLIC WITH CHECK (%s)', tbl, platform);
        EXECUTE format('CREATE POLICY platform_update ON iot.%I FOR UPDATE TO PUBLIC USING (%s) WITH CHECK (%s)',
                       tbl, platform, platform);
        EXECUTE format('CREATE POLICY platform_delete ON iot.%I FOR DELETE TO PUBLIC USING (%s)', tbl, platform);
        IF tbl = 'tenant_roles' THEN
            -- A role sees its own mapping rows (the read policies look them up), never another's.
            EXECUTE format(
                'CREATE POLICY own_mapping ON iot.tenant_roles FOR SELECT TO PUBLIC USING ('
                'role_name = current_user::text OR role_name = session_user::text OR (%s))', platform);
        ELSE
            EXECUTE format('CREATE POLICY tenant_read ON iot.%I FOR SELECT TO PUBLIC USING (%s AND %s)',
                           tbl, format(entitled, 'current_user'), format(entitled, 'session_user'));
        END IF;
    END LOOP;
END
$policies$;

-- Privileges. Nothing is granted to PUBLIC; tenants read the four tables through their parents only.
REVOKE ALL ON ALL TABLES IN SCHEMA iot FROM PUBLIC;
GRANT USAGE ON SCHEMA iot TO iot_tenant_reader, iot_analyst, iot_ingest;
GRANT SELECT ON iot.messages, iot.dead_letters, iot.rollup_hourly, iot.rollup_hourly_fields, iot.tenant_roles
    TO iot_tenant_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA iot TO iot_analyst;
ALTER DEFAULT PRIVILEGES IN SCHEMA iot GRANT SELECT ON TABLES TO iot_analyst;
GRANT SELECT, INSERT ON iot.messages, iot.message_ids, iot.duplicate_messages, iot.dead_letters TO iot_ingest;
GRANT SELECT, INSERT, UPDATE ON iot.ingest_offsets TO iot_ingest;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA iot TO iot_ingest;
ALTER DEFAULT PRIVILEGES IN SCHEMA iot GRANT USAGE ON SEQUENCES TO iot_ingest;
-- The consumer creates a missing day partition on demand; creating a partition needs ownership of
-- iot.messages, so a consumer logging in with the ingest role calls the owner's function. It only
-- creates an empty partition for a date: nothing to read or change through it.
ALTER FUNCTION iot.ensure_messages_partition(date) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION iot.ensure_messages_partition(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION iot.ensure_messages_partition(date) TO iot_ingest;

DO $partitions_and_views$
DECLARE
    rel record;
BEGIN
    -- Existing partitions (at any depth) of iot.messages: no direct access for tenants or PUBLIC.
    FOR rel IN SELECT format('%I.%I', n.nspname, c.relname) AS name
               FROM pg_partition_tree('iot.messages') t
               JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE t.level > 0 LOOP
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC, iot_tenant_reader', rel.name);
    END LOOP;
    -- Views read with the privileges and policies of the querying role.
    FOR rel IN SELECT format('iot.%I', c.relname) AS name FROM pg_class c
               WHERE c.relnamespace = 'iot'::regnamespace AND c.relkind = 'v' LOOP
        EXECUTE format('ALTER VIEW %s SET (security_invoker = true)', rel.name);
    END LOOP;
END
$partitions_and_views$;

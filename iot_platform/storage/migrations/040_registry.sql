-- Device registry (issue 11): the source of truth for who may publish to the broker.
-- iot-platform tenants/devices write it; the broker_access asset makes the broker's dynamic-security
-- clients, roles and groups match it. Device ids are unique per project (tenant, project, device):
-- the broker user name is tenant.project.device. Ids follow IOT_ID_PATTERN, checked by the commands
-- (the pattern is a setting, so it is not repeated as a CHECK here).
-- Platform-only: no tenant role may read these tables (a tenant's device list is not tenant data
-- that RLS could scope today, and it names other tenants' customers). Analysts read them through
-- the default privileges of 020_tenant_isolation.sql.

CREATE TABLE IF NOT EXISTS iot.tenants (
    tenant_id    text PRIMARY KEY,
    display_name text NOT NULL DEFAULT '',
    status       text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS iot.devices (
    tenant_id              text NOT NULL REFERENCES iot.tenants (tenant_id),
    project_id             text NOT NULL,
    device_id              text NOT NULL,
    -- rotate_required: the broker lost the device's client; it is re-created disabled until
    -- `iot-platform devices rotate` issues a new password.
    status                 text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled', 'rotate_required')),
    created_at             timestamptz NOT NULL DEFAULT now(),
    credentials_rotated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, project_id, device_id)
);

REVOKE ALL ON iot.tenants, iot.devices FROM PUBLIC, iot_tenant_reader, iot_ingest;
GRANT SELECT ON iot.tenants, iot.devices TO iot_analyst;

-- Hourly rollups written by the Dagster asset `iot_rollup_hourly` (iot_platform.orchestration).
-- One row per (hour, tenant, project); the asset replaces an hour's rows in one transaction, so
-- the natural keys below are unique and a re-run yields identical rows. Rollups outlive the raw
-- retention window: iot_retention never touches these tables.

CREATE TABLE iot.rollup_hourly (
    hour             timestamptz NOT NULL,
    tenant_id        text        NOT NULL,
    project_id       text        NOT NULL,
    message_count    bigint      NOT NULL CHECK (message_count > 0),
    payload_bytes    bigint      NOT NULL CHECK (payload_bytes >= 0),
    distinct_devices bigint      NOT NULL CHECK (distinct_devices >= 0),
    computed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (hour, tenant_id, project_id),
    CHECK (hour = date_trunc('hour', hour, 'UTC'))
);

-- Dashboards read one tenant's series over time.
CREATE INDEX rollup_hourly_tenant_hour_idx ON iot.rollup_hourly (tenant_id, project_id, hour);

CREATE TABLE iot.rollup_hourly_fields (
    hour        timestamptz      NOT NULL,
    tenant_id   text             NOT NULL,
    project_id  text             NOT NULL,
    field       text             NOT NULL,
    value_count bigint           NOT NULL CHECK (value_count > 0),
    min_value   double precision NOT NULL,
    max_value   double precision NOT NULL,
    avg_value   double precision NOT NULL,
    sum_value   double precision NOT NULL,
    PRIMARY KEY (hour, tenant_id, project_id, field),
    FOREIGN KEY (hour, tenant_id, project_id)
        REFERENCES iot.rollup_hourly (hour, tenant_id, project_id) ON DELETE CASCADE
);

CREATE INDEX rollup_hourly_fields_tenant_hour_idx
    ON iot.rollup_hourly_fields (tenant_id, project_id, field, hour);

"""Jobs and schedules of the batch side: rollups, storage maintenance, checks."""

from datetime import datetime, timedelta, timezone

import dagster as dg

from iot_platform.core.rollup_math import hour_of
from iot_platform.orchestration.assets.access import broker_access
from iot_platform.orchestration.assets.rollup_assets import PARTITION_FORMAT, iot_rollup_hourly
from iot_platform.orchestration.assets.serving import grafana_dashboards, tenant_roles
from iot_platform.orchestration.assets.storage import iot_retention, iot_schema
from iot_platform.orchestration.checks import RERUN_HOURS, SCHEDULED_CHECKS

BATCH_TAG = "iot/batch"  # dagster.yaml allows one run per value at a time: batches never pile up

rollup_job = dg.define_asset_job(
    "iot_rollup_hourly_job",
    selection=dg.AssetSelection.assets(iot_rollup_hourly),  # with its blocking check
    tags={BATCH_TAG: "rollup"},
    description="Recompute the hourly rollups of one hour.",
)
storage_maintenance_job = dg.define_asset_job(
    "storage_maintenance",
    selection=dg.AssetSelection.assets(iot_schema, iot_retention),
    tags={BATCH_TAG: "maintenance"},
    description="Pending migrations, day partitions ahead, then retention.",
)
serving_job = dg.define_asset_job(
    "serving_refresh",
    selection=dg.AssetSelection.assets(tenant_roles, grafana_dashboards),
    tags={BATCH_TAG: "serving"},
    description="Tenant roles for the registered tenants, then the Grafana dashboards.",
)
access_job = dg.define_asset_job(
    "broker_access_refresh",
    selection=dg.AssetSelection.assets(broker_access),  # with its check
    tags={BATCH_TAG: "access"},
    description="Make the broker's access configuration equal the registry, then check it.",
)
checks_job = dg.define_asset_job(
    "iot_checks",
    selection=dg.AssetSelection.checks(*SCHEDULED_CHECKS),
    tags={BATCH_TAG: "checks"},
    description="Completeness, freshness, dead-letter rate and rollup consistency.",
)


def hours_to_roll(tick: datetime, rerun_hours: int = RERUN_HOURS) -> list[str]:
    """Partition keys for a tick: the hour that just closed, then the ``rerun_hours`` before it."""
    closed = hour_of(tick) - timedelta(hours=1)
    return [(closed - timedelta(hours=n)).strftime(PARTITION_FORMAT) for n in range(rerun_hours + 1)]


@dg.schedule(
    cron_schedule="5 * * * *",
    job=rollup_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="At :05, roll up the hour that just closed and re-run the 3 before it for late data.",
)
def rollup_hourly_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    tick = context.scheduled_execution_time or datetime.now(timezone.utc)
    stamp = tick.astimezone(timezone.utc).strftime(PARTITION_FORMAT)
    return [dg.RunRequest(run_key=f"{key}@{stamp}", partition_key=key) for key in hours_to_roll(tick)]


storage_maintenance_schedule = dg.ScheduleDefinition(
    name="storage_maintenance_schedule",
    job=storage_maintenance_job,
    cron_schedule="15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly at :15: migrations, partitions ahead, retention.",
)
serving_schedule = dg.ScheduleDefinition(
    name="serving_refresh_schedule",
    job=serving_job,
    cron_schedule="25 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly at :25, after the rollups: tenant roles, then dashboards.",
)
checks_schedule = dg.ScheduleDefinition(
    name="iot_checks_schedule",
    job=checks_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 15 minutes: the data-quality checks.",
)

access_schedule = dg.ScheduleDefinition(
    name="broker_access_schedule",
    job=access_job,
    cron_schedule="*/10 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 10 minutes: repair drift between the registry and the broker (a deleted client, a changed ACL).",
)

JOBS = [rollup_job, storage_maintenance_job, serving_job, checks_job, access_job]
SCHEDULES = [rollup_hourly_schedule, storage_maintenance_schedule, serving_schedule, checks_schedule, access_schedule]

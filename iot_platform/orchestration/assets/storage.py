"""Schema and retention of the platform database."""

from datetime import datetime, timezone

import dagster as dg

from iot_platform.orchestration.resources import PlatformSettings, PostgresResource
from iot_platform.storage.migrate import apply_migrations
from iot_platform.storage.retention import apply_retention

STORAGE_GROUP = "storage"


@dg.asset(group_name=STORAGE_GROUP, kinds={"postgres"})
def iot_schema(
    context: dg.AssetExecutionContext, platform: PlatformSettings, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Schema `iot` at the newest migration, with day partitions ahead (idempotent)."""
    applied = apply_migrations(platform.get(postgres))
    context.log.info(f"{len(applied)} migration(s) applied now")
    return dg.MaterializeResult(metadata={"applied_now": dg.MetadataValue.json(applied), "applied_count": len(applied)})


@dg.asset(group_name=STORAGE_GROUP, deps=["iot_schema", "iot_messages"], kinds={"postgres"})
def iot_retention(platform: PlatformSettings, postgres: PostgresResource) -> dg.MaterializeResult:
    """Raw rows, dead letters and dedupe records older than the retention window, removed."""
    settings = platform.get(postgres)
    report = apply_retention(settings, now=datetime.now(timezone.utc))
    return dg.MaterializeResult(
        metadata={
            "cutoff": dg.MetadataValue.timestamp(report.cutoff),
            "retention_hours": settings.retention_hours,
            "dropped_partitions": dg.MetadataValue.json(list(report.dropped_partitions)),
            "dropped_rows_estimate": report.dropped_rows_estimate,
            "deleted_rows": dg.MetadataValue.json(report.deleted_rows),
            "deleted_messages": report.deleted_rows.get("messages", 0),
        }
    )

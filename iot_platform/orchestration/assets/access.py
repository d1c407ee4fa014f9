"""Who may publish: the device registry, and the broker's access configuration made from it."""

from __future__ import annotations

import dagster as dg

from iot_platform.access.sync import check_broker_access, sync_broker_access
from iot_platform.orchestration.resources import PlatformSettings, PostgresResource

ACCESS_GROUP = "access"

device_registry = dg.AssetSpec(
    "device_registry",
    deps=["iot_schema"],
    description="iot.tenants and iot.devices: who may publish; written by `iot-platform tenants|devices`.",
    group_name=ACCESS_GROUP,
    kinds={"postgres"},
)


@dg.asset(group_name=ACCESS_GROUP, deps=[device_registry], kinds={"mosquitto"})
def broker_access(platform: PlatformSettings, postgres: PostgresResource) -> dg.MaterializeResult:
    """Mosquitto's dynamic-security clients, roles and groups made equal to the registry (idempotent; repairs drift)."""
    report = sync_broker_access(platform.get(postgres))
    return dg.MaterializeResult(
        metadata={
            "commands": report.commands,
            "drift_repaired": dg.MetadataValue.json(report.drift_before.as_metadata()),
            # re-created disabled: their passwords are gone with the client; `devices rotate` issues new ones
            "rotate_required": dg.MetadataValue.json(list(report.rotate_required)),
            "drift_after": dg.MetadataValue.json(report.drift_after.as_metadata()),
        }
    )


@dg.asset_check(asset=broker_access, description="The broker's clients, roles, groups and ACLs are exactly the registry's.")
def broker_access_matches_registry(platform: PlatformSettings, postgres: PostgresResource) -> dg.AssetCheckResult:
    drift = check_broker_access(platform.get(postgres))
    return dg.AssetCheckResult(
        passed=drift.clean,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={name: dg.MetadataValue.json(values) for name, values in drift.as_metadata().items()},
    )

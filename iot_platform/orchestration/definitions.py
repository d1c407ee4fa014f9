"""The Dagster code location of the platform (served through workspace.yaml).

Lineage: device_registry -> broker_access -> mqtt_telemetry -> kafka_iot_messages -> iot_messages -> iot_rollup_hourly -> tenant_roles
-> grafana_dashboards; the bridge and consumer run as never-ending service jobs kept alive by service_watchdog.
"""

from __future__ import annotations

import dagster as dg

from iot_platform.orchestration.assets.access import broker_access, broker_access_matches_registry, device_registry
from iot_platform.orchestration.assets.rollup_assets import iot_rollup_hourly
from iot_platform.orchestration.assets.serving import grafana_dashboards, tenant_roles
from iot_platform.orchestration.assets.sources import SOURCE_SPECS
from iot_platform.orchestration.assets.storage import iot_retention, iot_schema
from iot_platform.orchestration.checks import ALL_CHECKS
from iot_platform.orchestration.observer import platform_observer
from iot_platform.orchestration.resources import platform_resources
from iot_platform.orchestration.schedules import JOBS, SCHEDULES
from iot_platform.orchestration.services import DRAIN_JOBS, SERVICE_JOBS, pipes_client
from iot_platform.orchestration.watchdog import service_watchdog

defs = dg.Definitions(
    assets=[device_registry, broker_access, *SOURCE_SPECS, iot_schema, iot_retention, iot_rollup_hourly, tenant_roles, grafana_dashboards],
    asset_checks=[*ALL_CHECKS, broker_access_matches_registry],
    jobs=[*SERVICE_JOBS.values(), *DRAIN_JOBS.values(), *JOBS],
    schedules=SCHEDULES,
    sensors=[service_watchdog, platform_observer],
    resources={**platform_resources(), "pipes": pipes_client},
)

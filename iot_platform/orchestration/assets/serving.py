"""What readers get: per-tenant database roles and the Grafana dashboards over the rollups."""

import logging

import dagster as dg

from iot_platform.dashboards.provision import build_dashboards, push_tenant_orgs, push_to_grafana
from iot_platform.orchestration.resources import PlatformSettings, PostgresResource
from iot_platform.storage.tenants import registered_tenant_roles, sync_tenants

SERVING_GROUP = "serving"
log = logging.getLogger(__name__)


@dg.asset(group_name=SERVING_GROUP, deps=["iot_schema", "device_registry", "iot_messages", "iot_rollup_hourly"], kinds={"postgres"})
def tenant_roles(platform: PlatformSettings, postgres: PostgresResource) -> dg.MaterializeResult:
    """One read-only login role per registered tenant (row-level security), idempotent."""
    result = sync_tenants(platform.get(postgres))
    return dg.MaterializeResult(
        metadata={
            "tenants": len(result.tenants),
            "roles_created": dg.MetadataValue.json(list(result.roles_created)),
            "passwords_set": result.passwords_set,
            "privileges_revoked": dg.MetadataValue.json(list(result.privileges_revoked)),
        }
    )


@dg.asset(group_name=SERVING_GROUP, deps=["iot_rollup_hourly", tenant_roles], kinds={"grafana"})
def grafana_dashboards(platform: PlatformSettings, postgres: PostgresResource) -> dg.MaterializeResult:
    """Grafana provisioning files under IOT_HOME/grafana; with IOT_GRAFANA_URL set, pushed to Grafana with one organisation per tenant."""
    settings = platform.get(postgres)
    out_dir = settings.home / "grafana" / "provisioning"
    files = build_dashboards(settings, out_dir)
    metadata: dict = {"out_dir": str(out_dir), "files": dg.MetadataValue.json([str(p.relative_to(out_dir)) for p in files])}
    if settings.grafana_url:
        pushed = push_to_grafana(settings)
        if settings.tenant_password_key is None:
            log.warning("Grafana is configured but IOT_TENANT_PASSWORD_KEY is not: tenant organisations are not provisioned")
        orgs = push_tenant_orgs(settings, registered_tenant_roles(settings))
        metadata |= {"grafana_url": settings.grafana_url, "dashboards_pushed": dg.MetadataValue.json(list(pushed.dashboards)),
                     "datasource_pushed": pushed.datasource_pushed, "grafana_orgs": dg.MetadataValue.json(list(orgs))}
    return dg.MaterializeResult(metadata=metadata)

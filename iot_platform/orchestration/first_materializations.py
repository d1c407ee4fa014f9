"""`python -m iot_platform.orchestration.first_materializations`: the state `dev up` shows in Dagster at once.

Guarantee: when this exits 0, the Dagster instance of ``DAGSTER_HOME`` holds a materialization of
``iot_schema`` (the migrations `dev up` applied, reported without a run: they ran before Dagster
started, because the services need the schema) and a successful run of the ``serving_refresh`` job
(``tenant_roles``, then ``grafana_dashboards``), executed in this process by the same asset code the
hourly schedule runs. Both are idempotent, so running this again only adds events. Settings come
from the ``IOT_*`` environment, as in every Dagster process of the platform.
"""

from __future__ import annotations

import argparse
import sys

import dagster as dg

from iot_platform.orchestration.assets.storage import iot_schema
from iot_platform.orchestration.definitions import defs
from iot_platform.orchestration.schedules import serving_job
from iot_platform.storage.migrate import load_migrations


def schema_materialization(applied: list[str]) -> dg.AssetMaterialization:
    """``iot_schema`` as `dev up` left it: the same metadata keys as the asset, plus the newest migration."""
    return dg.AssetMaterialization(
        asset_key=iot_schema.key,
        description="Schema applied by `iot-platform dev up` before Dagster started.",
        metadata={
            "applied_now": dg.MetadataValue.json(applied),
            "applied_count": len(applied),
            "newest_migration": load_migrations()[-1].name,
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--applied", default="", help="Comma-separated migration files `dev up` applied now.")
    args = parser.parse_args(argv)
    applied = [name for name in args.applied.split(",") if name]
    with dg.DagsterInstance.get() as instance:
        instance.report_runless_asset_event(schema_materialization(applied))
        result = defs.resolve_job_def(serving_job.name).execute_in_process(instance=instance, raise_on_error=False)
    if not result.success:
        print(f"{serving_job.name} failed: see its run {result.run_id} in the Dagster UI", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

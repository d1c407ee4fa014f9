"""Dashboards: rendering, provisioning files and the Grafana push (pure, with a fake Grafana)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from iot_platform.dashboards.macros import Expansion, Variable, expand
from iot_platform.dashboards.model import Dashboard
from iot_platform.dashboards.overview import PLATFORM_OVERVIEW
from iot_platform.dashboards.provision import (
    DASHBOARDS,
    build_dashboards,
    provisioning_files,
    push_tenant_org,
    push_tenant_orgs,
    push_to_grafana,
)
from iot_platform.storage.tenant_identity import derive_password
from iot_platform.dashboards.render import DATASOURCE_UID, render, to_json_text
from iot_platform.dashboards.tenant_telemetry import TENANT_TELEMETRY
from iot_platform.settings import Settings

REPO = Path(__file__).resolve().parents[2]
ALL = pytest.mark.parametrize("dashboard", list(DASHBOARDS.values()), ids=list(DASHBOARDS))


def _targets(model: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for p in model["panels"] for t in p.get("targets", [])]


@ALL
def test_render_is_deterministic(dashboard: Dashboard) -> None:
    """Rendering twice gives identical text, so regenerated files diff only on real changes."""
    assert to_json_text(render(dashboard)) == to_json_text(render(dashboard))


@ALL
def test_rendered_panels_carry_the_model_sql(dashboard: Dashboard) -> None:
    """Every panel of the model becomes one panel with its SQL, on the platform data source, with a unique id."""
    model = render(dashboard)
    assert [t["rawSql"] for t in _targets(model)] == [p.sql for p in dashboard.panels()]
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids)) and 0 not in ids
    for panel in model["panels"]:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "grafana-postgresql-datasource", "uid": DATASOURCE_UID}
    assert [v["query"] for v in model.get("templating", {}).get("list", [])] == [v.sql for v in dashboard.variables]


def test_tenant_telemetry_has_tenant_and_project_variables() -> None:
    """The tenant dashboard is driven by $tenant and $project and every panel query uses both."""
    names = [v.name for v in TENANT_TELEMETRY.variables]
    assert names[:2] == ["tenant", "project"]
    for panel in TENANT_TELEMETRY.panels():
        assert "${tenant:sqlstring}" in panel.sql and "${project:sqlstring}" in panel.sql


def test_overview_covers_the_issue() -> None:
    """Platform overview shows rate, per-tenant counts and bytes, dead letters, consumer delay, freshness."""
    titles = " ".join(p.title.lower() for p in PLATFORM_OVERVIEW.panels())
    for word in ("rate", "tenant", "bytes", "dead letters", "consumer", "freshness"):
        assert word in titles


@ALL
def test_every_query_expands(dashboard: Dashboard) -> None:
    """Every variable and panel query expands without an unknown variable or macro."""
    now = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
    expansion = Expansion(now - timedelta(days=1), now, variables={
        "tenant": Variable(("acme",)), "project": Variable(("p1", "p2"), multi=True), "field": Variable(("t",), multi=True)})
    for _, sql in dashboard.queries():
        expanded = expand(sql, expansion)
        assert "$" not in expanded


def test_committed_deploy_files_are_current() -> None:
    """deploy/grafana in git is byte for byte what build_dashboards generates: regenerate after a change."""
    for relative, text in provisioning_files().items():
        assert (REPO / "deploy" / "grafana" / relative).read_text() == text, relative


def test_build_dashboards_writes_once(tmp_path: Path) -> None:
    """Files are written, returned sorted, and an unchanged file is not rewritten (its mtime stays)."""
    paths = build_dashboards(Settings(), tmp_path)
    assert paths == sorted(paths) and all(p.is_file() for p in paths)
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert build_dashboards(Settings(), tmp_path) == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    datasource = yaml.safe_load((tmp_path / "datasources" / "iot-postgres.yaml").read_text())
    assert datasource["datasources"][0]["secureJsonData"]["password"] == "${IOT_GRAFANA_PG_PASSWORD}"
    assert json.loads((tmp_path / "dashboards" / "platform-overview.json").read_text())["uid"] == PLATFORM_OVERVIEW.uid


def test_no_secret_reaches_the_files(tmp_path: Path) -> None:
    """Passwords and keys from settings never appear in the provisioning files."""
    settings = Settings(pg_password=SecretStr("pg-secret-1"), tenant_password_key=SecretStr("key-secret-2"),
                        grafana_password=SecretStr("gf-secret-3"))
    text = "".join(p.read_text() for p in build_dashboards(settings, tmp_path))
    for secret in ("pg-secret-1", "key-secret-2", "gf-secret-3"):
        assert secret not in text


class FakeGrafana:
    """Records the state a real Grafana would hold after the upserts."""

    def __init__(self) -> None:
        self.orgs: dict[str, int] = {"Main Org.": 1}
        self.datasources: dict[tuple[int, str], dict[str, Any]] = {}
        self.dashboards: dict[tuple[int, str], dict[str, Any]] = {}

    def ensure_org(self, name: str) -> int:
        return self.orgs.setdefault(name, len(self.orgs) + 1)

    def upsert_datasource(self, org_id: int, payload: dict[str, Any]) -> None:
        self.datasources[(org_id, payload["uid"])] = payload

    def upsert_dashboard(self, org_id: int, model: dict[str, Any], folder_title: str | None = None) -> None:
        self.dashboards[(org_id, model["uid"])] = model


def test_push_is_idempotent_and_uses_the_analyst_role() -> None:
    """Pushing twice leaves one data source (analyst login, derived password) and each dashboard once."""
    fake = FakeGrafana()
    settings = Settings(grafana_url="http://127.0.0.1:1", tenant_password_key=SecretStr("k"), analyst_role="analyst_x",
                        pg_host="db.example", pg_port=6543)
    first = push_to_grafana(settings, fake)
    state = (dict(fake.datasources), dict(fake.dashboards))
    assert push_to_grafana(settings, fake) == first
    assert (fake.datasources, fake.dashboards) == state
    datasource = fake.datasources[(1, DATASOURCE_UID)]
    assert datasource["user"] == "analyst_x" and datasource["url"] == "db.example:6543"
    assert datasource["secureJsonData"]["password"] not in ("", "k")
    assert set(fake.dashboards) == {(1, d.uid) for d in DASHBOARDS.values()}


def test_push_without_key_sends_dashboards_only() -> None:
    """Without a password key there is no password to give Grafana: only the dashboards are pushed."""
    fake = FakeGrafana()
    result = push_to_grafana(Settings(grafana_url="http://127.0.0.1:1"), fake)
    assert not result.datasource_pushed and not fake.datasources and len(fake.dashboards) == len(DASHBOARDS)


def test_tenant_org_is_bound_to_the_tenant_role() -> None:
    """A tenant's organisation gets a data source logging in as the tenant's role and the tenant dashboard only."""
    fake = FakeGrafana()
    org = push_tenant_org(Settings(), fake, "acme", "tenant_acme", "pw")
    assert push_tenant_org(Settings(), fake, "acme", "tenant_acme", "pw") == org != 1
    assert fake.datasources[(org, DATASOURCE_UID)]["user"] == "tenant_acme"
    assert {uid for (o, uid) in fake.dashboards if o == org} == {TENANT_TELEMETRY.uid}


def test_tenant_orgs_log_in_with_each_role_and_its_derived_password() -> None:
    """Every (tenant, role) gets its organisation, its data source logging in as that role with the
    password `tenants sync` set; without the password key nothing is pushed (no password to give)."""
    fake = FakeGrafana()
    roles = [("acme", "tenant_acme"), ("Beta", "tenant_beta-0123456789")]
    assert push_tenant_orgs(Settings(), roles, fake) == () and fake.orgs == {"Main Org.": 1}
    settings = Settings(tenant_password_key=SecretStr("k"))
    assert push_tenant_orgs(settings, roles, fake) == ("acme", "Beta")
    for tenant, role in roles:
        datasource = fake.datasources[(fake.orgs[f"Tenant {tenant}"], DATASOURCE_UID)]
        assert datasource["user"] == role and datasource["secureJsonData"]["password"] == derive_password("k", role)

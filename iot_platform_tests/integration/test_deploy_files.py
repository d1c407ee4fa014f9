"""deploy/compose.yaml and deploy/grafana cannot run here (no Grafana, no Docker): their files are parsed
and checked instead: required keys, mounted paths exist, every ${VAR} Grafana needs is set by compose."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from iot_platform.dashboards.provision import CONTAINER_PROVISIONING, DASHBOARDS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ENV_REFERENCE = re.compile(r"\$\{(\w+)\}")


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _grafana_env() -> dict[str, str]:
    return _compose()["services"]["grafana"]["environment"]


def test_compose_defines_a_pinned_grafana_with_provisioning_mounts() -> None:
    """The grafana service pins its image and mounts existing provisioning folders read-only."""
    grafana = _compose()["services"]["grafana"]
    assert re.fullmatch(r"grafana/grafana(-oss)?:\d+\.\d+\.\d+", grafana["image"])
    mounts = [v for v in grafana["volumes"] if v.startswith("./")]
    assert {m.split(":")[1] for m in mounts} == {f"{CONTAINER_PROVISIONING}/datasources", f"{CONTAINER_PROVISIONING}/dashboards"}
    for mount in mounts:
        source, _, mode = mount.split(":")
        assert (DEPLOY / source).is_dir() and mode == "ro", mount
    assert set(_compose()["volumes"]) >= {v.split(":")[0] for v in grafana["volumes"] if not v.startswith("./")}


def test_compose_requires_secrets_instead_of_defaulting_them() -> None:
    """Admin and database passwords must be given (`:?`); nothing secret has a default in the file."""
    env = _grafana_env()
    assert ":?" in env["GF_SECURITY_ADMIN_PASSWORD"] and ":?" in env["IOT_GRAFANA_PG_PASSWORD"]


def test_every_provisioning_variable_is_set_by_compose() -> None:
    """Each ${VAR} in the data source file is an environment variable of the grafana service."""
    text = (DEPLOY / "grafana" / "datasources" / "iot-postgres.yaml").read_text()
    referenced = set(ENV_REFERENCE.findall(text))
    assert referenced == {"IOT_GRAFANA_PG_ADDRESS", "IOT_GRAFANA_PG_DATABASE", "IOT_GRAFANA_PG_USER",
                          "IOT_GRAFANA_PG_PASSWORD", "IOT_GRAFANA_PG_SSLMODE"}
    assert referenced <= set(_grafana_env())


def test_datasource_file_has_grafanas_required_keys() -> None:
    """The data source file is Grafana provisioning v1 with name, type, uid, url, user, database and a secure password."""
    document = yaml.safe_load((DEPLOY / "grafana" / "datasources" / "iot-postgres.yaml").read_text())
    assert document["apiVersion"] == 1
    (datasource,) = document["datasources"]
    for key in ("name", "type", "uid", "url", "user", "access"):
        assert datasource[key], key
    assert datasource["type"] == "grafana-postgresql-datasource"
    assert datasource["jsonData"]["database"] and "password" in datasource["secureJsonData"]
    assert "password" not in datasource


def test_dashboard_provider_points_at_the_mounted_json() -> None:
    """The provider loads files from the container folder where compose mounts the dashboards' JSON."""
    document = yaml.safe_load((DEPLOY / "grafana" / "dashboards" / "iot-platform.yaml").read_text())
    (provider,) = document["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == f"{CONTAINER_PROVISIONING}/dashboards"
    files = sorted(p.name for p in (DEPLOY / "grafana" / "dashboards").glob("*.json"))
    assert files == sorted(f"{name}.json" for name in DASHBOARDS)
    for path in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        model = json.loads(path.read_text())
        assert model["uid"] and model["title"] and model["panels"], path.name
        assert all(t["datasource"]["uid"] == "iot-postgres" for t in model["panels"] if t["type"] != "row")

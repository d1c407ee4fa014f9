"""The broker_access asset repairs drift from the registry, and its check reports drift as evidence."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from pydantic import SecretStr

from iot_platform.access import operations
from iot_platform.access.dynsec import DynsecClient
from iot_platform.access.repair import create_client
from iot_platform.access.state import ClientSpec
from iot_platform.orchestration.assets.access import broker_access, broker_access_matches_registry
from iot_platform.orchestration.resources import platform_resources
from iot_platform.settings import Settings
from iot_platform.stack.certs import server_certificate
from iot_platform.stack.mosquitto import MosquittoServer, new_admin
from iot_platform.stack.ports import free_port
from iot_platform.storage.migrate import apply_migrations

pytestmark = pytest.mark.integration


@pytest.fixture
def private(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Its own broker: the asset deletes whatever the registry does not name (other tests' clients included)."""
    server = MosquittoServer(tmp_path / "mosquitto", None, admin=new_admin(), tls_port=free_port(),
                             tls=server_certificate(tmp_path / "tls", "mosquitto"))
    server.start()
    try:
        private = settings.model_copy(update={
            "mqtt_url": server.url, "mqtt_ca_file": server.ca_file, "mqtt_admin_username": server.admin.username,
            "mqtt_admin_password": server.admin.password, "mqtt_username": "iot-bridge",
            "mqtt_password": SecretStr(secrets.token_urlsafe(18)),
        })
        apply_migrations(private)
        yield private
    finally:
        server.kill()


def _run(settings: Settings) -> tuple[dict[str, object], dg.AssetCheckEvaluation]:
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([broker_access, broker_access_matches_registry], instance=instance,
                                resources=platform_resources(settings))
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("broker_access")[0].metadata.items()}
    return metadata, result.get_asset_check_evaluations()[0]


def _check(settings: Settings) -> dg.AssetCheckEvaluation:
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([broker_access, broker_access_matches_registry], instance=instance,
                                resources=platform_resources(settings),
                                selection=dg.AssetSelection.checks(broker_access_matches_registry), raise_on_error=False)
    return result.get_asset_check_evaluations()[0]


def test_asset_repairs_drift_and_the_check_shows_it(private: Settings) -> None:
    operations.add_tenant(private, "ta")
    operations.add_device(private, "ta", "p1", "d1")
    operations.add_device(private, "ta", "p2", "d2")
    metadata, check = _run(private)
    assert check.passed and metadata["drift_after"] == {"missing": [], "extra": [], "mismatched": []}
    assert metadata["drift_repaired"]["missing"] == ["client iot-bridge", "role platform:iot-bridge"]  # type: ignore[index]

    with DynsecClient(private) as admin:  # drift: a lost device, an intruder, a widened ACL
        admin.execute([
            {"command": "deleteClient", "username": "ta.p1.d1"},
            *create_client(ClientSpec("intruder"), "x"),
            {"command": "addRoleACL", "rolename": "tenant:ta", "acltype": "publishClientSend", "topic": "#", "allow": True},
        ])
    drifted = _check(private)
    assert not drifted.passed
    evidence = {k: v.value for k, v in drifted.metadata.items()}
    assert evidence == {"missing": ["client ta.p1.d1"], "extra": ["client intruder"], "mismatched": ["role tenant:ta"]}

    metadata, check = _run(private)
    assert check.passed and metadata["rotate_required"] == ["ta.p1.d1"]
    with DynsecClient(private) as admin:
        state = admin.read_state()
    assert state.clients["ta.p1.d1"].disabled and "intruder" not in state.clients
    _, rows = operations.list_registry(private, "ta")
    assert [(r["device"], r["status"]) for r in rows] == [("d1", "rotate_required"), ("d2", "enabled")]

    operations.rotate_device(private, "ta", "p1", "d1")  # a new password re-enables it
    metadata, check = _run(private)
    assert check.passed and metadata["commands"] == 0  # idempotent

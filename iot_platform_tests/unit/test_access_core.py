"""The access core: ids, ACL topics, the desired broker state, drift and its repair (pure)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from iot_platform.access.dynsec_json import initial_config, parse_state, password_hash
from iot_platform.access.names import InvalidId, device_username, grammar_filter, shared_filter, topic_pattern, validate_id
from iot_platform.access.repair import repair_commands
from iot_platform.access.state import (
    DISABLED,
    ROTATE_REQUIRED,
    Acl,
    BrokerState,
    ClientSpec,
    DeviceRecord,
    TenantRecord,
    bridge_client,
    desired_state,
    diff,
)
from iot_platform.settings import DEFAULT_ID_PATTERN, DEFAULT_TOPIC_GRAMMAR

G = DEFAULT_TOPIC_GRAMMAR
P = "mtic/msg/client/realtime"


@pytest.mark.parametrize("value", ["acme", "a-b_c", "A1", "x" * 64])
def test_valid_ids_pass(value: str) -> None:
    assert validate_id("tenant", value, DEFAULT_ID_PATTERN) == value


@pytest.mark.parametrize("value", ["", "a b", "a/b", "a+b", "#", "x" * 65, "a.b", "ok\n"])
def test_invalid_ids_name_the_rule(value: str) -> None:
    with pytest.raises(InvalidId, match=r"IOT_ID_PATTERN"):
        validate_id("device", value, DEFAULT_ID_PATTERN)


@pytest.mark.parametrize(
    ("grammar", "tenant", "project", "expected"),
    [
        (G, "ta", "p1", f"{P}/ta/p1/#"),
        (G, "ta", None, f"{P}/ta/#"),
        ("t1/x/{tenant_id}/{project_id}", "ta", "p1", "t1/x/ta/p1/#"),
        ("a/{region}/{tenant_id}/{project_id}[/...]", "ta", "p1", "a/+/ta/p1/#"),
        ("a/{project_id}/{tenant_id}[/...]", "ta", None, "a/+/ta/#"),
        ("a/{project_id}/{tenant_id}[/...]", "ta", "p1", "a/p1/ta/#"),
    ],
)
def test_topic_pattern_follows_the_grammar(grammar: str, tenant: str, project: str | None, expected: str) -> None:
    assert topic_pattern(grammar, tenant, project) == expected


def test_filters() -> None:
    assert grammar_filter(G) == f"{P}/#"
    assert shared_filter(f"{P}/#") == f"$share/+/{P}/#"
    assert device_username("ta", "p1", "d1") == "ta.p1.d1"


def _registry() -> tuple[list[TenantRecord], list[DeviceRecord]]:
    tenants = [TenantRecord("ta"), TenantRecord("tb", status=DISABLED)]
    devices = [
        DeviceRecord("ta", "p1", "d1"),
        DeviceRecord("ta", "p2", "d1", status=DISABLED),
        DeviceRecord("ta", "p2", "d2", status=ROTATE_REQUIRED),
        DeviceRecord("tb", "p1", "d1"),
    ]
    return tenants, devices


def test_desired_state_confines_each_device_to_its_project_and_tenant() -> None:
    tenants, devices = _registry()
    state = desired_state(tenants, devices, G, [bridge_client("iot-bridge", f"{P}/#")])
    d1 = state.clients["ta.p1.d1"]
    assert d1 == ClientSpec("ta.p1.d1", ("project:ta:p1",), ("tenant:ta",), "ta.p1.d1", disabled=False)
    assert state.roles["project:ta:p1"] == (
        Acl("publishClientSend", f"{P}/ta/#", False, 0),
        Acl("publishClientSend", f"{P}/ta/p1/#", True, 1),
    )
    assert state.roles["tenant:ta"] == (Acl("publishClientSend", f"{P}/ta/#", True, 0),)
    assert state.groups == {"tenant:ta": ("tenant:ta",), "tenant:tb": ("tenant:tb",)}
    # disabled device, device awaiting rotation, every device of a disabled tenant: disabled clients
    assert [state.clients[u].disabled for u in ("ta.p2.d1", "ta.p2.d2", "tb.p1.d1")] == [True, True, True]
    bridge_acls = state.roles["platform:iot-bridge"]
    assert {a.acltype for a in bridge_acls} == {"subscribePattern", "publishClientReceive"}  # never publishClientSend
    assert Acl("subscribePattern", f"$share/+/{P}/#", True) in bridge_acls
    assert state.clients["iot-bridge"].client_id is None  # replicas share it


def test_a_device_of_an_unknown_tenant_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown tenant"):
        desired_state([], [DeviceRecord("ta", "p1", "d1")], G)


def _actual_from(state: BrokerState) -> BrokerState:
    """Round trip through the plugin's JSON, as DynsecClient.read_state would parse it."""
    clients = [
        {"username": c.username, "roles": [{"rolename": r} for r in c.roles], "groups": [{"groupname": g} for g in c.groups],
         **({"clientid": c.client_id} if c.client_id else {}), **({"disabled": True} if c.disabled else {})}
        for c in state.clients.values()
    ]
    roles = [{"rolename": n, "acls": [{"acltype": a.acltype, "topic": a.topic, "allow": a.allow, "priority": a.priority} for a in acls]}
             for n, acls in state.roles.items()]
    groups = [{"groupname": n, "roles": [{"rolename": r} for r in rs]} for n, rs in state.groups.items()]
    return parse_state(clients, roles, groups)


def test_no_drift_and_no_commands_when_the_broker_matches() -> None:
    tenants, devices = _registry()
    desired = desired_state(tenants, devices, G)
    actual = _actual_from(desired)
    assert diff(desired, actual).clean
    assert repair_commands(desired, actual, lambda _u: "pw") == []


def test_drift_names_missing_extra_and_mismatched() -> None:
    tenants, devices = _registry()
    desired = desired_state(tenants, devices, G)
    clients = dict(desired.clients)
    del clients["ta.p1.d1"]
    clients["intruder"] = ClientSpec("intruder", ("tenant:ta",))
    clients["ta.p2.d1"] = ClientSpec("ta.p2.d1", ("project:ta:p2",), ("tenant:ta",), "ta.p2.d1", disabled=False)
    roles = dict(desired.roles)
    roles["tenant:ta"] = (Acl("publishClientSend", "#", True),)
    roles["dynsec-admin"] = ()
    actual = BrokerState(clients, roles, desired.groups)
    drift = diff(desired, actual, ignore_roles=["dynsec-admin"])
    assert drift.missing == ("client ta.p1.d1",)
    assert drift.extra == ("client intruder",)
    assert drift.mismatched == ("client ta.p2.d1", "role tenant:ta")
    commands = repair_commands(desired, actual, lambda u: f"pw-{u}", keep_roles=frozenset({"dynsec-admin"}))
    assert {"command": "removeRoleACL", "rolename": "tenant:ta", "acltype": "publishClientSend", "topic": "#"} in commands
    assert {"command": "disableClient", "username": "ta.p2.d1"} in commands
    assert {"command": "deleteClient", "username": "intruder"} in commands
    create = next(c for c in commands if c["command"] == "createClient")
    assert create["username"] == "ta.p1.d1" and create["password"] == "pw-ta.p1.d1" and create["clientid"] == "ta.p1.d1"
    assert not any(c.get("rolename") == "dynsec-admin" for c in commands)


def test_repair_creates_roles_before_clients_and_deletes_last() -> None:
    tenants, devices = _registry()
    desired = desired_state(tenants, devices, G)
    actual = BrokerState({"old": ClientSpec("old")}, {"old-role": ()}, {"old-group": ()})
    commands = [c["command"] for c in repair_commands(desired, actual, lambda _u: "pw")]
    assert commands.index("createRole") < commands.index("createGroup") < commands.index("createClient")
    assert commands[-3:] == ["deleteClient", "deleteGroup", "deleteRole"]
    # a disabled desired client is created, then disabled
    assert commands.count("disableClient") == 3


def test_password_hash_is_mosquitto_ctrls_format() -> None:
    """base64(PBKDF2-SHA512(password, raw salt)), as `mosquitto_ctrl dynsec init` writes on 2.0.11."""
    entry = password_hash("adminpw", salt=b"0123456789ab", iterations=101)
    expected = hashlib.pbkdf2_hmac("sha512", b"adminpw", b"0123456789ab", 101)
    assert base64.b64decode(str(entry["password"])) == expected
    assert base64.b64decode(str(entry["salt"])) == b"0123456789ab"


def test_initial_config_has_only_the_admin_and_denies_by_default() -> None:
    config = initial_config("iot-admin", "secret")
    assert [c["username"] for c in config["clients"]] == ["iot-admin"]  # type: ignore[index]
    assert "secret" not in str(config)
    assert config["defaultACLAccess"] == {"publishClientSend": False, "publishClientReceive": False, "subscribe": False, "unsubscribe": True}

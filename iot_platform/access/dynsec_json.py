"""The dynamic-security plugin's JSON: the initial file, password hashes, and parsing the plugin's answers (pure).

The initial file (admin client + admin role + deny-by-default access) is written before the broker's
first start, in the format ``mosquitto_ctrl dynsec init`` writes on 2.0.11: base64 of
PBKDF2-HMAC-SHA512(password, salt) over the raw 12-byte salt, 101 iterations (the count 2.0.11's
mosquitto_ctrl uses; a larger one is accepted too). After that the plugin owns the file and saves it
on every change; we only talk to it through ``$CONTROL/dynamic-security/v1``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

from iot_platform.access.state import DEFAULT_ACL_ACCESS, Acl, BrokerState, ClientSpec

PBKDF2_ITERATIONS = 101
ADMIN_ROLE = "dynsec-admin"
# What `mosquitto_ctrl dynsec init` grants its admin: the control API, $SYS, and reading everything.
_ADMIN_ACLS = [
    ("publishClientSend", "$CONTROL/dynamic-security/#"),
    ("publishClientReceive", "$CONTROL/dynamic-security/#"),
    ("subscribePattern", "$CONTROL/dynamic-security/#"),
    ("publishClientReceive", "$SYS/#"),
    ("subscribePattern", "$SYS/#"),
    ("unsubscribePattern", "#"),
]


def password_hash(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> dict[str, object]:
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": iterations,
    }


def initial_config(admin_username: str, admin_password: str) -> dict[str, object]:
    """The plugin's file before the first start: only the admin, and every default access denied."""
    return {
        "clients": [{"username": admin_username, "textName": "iot-platform admin", "roles": [{"rolename": ADMIN_ROLE}], **password_hash(admin_password)}],
        "roles": [{"rolename": ADMIN_ROLE, "acls": [{"acltype": t, "topic": topic, "allow": True} for t, topic in _ADMIN_ACLS]}],
        "groups": [],
        "defaultACLAccess": dict(DEFAULT_ACL_ACCESS),
    }


def parse_state(clients: list[Mapping[str, Any]], roles: list[Mapping[str, Any]], groups: list[Mapping[str, Any]]) -> BrokerState:
    """BrokerState from verbose listClients / listRoles / listGroups answers."""
    return BrokerState(
        clients={
            c["username"]: ClientSpec(
                username=c["username"],
                roles=tuple(sorted(r["rolename"] for r in c.get("roles", []))),
                groups=tuple(sorted(g["groupname"] for g in c.get("groups", []))),
                client_id=c.get("clientid") or None,
                disabled=bool(c.get("disabled", False)),
            )
            for c in clients
        },
        roles={
            r["rolename"]: tuple(
                sorted(Acl(a["acltype"], a["topic"], bool(a["allow"]), int(a.get("priority", 0))) for a in r.get("acls", []))
            )
            for r in roles
        },
        groups={g["groupname"]: tuple(sorted(r["rolename"] for r in g.get("roles", []))) for g in groups},
    )

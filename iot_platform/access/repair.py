"""Dynsec commands that turn the broker's actual access configuration into the desired one (pure).

Idempotent by construction: the commands are computed from the difference, so a broker that already
matches gets none. Order matters to dynsec (a client can only reference roles and groups that exist),
so roles come first, then groups, then clients, and deletions last.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from iot_platform.access.state import Acl, BrokerState, ClientSpec

Command = dict[str, object]


def acl_json(acl: Acl) -> dict[str, object]:
    """An ACL as the dynsec API takes it."""
    return {"acltype": acl.acltype, "topic": acl.topic, "allow": acl.allow, "priority": acl.priority}


def _role_commands(desired: BrokerState, actual: BrokerState) -> list[Command]:
    commands: list[Command] = []
    for name, acls in desired.roles.items():
        if name not in actual.roles:
            commands.append({"command": "createRole", "rolename": name, "acls": [acl_json(a) for a in acls]})
            continue
        have = set(actual.roles[name])
        # An ACL is keyed by type and topic in dynsec: remove a changed one before adding its new form.
        for acl in sorted(have - set(acls)):
            commands.append({"command": "removeRoleACL", "rolename": name, "acltype": acl.acltype, "topic": acl.topic})
        for acl in sorted(set(acls) - have):
            commands.append({"command": "addRoleACL", "rolename": name, **acl_json(acl)})
    return commands


def _group_commands(desired: BrokerState, actual: BrokerState) -> list[Command]:
    commands: list[Command] = []
    for name, roles in desired.groups.items():
        if name not in actual.groups:
            commands.append({"command": "createGroup", "groupname": name, "roles": [{"rolename": r} for r in roles]})
            continue
        have = set(actual.groups[name])
        commands += [{"command": "removeGroupRole", "groupname": name, "rolename": r} for r in sorted(have - set(roles))]
        commands += [{"command": "addGroupRole", "groupname": name, "rolename": r} for r in sorted(set(roles) - have)]
    return commands


def create_client(spec: ClientSpec, password: str) -> list[Command]:
    """createClient (disabled clients are created, then disabled: createClient has no such field)."""
    command: Command = {
        "command": "createClient",
        "username": spec.username,
        "password": password,
        "roles": [{"rolename": r} for r in spec.roles],
        "groups": [{"groupname": g} for g in spec.groups],
    }
    if spec.client_id:
        command["clientid"] = spec.client_id
    return [command] + ([{"command": "disableClient", "username": spec.username}] if spec.disabled else [])


def _client_commands(desired: BrokerState, actual: BrokerState, password_for: Callable[[str], str]) -> list[Command]:
    commands: list[Command] = []
    for name, spec in desired.clients.items():
        have = actual.clients.get(name)
        if have is None:
            commands += create_client(spec, password_for(name))
            continue
        commands += [{"command": "removeClientRole", "username": name, "rolename": r} for r in sorted(set(have.roles) - set(spec.roles))]
        commands += [{"command": "addClientRole", "username": name, "rolename": r} for r in sorted(set(spec.roles) - set(have.roles))]
        commands += [{"command": "removeGroupClient", "groupname": g, "username": name} for g in sorted(set(have.groups) - set(spec.groups))]
        commands += [{"command": "addGroupClient", "groupname": g, "username": name} for g in sorted(set(spec.groups) - set(have.groups))]
        if have.client_id != spec.client_id:
            commands.append({"command": "setClientId", "username": name, "clientid": spec.client_id or ""})
        if have.disabled != spec.disabled:
            commands.append({"command": "disableClient" if spec.disabled else "enableClient", "username": name})
    return commands


def repair_commands(
    desired: BrokerState,
    actual: BrokerState,
    password_for: Callable[[str], str],
    *,
    keep_clients: frozenset[str] = frozenset(),
    keep_roles: frozenset[str] = frozenset(),
    default_acl_access: Mapping[str, bool] | None = None,
) -> list[Command]:
    """Commands that make ``actual`` equal ``desired``; ``keep_*`` are never touched (the admin)."""
    commands = _role_commands(desired, actual) + _group_commands(desired, actual)
    commands += _client_commands(desired, actual, password_for)
    commands += [{"command": "deleteClient", "username": n} for n in sorted(set(actual.clients) - set(desired.clients) - keep_clients)]
    commands += [{"command": "deleteGroup", "groupname": n} for n in sorted(set(actual.groups) - set(desired.groups))]
    commands += [{"command": "deleteRole", "rolename": n} for n in sorted(set(actual.roles) - set(desired.roles) - keep_roles)]
    if default_acl_access is not None:
        commands.append(
            {"command": "setDefaultACLAccess", "acls": [{"acltype": k, "allow": v} for k, v in default_acl_access.items()]}
        )
    return commands

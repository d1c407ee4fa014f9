"""The broker's access configuration as data: what the registry wants, what the broker has, the drift (pure).

A device is a dynsec client named ``tenant.project.device``, bound to that client id, with one client
role ``project:<t>:<p>`` and membership of the group ``tenant:<t>`` (whose role is ``tenant:<t>``).
Mosquitto 2.0.11 evaluates a client's own roles before its groups' roles, whatever the priorities,
and the first matching ACL decides (verified; docs/design.md). So:

- ``project:<t>:<p>``: allow publishClientSend on the project's topics (priority 1), deny on the rest
  of the tenant's topics (priority 0): a device never reaches another project of its tenant;
- ``tenant:<t>``: allow publishClientSend on the tenant's topics: the bound of everything the tenant's
  clients may publish; nothing of another tenant matches, so the default (deny) applies.

The bridge may subscribe to (and receive) the whole filter, plainly or shared, and publishes nothing.
Default access denies publishing, receiving and subscribing. A device whose broker client was lost
cannot get its old password back (dynsec keeps only a hash): the repair re-creates it disabled and
marks it ``rotate_required`` until ``devices rotate`` issues a new password.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from iot_platform.access.names import device_username, project_role, shared_filter, tenant_role, topic_pattern

ENABLED, DISABLED, ROTATE_REQUIRED = "enabled", "disabled", "rotate_required"
DEFAULT_ACL_ACCESS: Mapping[str, bool] = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}


@dataclass(frozen=True, slots=True, order=True)
class Acl:
    acltype: str
    topic: str
    allow: bool
    priority: int = 0


@dataclass(frozen=True, slots=True)
class ClientSpec:
    username: str
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    client_id: str | None = None
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class BrokerState:
    """Clients, roles (name -> ACLs, sorted) and groups (name -> role names, sorted)."""

    clients: Mapping[str, ClientSpec] = field(default_factory=dict)
    roles: Mapping[str, tuple[Acl, ...]] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TenantRecord:
    tenant_id: str
    display_name: str = ""
    status: str = ENABLED


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    tenant_id: str
    project_id: str
    device_id: str
    status: str = ENABLED

    @property
    def username(self) -> str:
        return device_username(self.tenant_id, self.project_id, self.device_id)


@dataclass(frozen=True, slots=True)
class PlatformClient:
    """A platform service's client (the bridge): its password is a setting, so a repair can restore it."""

    username: str
    role: str
    acls: tuple[Acl, ...]


def bridge_client(username: str, topic_filter: str) -> PlatformClient:
    """Subscribe to and receive ``topic_filter`` (also as any ``$share`` group); publish nothing."""
    acls = (
        Acl("publishClientReceive", topic_filter, True),
        Acl("subscribePattern", shared_filter(topic_filter), True),
        Acl("subscribePattern", topic_filter, True),
    )
    return PlatformClient(username=username, role=f"platform:{username}", acls=tuple(sorted(acls)))


def tenant_acls(grammar: str, tenant_id: str) -> tuple[Acl, ...]:
    return (Acl("publishClientSend", topic_pattern(grammar, tenant_id), True),)


def project_acls(grammar: str, tenant_id: str, project_id: str) -> tuple[Acl, ...]:
    return tuple(
        sorted(
            (
                Acl("publishClientSend", topic_pattern(grammar, tenant_id, project_id), True, 1),
                Acl("publishClientSend", topic_pattern(grammar, tenant_id), False, 0),
            )
        )
    )


def device_client(device: DeviceRecord, tenant_enabled: bool) -> ClientSpec:
    return ClientSpec(
        username=device.username,
        roles=(project_role(device.tenant_id, device.project_id),),
        groups=(tenant_role(device.tenant_id),),
        client_id=device.username,
        disabled=not (tenant_enabled and device.status == ENABLED),
    )


def desired_state(
    tenants: Iterable[TenantRecord], devices: Iterable[DeviceRecord], grammar: str, platform: Iterable[PlatformClient] = ()
) -> BrokerState:
    """The broker state the registry asks for (every tenant gets its role and group, even without devices)."""
    enabled = {t.tenant_id: t.status == ENABLED for t in tenants}
    clients: dict[str, ClientSpec] = {}
    roles: dict[str, tuple[Acl, ...]] = {}
    groups: dict[str, tuple[str, ...]] = {}
    for tenant_id in enabled:
        roles[tenant_role(tenant_id)] = tenant_acls(grammar, tenant_id)
        groups[tenant_role(tenant_id)] = (tenant_role(tenant_id),)
    for device in devices:
        if device.tenant_id not in enabled:
            raise ValueError(f"device {device.username} belongs to unknown tenant {device.tenant_id!r}")
        roles[project_role(device.tenant_id, device.project_id)] = project_acls(grammar, device.tenant_id, device.project_id)
        clients[device.username] = device_client(device, enabled[device.tenant_id])
    for service in platform:
        roles[service.role] = service.acls
        clients[service.username] = ClientSpec(username=service.username, roles=(service.role,))
    return BrokerState(clients=clients, roles=roles, groups=groups)


@dataclass(frozen=True, slots=True)
class Drift:
    """Names missing from the broker, present but not wanted, or present with other content."""

    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not (self.missing or self.extra or self.mismatched)

    def as_metadata(self) -> dict[str, list[str]]:
        return {"missing": list(self.missing), "extra": list(self.extra), "mismatched": list(self.mismatched)}


def _compare(kind: str, desired: Mapping[str, object], actual: Mapping[str, object], ignore: frozenset[str]) -> Drift:
    wanted = set(desired) - ignore
    present = set(actual) - ignore
    return Drift(
        missing=tuple(f"{kind} {n}" for n in sorted(wanted - present)),
        extra=tuple(f"{kind} {n}" for n in sorted(present - wanted)),
        mismatched=tuple(f"{kind} {n}" for n in sorted(wanted & present) if desired[n] != actual[n]),
    )


def diff(desired: BrokerState, actual: BrokerState, *, ignore_clients: Iterable[str] = (), ignore_roles: Iterable[str] = ()) -> Drift:
    """Exact comparison of clients (roles, groups, client id, disabled), roles (ACLs) and groups (roles).

    ``ignore_*`` names what the platform does not manage here (the admin client and its role).
    """
    parts = (
        _compare("client", desired.clients, actual.clients, frozenset(ignore_clients)),
        _compare("role", desired.roles, actual.roles, frozenset(ignore_roles)),
        _compare("group", desired.groups, actual.groups, frozenset()),
    )
    return Drift(
        missing=tuple(x for p in parts for x in p.missing),
        extra=tuple(x for p in parts for x in p.extra),
        mismatched=tuple(x for p in parts for x in p.mismatched),
    )

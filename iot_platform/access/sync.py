"""Make the broker's access configuration equal the registry's (the ``broker_access`` asset), and compare them.

Guarantee: idempotent; after :func:`sync_broker_access` the broker holds exactly the registry's
tenants, projects and devices plus the platform's bridge (the admin client is never touched). A
device whose broker client was lost cannot get its old password back: it is re-created disabled,
marked ``rotate_required`` in the registry (in the same transaction as the repair), and reported;
`iot-platform devices rotate` issues its new password and re-enables it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from iot_platform.access import registry
from iot_platform.access.connection import require_bridge_credentials
from iot_platform.access.dynsec import DynsecClient
from iot_platform.access.dynsec_json import ADMIN_ROLE
from iot_platform.access.operations import new_password, session
from iot_platform.access.repair import repair_commands
from iot_platform.access.state import DEFAULT_ACL_ACCESS, ROTATE_REQUIRED, BrokerState, Drift, bridge_client, desired_state, diff
from iot_platform.settings import Settings


@dataclass(frozen=True)
class AccessReport:
    drift_before: Drift
    commands: int
    rotate_required: tuple[str, ...]  # devices re-created disabled by this run
    drift_after: Drift


def _desired(settings: Settings, cur: registry.Cursor) -> BrokerState:
    bridge = bridge_client(require_bridge_credentials(settings).username, settings.mqtt_topic_filter)
    return desired_state(registry.list_tenants(cur), registry.list_devices(cur), settings.mqtt_topic_grammar, [bridge])


def _ignored(settings: Settings) -> dict[str, frozenset[str]]:
    return {"keep_clients": frozenset({settings.mqtt_admin_username}), "keep_roles": frozenset({ADMIN_ROLE})}


def _defaults_match(broker: DynsecClient) -> bool:
    [answer] = broker.execute([{"command": "getDefaultACLAccess"}])
    return {a["acltype"]: bool(a["allow"]) for a in answer["data"]["acls"]} == dict(DEFAULT_ACL_ACCESS)


def _drift(desired: BrokerState, actual: BrokerState, settings: Settings, defaults_match: bool) -> Drift:
    ignore = _ignored(settings)
    drift = diff(desired, actual, ignore_clients=ignore["keep_clients"], ignore_roles=ignore["keep_roles"])
    return drift if defaults_match else replace(drift, mismatched=(*drift.mismatched, "default ACL access"))


def sync_broker_access(settings: Settings) -> AccessReport:
    bridge = require_bridge_credentials(settings)
    with session(settings) as (cur, broker):
        cur.execute("LOCK TABLE iot.tenants, iot.devices IN SHARE ROW EXCLUSIVE MODE")  # no command runs meanwhile
        actual = broker.read_state()
        lost = [d for d in registry.list_devices(cur) if d.username not in actual.clients and d.status != ROTATE_REQUIRED]
        for device in lost:
            registry.set_device_status(cur, device, ROTATE_REQUIRED)
        desired = _desired(settings, cur)
        defaults_match = _defaults_match(broker)
        before = _drift(desired, actual, settings, defaults_match)

        def password_for(username: str) -> str:
            return bridge.password.get_secret_value() if username == bridge.username else new_password()

        defaults = None if defaults_match else DEFAULT_ACL_ACCESS
        commands = repair_commands(desired, actual, password_for, default_acl_access=defaults, **_ignored(settings))
        broker.execute(commands)
        after = _drift(desired, broker.read_state(), settings, _defaults_match(broker))
        cur.connection.commit()
    return AccessReport(before, len(commands), tuple(d.username for d in lost), after)


def check_broker_access(settings: Settings) -> Drift:
    """The drift between registry and broker, changing nothing."""
    with session(settings) as (cur, broker):
        return _drift(_desired(settings, cur), broker.read_state(), settings, _defaults_match(broker))


__all__ = ["AccessReport", "check_broker_access", "sync_broker_access"]

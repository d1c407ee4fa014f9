"""Ids, broker user names, role names and ACL topics of tenants, projects and devices (pure).

Ids follow the platform's id rule (``IOT_ID_PATTERN``, the rule the bridge applies to topics), so an
id that the registry accepts is one the bridge will store. Device ids are unique per project: the
same device id may exist in two projects (two different devices, two user names). A device's broker
user name is ``tenant.project.device``: the id rule allows no dot by default, so the name is
unambiguous and never collides with a platform client (``iot-bridge``, ``iot-admin``).
"""

from __future__ import annotations

import re

from iot_platform.errors import InvalidConfiguration

ROLE_PREFIX_TENANT = "tenant:"
ROLE_PREFIX_PROJECT = "project:"
_ANY_SUFFIX = "[/...]"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class InvalidId(InvalidConfiguration, ValueError):
    """An id breaks the id rule; the message names the rule and the setting that holds it."""


def validate_id(kind: str, value: str, id_pattern: str) -> str:
    """``value`` if it matches ``id_pattern`` in full, else InvalidId naming the rule."""
    if re.fullmatch(id_pattern, value) is None or "." in value:
        raise InvalidId(
            f"{kind} id {value!r} is not valid: ids must match {id_pattern} (IOT_ID_PATTERN) and contain no '.'"
        )
    return value


def device_username(tenant_id: str, project_id: str, device_id: str) -> str:
    return f"{tenant_id}.{project_id}.{device_id}"


def tenant_role(tenant_id: str) -> str:
    """Name of the tenant's role and of its group (dynsec keeps roles and groups in separate namespaces)."""
    return f"{ROLE_PREFIX_TENANT}{tenant_id}"


def project_role(tenant_id: str, project_id: str) -> str:
    return f"{ROLE_PREFIX_PROJECT}{tenant_id}:{project_id}"


def _grammar_levels(grammar: str) -> list[str]:
    body = grammar[: -len(_ANY_SUFFIX)] if grammar.endswith(_ANY_SUFFIX) else grammar
    return body.split("/")


def topic_pattern(grammar: str, tenant_id: str, project_id: str | None = None) -> str:
    """The ACL pattern covering every topic of a tenant (or of one of its projects) under ``grammar``.

    Levels up to the last placeholder that is known are kept; other placeholders become ``+``; the
    pattern ends in ``/#``. For the default grammar: ``mtic/msg/client/realtime/acme/line1/#``.
    """
    levels = _grammar_levels(grammar)
    known = {"tenant_id": tenant_id} | ({"project_id": project_id} if project_id is not None else {})
    last = max(i for i, level in enumerate(levels) if (m := _PLACEHOLDER.fullmatch(level)) and m.group(1) in known)
    out: list[str] = []
    for level in levels[: last + 1]:
        placeholder = _PLACEHOLDER.fullmatch(level)
        out.append(level if placeholder is None else known.get(placeholder.group(1), "+"))
    return "/".join(out) + "/#"


def grammar_filter(grammar: str) -> str:
    """The subscription filter covering every topic of ``grammar`` (placeholders as ``+``)."""
    levels = _grammar_levels(grammar)
    first = min(i for i, level in enumerate(levels) if _PLACEHOLDER.fullmatch(level))
    return "/".join(levels[:first]) + "/#" if first else "#"


def shared_filter(topic_filter: str) -> str:
    """The ACL pattern of every shared subscription (``$share/<group>/<filter>``) to ``topic_filter``.

    Mosquitto 2.0.11 checks a shared subscription's whole ``$share/...`` string against the ACLs (a
    plain ``filter`` grant does not cover it; docs/design.md), so the bridge needs this pattern too.
    """
    return f"$share/+/{topic_filter}"


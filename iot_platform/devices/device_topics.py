"""MQTT topics for simulated devices, built from the platform's topic grammar (pure).

The grammar is ``level/level/{tenant_id}/{project_id}[/...]``: literal levels, the two placeholders,
and an optional free tail. Devices publish under the tail (``.../{device_id}/telemetry``) when the
grammar allows one. A *bad shape* topic keeps every level but the last required one, so it stays under
the bridge's subscription filter while it cannot match the grammar.
"""

from __future__ import annotations

OPTIONAL_TAIL = "[/...]"


def _required_levels(grammar: str) -> tuple[list[str], bool]:
    has_tail = grammar.endswith(OPTIONAL_TAIL)
    core = grammar[: -len(OPTIONAL_TAIL)] if has_tail else grammar
    levels = core.split("/")
    if "{tenant_id}" not in levels or "{project_id}" not in levels:
        raise ValueError(f"topic grammar {grammar!r} needs {{tenant_id}} and {{project_id}} levels")
    return levels, has_tail


def _fill(levels: list[str], tenant_id: str, project_id: str) -> list[str]:
    values = {"{tenant_id}": tenant_id, "{project_id}": project_id}
    return [values.get(level, level) for level in levels]


def device_topic(grammar: str, tenant_id: str, project_id: str, device_id: str) -> str:
    """Topic of one device's telemetry under ``grammar``."""
    levels, has_tail = _required_levels(grammar)
    filled = _fill(levels, tenant_id, project_id)
    if has_tail:
        filled += [device_id, "telemetry"]
    return "/".join(filled)


def bad_shape_topic(grammar: str, tenant_id: str) -> str:
    """A topic one required level short of ``grammar``: the bridge must dead-letter it."""
    levels, _ = _required_levels(grammar)
    return "/".join(_fill(levels[:-1], tenant_id, "missing"))

"""The MQTT topic grammar: which topics carry telemetry, and of which tenant and project.

A grammar is declarative, one pattern per deployment (``IOT_MQTT_TOPIC_GRAMMAR``)::

    mtic/msg/client/realtime/{tenant_id}/{project_id}[/...]

Levels are separated by ``/``. A level is a literal, or a placeholder ``{name}`` that matches one
whole level; ``{tenant_id}`` and ``{project_id}`` are required and captured, other names match any
level and are ignored. A final ``[/...]`` accepts any number (zero included) of further levels.
Tenant and project ids must also match the id pattern (``IOT_ID_PATTERN``) in full.

Pure: bad data is a value (`Rejection`), never an exception; only a malformed grammar raises.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from iot_platform.errors import InvalidConfiguration

# Reasons: stable codes, written in the dead letter's `reason` header.
TOPIC_MISMATCH = "topic_mismatch"
INVALID_TENANT_ID = "invalid_tenant_id"
INVALID_PROJECT_ID = "invalid_project_id"
INVALID_TOPIC_ENCODING = "invalid_topic_encoding"

REQUIRED_PLACEHOLDERS = ("tenant_id", "project_id")
_ANY_SUFFIX = "[/...]"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FORBIDDEN_IN_LITERAL = set("{}[]+#\x00")
_TOPIC_CACHE_SIZE = 65_536


class GrammarError(InvalidConfiguration, ValueError):
    """The configured grammar itself is malformed: a configuration error, raised at startup (names the setting)."""


@dataclass(frozen=True, slots=True)
class TopicMatch:
    """A topic that belongs to the platform, with its validated ids."""

    tenant_id: str
    project_id: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message cannot be stored as telemetry; it goes to the dead-letter topic."""

    reason: str
    detail: str = ""


def _level_regex(level: str, grammar: str, seen: set[str]) -> str:
    placeholder = _PLACEHOLDER.fullmatch(level)
    if placeholder is None:
        if not level or _FORBIDDEN_IN_LITERAL & set(level):
            raise GrammarError(f"grammar {grammar!r}: invalid level {level!r} (a literal, or one {{name}}) (IOT_MQTT_TOPIC_GRAMMAR)")
        return re.escape(level)
    name = placeholder.group(1)
    if name in seen:
        raise GrammarError(f"grammar {grammar!r}: placeholder {{{name}}} appears twice (IOT_MQTT_TOPIC_GRAMMAR)")
    seen.add(name)
    if name in REQUIRED_PLACEHOLDERS:
        return f"(?P<{name}>[^/]*)"
    return "[^/]*"


def literal_prefix(grammar: str) -> str:
    """The grammar's leading literal levels, each with its ``/`` (``mtic/msg/client/realtime/``; empty
    when the grammar starts with a placeholder): what every matching topic starts with (pure)."""
    levels = []
    for level in grammar.split("/"):
        if _PLACEHOLDER.fullmatch(level):  # a valid grammar has one before any optional tail
            break
        levels.append(level + "/")
    return "".join(levels)


def _compile(grammar: str) -> re.Pattern[str]:
    body, any_suffix = (grammar[: -len(_ANY_SUFFIX)], True) if grammar.endswith(_ANY_SUFFIX) else (grammar, False)
    if not body:
        raise GrammarError("the topic grammar is empty (IOT_MQTT_TOPIC_GRAMMAR)")
    seen: set[str] = set()
    parts = [_level_regex(level, grammar, seen) for level in body.split("/")]
    missing = [name for name in REQUIRED_PLACEHOLDERS if name not in seen]
    if missing:
        raise GrammarError(f"grammar {grammar!r} lacks {', '.join('{' + m + '}' for m in missing)} (IOT_MQTT_TOPIC_GRAMMAR)")
    return re.compile("/".join(parts) + ("(?:/.*)?" if any_suffix else ""), re.DOTALL)


class TopicGrammar:
    """Parses topics against one grammar and id pattern; results are cached per topic (devices repeat)."""

    def __init__(self, grammar: str, id_pattern: str) -> None:
        self.grammar = grammar
        self.id_pattern = id_pattern
        self._topic = _compile(grammar)
        self.prefix = literal_prefix(grammar)
        try:
            self._id = re.compile(id_pattern)
        except re.error as exc:
            raise GrammarError(f"invalid id pattern {id_pattern!r}: {exc} (IOT_ID_PATTERN)") from exc
        self.parse = functools.lru_cache(maxsize=_TOPIC_CACHE_SIZE)(self._parse)

    def _parse(self, topic: str) -> TopicMatch | Rejection:
        matched = self._topic.fullmatch(topic)
        if matched is None:
            return Rejection(TOPIC_MISMATCH, f"does not match {self.grammar}")
        tenant_id, project_id = matched.group("tenant_id"), matched.group("project_id")
        # fullmatch: a `$` in the pattern would otherwise accept an id ending in a newline.
        if self._id.fullmatch(tenant_id) is None:
            return Rejection(INVALID_TENANT_ID, f"tenant id {tenant_id[:80]!r} does not match {self.id_pattern}")
        if self._id.fullmatch(project_id) is None:
            return Rejection(INVALID_PROJECT_ID, f"project id {project_id[:80]!r} does not match {self.id_pattern}")
        return TopicMatch(tenant_id=tenant_id, project_id=project_id)

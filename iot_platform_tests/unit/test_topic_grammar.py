"""The topic grammar: which topics are telemetry, whose they are, and why the others are rejected."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iot_platform.core.topic_grammar import (
    INVALID_PROJECT_ID,
    INVALID_TENANT_ID,
    TOPIC_MISMATCH,
    GrammarError,
    Rejection,
    TopicGrammar,
    TopicMatch,
    literal_prefix,
)
from iot_platform.settings import DEFAULT_ID_PATTERN, DEFAULT_TOPIC_GRAMMAR

GRAMMAR = TopicGrammar(DEFAULT_TOPIC_GRAMMAR, DEFAULT_ID_PATTERN)
ID_ALPHABET = string.ascii_letters + string.digits + "_-"


@pytest.mark.parametrize(
    ("topic", "tenant", "project"),
    [
        ("mtic/msg/client/realtime/acme/p1", "acme", "p1"),
        ("mtic/msg/client/realtime/acme/p1/device/7", "acme", "p1"),
        ("mtic/msg/client/realtime/1968193631353446400/42", "1968193631353446400", "42"),
        ("mtic/msg/client/realtime/a_b-C/x-y_Z", "a_b-C", "x-y_Z"),
        ("mtic/msg/client/realtime/t/p/", "t", "p"),  # trailing empty level is inside [/...]
        ("mtic/msg/client/realtime/" + "a" * 64 + "/p", "a" * 64, "p"),
    ],
)
def test_good_topics_yield_tenant_and_project(topic: str, tenant: str, project: str) -> None:
    """A topic of the grammar with valid ids yields exactly its tenant and project ids."""
    assert GRAMMAR.parse(topic) == TopicMatch(tenant_id=tenant, project_id=project)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("mtic/msg/client/realtime/acme", TOPIC_MISMATCH),
        ("mtic/msg/client/realtime", TOPIC_MISMATCH),
        ("other/msg/client/realtime/acme/p1", TOPIC_MISMATCH),
        ("mtic/msg/client/realtim/acme/p1", TOPIC_MISMATCH),
        ("/mtic/msg/client/realtime/acme/p1", TOPIC_MISMATCH),
        ("MTIC/msg/client/realtime/acme/p1", TOPIC_MISMATCH),
        ("", TOPIC_MISMATCH),
        ("mtic/msg/client/realtime//p1", INVALID_TENANT_ID),
        ("mtic/msg/client/realtime/ac me/p1", INVALID_TENANT_ID),
        ("mtic/msg/client/realtime/acme\n/p1", INVALID_TENANT_ID),
        ("mtic/msg/client/realtime/ac.me/p1", INVALID_TENANT_ID),
        ("mtic/msg/client/realtime/tenant\u00e9/p1", INVALID_TENANT_ID),
        ("mtic/msg/client/realtime/" + "a" * 65 + "/p1", INVALID_TENANT_ID),
        ("mtic/msg/client/realtime/acme/", INVALID_PROJECT_ID),
        ("mtic/msg/client/realtime/acme/p+1", INVALID_PROJECT_ID),
        ("mtic/msg/client/realtime/acme/p1\n", INVALID_PROJECT_ID),
    ],
)
def test_bad_topics_are_rejections_with_reason(topic: str, reason: str) -> None:
    """Bad topics are values (Rejection) carrying a stable reason code, never exceptions."""
    result = GRAMMAR.parse(topic)
    assert isinstance(result, Rejection)
    assert result.reason == reason


def test_exact_grammar_without_suffix_rejects_extra_levels() -> None:
    """Without `[/...]` the topic must have exactly the grammar's levels."""
    grammar = TopicGrammar("d/{tenant_id}/{project_id}", DEFAULT_ID_PATTERN)
    assert grammar.parse("d/t/p") == TopicMatch("t", "p")
    assert grammar.parse("d/t/p/x") == Rejection(TOPIC_MISMATCH, "does not match d/{tenant_id}/{project_id}")


def test_prefixed_grammar_and_ignored_placeholders() -> None:
    """Any literal prefix works (tests use a unique first level), other placeholders match one level."""
    grammar = TopicGrammar("t1a2/{site}/{project_id}/x/{tenant_id}[/...]", DEFAULT_ID_PATTERN)
    assert grammar.parse("t1a2/berlin/p/x/t/extra") == TopicMatch("t", "p")
    assert isinstance(grammar.parse("t1a2/berlin/p/y/t"), Rejection)


@pytest.mark.parametrize(
    ("grammar", "prefix"),
    [(DEFAULT_TOPIC_GRAMMAR, "mtic/msg/client/realtime/"), ("{tenant_id}/{project_id}", ""),
     ("t1a2/{site}/{project_id}/x/{tenant_id}[/...]", "t1a2/"), ("a/b/{project_id}/{tenant_id}", "a/b/")],
)
def test_literal_prefix_is_the_levels_before_the_first_placeholder(grammar: str, prefix: str) -> None:
    """What every matching topic starts with (the device key is the rest of the topic)."""
    assert literal_prefix(grammar) == prefix == TopicGrammar(grammar, DEFAULT_ID_PATTERN).prefix


def test_custom_id_pattern() -> None:
    """The id pattern is configurable and must match the whole id."""
    grammar = TopicGrammar(DEFAULT_TOPIC_GRAMMAR, r"[0-9]+")
    assert grammar.parse("mtic/msg/client/realtime/123/456") == TopicMatch("123", "456")
    assert grammar.parse("mtic/msg/client/realtime/123a/456") == Rejection(
        INVALID_TENANT_ID, "tenant id '123a' does not match [0-9]+"
    )


@pytest.mark.parametrize(
    "grammar",
    [
        "",
        "[/...]",
        "a/{tenant_id}",
        "a/{project_id}",
        "a/{tenant_id}/{tenant_id}/{project_id}",
        "a/+/{tenant_id}/{project_id}",
        "a/#/{tenant_id}/{project_id}",
        "a//{tenant_id}/{project_id}",
        "a/x{tenant_id}/{project_id}",
        "a/{tenant_id}/{project_id}/[/...]",
        "a/{tenant_id}/{project_id}[/...]/b",
    ],
)
def test_malformed_grammar_raises(grammar: str) -> None:
    """A malformed grammar is a configuration error, reported at startup."""
    with pytest.raises(GrammarError):
        TopicGrammar(grammar, DEFAULT_ID_PATTERN)


def test_malformed_id_pattern_raises() -> None:
    """An invalid id regular expression is a configuration error too."""
    with pytest.raises(GrammarError):
        TopicGrammar(DEFAULT_TOPIC_GRAMMAR, "([")


ids = st.text(ID_ALPHABET, min_size=1, max_size=64)
levels = st.lists(st.text(st.characters(exclude_characters="/+#\x00"), max_size=8), max_size=4)


@given(tenant=ids, project=ids, rest=levels)
def test_property_valid_ids_round_trip(tenant: str, project: str, rest: list[str]) -> None:
    """Any valid tenant/project, with any further levels, parses back to exactly those ids."""
    topic = "/".join(["mtic/msg/client/realtime", tenant, project, *rest])
    assert GRAMMAR.parse(topic) == TopicMatch(tenant, project)


@given(tenant=st.text(max_size=70), project=ids)
def test_property_tenant_validity_matches_pattern(tenant: str, project: str) -> None:
    """A tenant level is accepted exactly when it is 1-64 characters of [A-Za-z0-9_-]."""
    if "/" in tenant:
        tenant = tenant.replace("/", "")
    result = GRAMMAR.parse(f"mtic/msg/client/realtime/{tenant}/{project}")
    valid = 1 <= len(tenant) <= 64 and all(c in ID_ALPHABET for c in tenant)
    assert isinstance(result, TopicMatch) == valid


@given(topic=st.text(max_size=80))
def test_property_parse_never_raises(topic: str) -> None:
    """Whatever the topic, parse returns a match or a rejection."""
    assert isinstance(GRAMMAR.parse(topic), TopicMatch | Rejection)

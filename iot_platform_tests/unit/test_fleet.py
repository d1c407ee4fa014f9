"""Unit tests of the simulated fleet, its topics and its pacing (pure, no network)."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from iot_platform.devices.fleet import BAD_CATEGORIES, BAD_TOPIC, GOOD, INVALID_ID, OVERSIZE, Fleet, FleetSpec, iso_ms
from iot_platform.devices.pacing import TokenBucket
from iot_platform.devices.device_topics import bad_shape_topic, device_topic

GRAMMAR = "mtic/msg/client/realtime/{tenant_id}/{project_id}[/...]"
ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def spec(**overrides: object) -> FleetSpec:
    values: dict[str, object] = dict(tenants=2, projects=3, devices=4, topic_grammar=GRAMMAR, run_id="r1", max_payload_bytes=2_000)
    values.update(overrides)
    return FleetSpec(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("grammar", "expected"),
    [
        (GRAMMAR, "mtic/msg/client/realtime/t1/p1/d1/telemetry"),
        ("mtic/msg/client/realtime/{tenant_id}/{project_id}", "mtic/msg/client/realtime/t1/p1"),
        ("tabc/mtic/{tenant_id}/{project_id}[/...]", "tabc/mtic/t1/p1/d1/telemetry"),
        ("{project_id}/{tenant_id}/data", "p1/t1/data"),
    ],
)
def test_device_topic_fills_the_grammar(grammar: str, expected: str) -> None:
    """A device publishes under its tenant and project, below the free tail when the grammar has one."""
    assert device_topic(grammar, "t1", "p1", "d1") == expected


@pytest.mark.parametrize(
    ("grammar", "expected"),
    [
        (GRAMMAR, "mtic/msg/client/realtime/t1"),
        ("x/{tenant_id}/{project_id}/data", "x/t1/missing"),
    ],
)
def test_bad_shape_topic_is_one_required_level_short(grammar: str, expected: str) -> None:
    """A bad-shape topic stays under the subscription prefix yet misses a required level."""
    assert bad_shape_topic(grammar, "t1") == expected


def test_grammar_without_placeholders_is_refused() -> None:
    """A grammar lacking {tenant_id} or {project_id} is a configuration error, raised at once."""
    with pytest.raises(ValueError, match="tenant_id"):
        device_topic("a/b/{tenant_id}", "t", "p", "d")


@pytest.mark.parametrize("field", ["tenants", "projects", "devices"])
def test_fleet_dimensions_must_be_positive(field: str) -> None:
    """An empty fleet is refused rather than publishing nothing silently."""
    with pytest.raises(ValueError):
        spec(**{field: 0})


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_bad_fraction_must_be_a_fraction(fraction: float) -> None:
    """bad_fraction outside [0, 1] is refused."""
    with pytest.raises(ValueError):
        spec(bad_fraction=fraction)


def test_fleet_has_every_device_once_with_valid_unique_ids() -> None:
    """tenants x projects x devices distinct devices, every id valid under the default id pattern."""
    fleet = Fleet(spec())
    devices = fleet.devices
    assert len(devices) == 24 == spec().size
    assert len({d for _, _, d in devices}) == 24
    assert all(ID.match(part) for device in devices for part in device)
    assert len({t for t, _, _ in devices}) == 2 and len({(t, p) for t, p, _ in devices}) == 6


def test_round_robin_gives_each_device_consecutive_seqs_from_one() -> None:
    """Per device, seq runs 1, 2, 3, ... without holes; msg_id is unique and embeds run, device and seq."""
    fleet = Fleet(spec())
    messages = list(fleet.messages(24 * 5, now_ms=1_700_000_000_000))
    per_device: dict[str, list[int]] = {}
    for m in messages:
        per_device.setdefault(m.device_id, []).append(m.seq)
    assert all(seqs == [1, 2, 3, 4, 5] for seqs in per_device.values())
    ids = [json.loads(m.payload)["msg_id"] for m in messages]
    assert len(set(ids)) == len(ids)
    assert ids[0] == f"r1:{messages[0].device_id}:1"


def test_good_payload_is_realistic_json() -> None:
    """A good payload is compact JSON with identity fields first, a ms timestamp and numeric readings."""
    message = Fleet(spec()).next_message(1_700_000_000_123)
    body = json.loads(message.payload)
    assert message.category == GOOD
    assert list(body)[:4] == ["msg_id", "device_id", "seq", "run_id"]
    assert body["ts"] == "2023-11-14T22:13:20.123Z"
    assert all(isinstance(body[k], (int, float)) for k in ("temperature", "humidity", "battery", "rssi"))
    assert "sim_bad" not in body
    assert message.topic == f"mtic/msg/client/realtime/{message.tenant_id}/project00/{message.device_id}/telemetry"


def test_same_seed_same_messages() -> None:
    """The fleet is deterministic for a seed: a run can be reproduced exactly."""
    a = [m.payload for m in Fleet(spec(seed=7, bad_fraction=0.2)).messages(200, now_ms=0)]
    b = [m.payload for m in Fleet(spec(seed=7, bad_fraction=0.2)).messages(200, now_ms=0)]
    assert a == b


def test_bad_fraction_zero_and_one() -> None:
    """bad_fraction 0 gives only good messages; 1 only bad ones, in every bad category."""
    assert {m.category for m in Fleet(spec()).messages(500, 0)} == {GOOD}
    assert {m.category for m in Fleet(spec(bad_fraction=1.0)).messages(500, 0)} == set(BAD_CATEGORIES)


def test_bad_fraction_is_roughly_respected() -> None:
    """About bad_fraction of the messages are bad (seeded, so the bound is deterministic)."""
    counts = Counter(m.category != GOOD for m in Fleet(spec(bad_fraction=0.1, seed=3)).messages(10_000, 0))
    assert 800 < counts[True] < 1_200


@pytest.mark.parametrize("category", BAD_CATEGORIES)
def test_each_bad_category_is_bad_for_the_bridge(category: str) -> None:
    """Each bad category breaks exactly its rule, and its payload still starts with its identity."""
    fleet = Fleet(spec(bad_fraction=1.0, seed=1))
    message = next(m for m in fleet.messages(1_000, 0) if m.category == category)
    levels = message.topic.split("/")
    assert message.payload.startswith(b'{"msg_id":"r1:')
    if category == BAD_TOPIC:
        assert levels == ["mtic", "msg", "client", "realtime", message.tenant_id]
    elif category == INVALID_ID:
        assert not ID.match(levels[5]) and ID.match(levels[4])
    elif category == OVERSIZE:
        assert len(message.payload) == 2_001
        assert json.loads(message.payload)["sim_bad"] == OVERSIZE
    if category != OVERSIZE:
        assert json.loads(message.payload)["sim_bad"] == category


@pytest.mark.parametrize(("epoch_ms", "text"), [(0, "1970-01-01T00:00:00.000Z"), (1_000_999, "1970-01-01T00:16:40.999Z")])
def test_iso_ms(epoch_ms: int, text: str) -> None:
    """Timestamps are UTC ISO 8601 with exactly three fraction digits."""
    assert iso_ms(epoch_ms) == text


def test_token_bucket_unlimited_grants_everything() -> None:
    """rate None never throttles."""
    bucket = TokenBucket(None)
    assert bucket.take(0.0, 10_000) == 10_000 and bucket.wait_s() == 0.0


def test_token_bucket_paces_to_the_rate() -> None:
    """Over 10 simulated seconds a 100/s bucket grants about 1,000 tokens, never more than rate x time + burst."""
    bucket = TokenBucket(100.0)
    granted = sum(bucket.take(step * 0.001, 50) for step in range(10_001))
    assert 990 <= granted <= 1_000 + bucket.burst


def test_token_bucket_burst_caps_savings_and_wait_is_positive() -> None:
    """An idle bucket saves at most ``burst`` tokens; an empty one says how long to wait."""
    bucket = TokenBucket(10.0, burst=5)
    bucket.take(0.0, 1)
    assert bucket.take(100.0, 100) == 5
    assert bucket.take(100.0, 1) == 0
    assert bucket.wait_s() == pytest.approx(0.1)


def test_token_bucket_refuses_non_positive_rate() -> None:
    """A zero or negative rate is a mistake, not 'unlimited'."""
    with pytest.raises(ValueError):
        TokenBucket(0.0)


def test_bad_categories_can_be_narrowed() -> None:
    """bad_categories limits which bad kinds are drawn (a poison burst without 900 kB payloads)."""
    categories = {m.category for m in Fleet(spec(bad_fraction=1.0, bad_categories=(BAD_TOPIC, INVALID_ID))).messages(300, 0)}
    assert categories == {BAD_TOPIC, INVALID_ID}


@pytest.mark.parametrize("categories", [(), ("nonsense",)])
def test_bad_categories_must_be_known(categories: tuple[str, ...]) -> None:
    """An empty or unknown bad category is refused."""
    with pytest.raises(ValueError):
        spec(bad_categories=categories)

"""Bridge replicas: identities, subscription forms, settings that can never work, the drain's proof
that a session is empty, and the drain marks (pure)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from iot_platform.bridge import drain_marks
from iot_platform.bridge.drain import DrainStep, SessionDrain
from iot_platform.bridge.replicas import SubscriptionPlan, replica_problem, subscription_plan
from iot_platform.settings import Settings

FILTER = "mtic/msg/client/realtime/#"
SHARED = f"$share/iot-bridges/{FILTER}"


@pytest.mark.parametrize(("index", "client_id"), [(0, "iot-platform-bridge"), (1, "iot-platform-bridge-1"), (12, "iot-platform-bridge-12")])
def test_replica_zero_keeps_the_single_bridges_client_id(index: int, client_id: str) -> None:
    """Replica 0 resumes the session a single bridge had (and what the broker queued in it); replica i adds -i."""
    assert Settings(replica_index=index, bridge_replicas=13).bridge_client_id == client_id


@pytest.mark.parametrize(
    ("replicas", "draining", "plan"),
    [
        (1, False, SubscriptionPlan(FILTER, (SHARED,))),
        (2, False, SubscriptionPlan(SHARED, (FILTER,))),
        (5, False, SubscriptionPlan(SHARED, (FILTER,))),
        (1, True, SubscriptionPlan(None, (SHARED, FILTER))),
        (3, True, SubscriptionPlan(None, (SHARED, FILTER))),
    ],
)
def test_a_replica_holds_one_form_of_the_filter_and_drops_the_other(replicas: int, draining: bool, plan: SubscriptionPlan) -> None:
    """Shared above one replica, plain otherwise; the other form is unsubscribed (a session keeps its
    subscriptions, and both forms would deliver every message twice); a drain holds neither."""
    assert subscription_plan(Settings(bridge_replicas=replicas), draining=draining) == plan


def test_mqtt_311_subscribes_plainly_and_unsubscribes_nothing() -> None:
    assert subscription_plan(Settings(mqtt_protocol="3.1.1"), draining=False) == SubscriptionPlan(FILTER, ())


@pytest.mark.parametrize(
    ("overrides", "draining", "names"),
    [
        ({"mqtt_protocol": "3.1.1", "bridge_replicas": 2}, False, ("IOT_BRIDGE_REPLICAS=2", "IOT_MQTT_PROTOCOL")),
        ({"mqtt_protocol": "3.1.1", "replica_index": 1, "bridge_replicas": 1}, False, ("IOT_REPLICA_INDEX=1", "IOT_MQTT_PROTOCOL")),
        ({"mqtt_protocol": "3.1.1"}, True, ("--drain", "IOT_MQTT_PROTOCOL=5")),
        ({"replica_index": 1, "bridge_replicas": 1}, False, ("IOT_REPLICA_INDEX=1", "IOT_BRIDGE_REPLICAS")),
    ],
)
def test_replica_settings_that_can_never_work_are_named(overrides: dict[str, object], draining: bool, names: tuple[str, ...]) -> None:
    problem = replica_problem(Settings(**overrides), draining=draining)  # type: ignore[arg-type]
    assert problem is not None and all(name in problem for name in names), problem


@pytest.mark.parametrize(
    ("overrides", "draining"),
    [({}, False), ({}, True), ({"bridge_replicas": 3, "replica_index": 2}, False), ({"bridge_replicas": 2, "replica_index": 2}, False),
     ({"replica_index": 1}, True), ({"mqtt_protocol": "3.1.1"}, False)],
)
def test_replica_settings_that_work_pass(overrides: dict[str, object], draining: bool) -> None:
    """Replica 1 of a single-replica set may still be drained (its session survived a scale-down)."""
    assert replica_problem(Settings(**overrides), draining=draining) is None  # type: ignore[arg-type]


def test_share_group_cannot_hold_topic_separators_or_wildcards() -> None:
    for group in ("a/b", "g+", "#", ""):
        with pytest.raises(ValueError):
            Settings(mqtt_share_group=group)


class Probes:
    """Packet ids handed out by a fake ``unsubscribe``."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def send(self) -> int:
        self.sent.append(len(self.sent) + 1)
        return self.sent[-1]


def test_drain_unsubscribes_at_once_then_ends_only_after_a_clean_probe() -> None:
    """First UNSUBSCRIBE goes out while messages are held (it stops the routing) and proves nothing; the
    probe sent with nothing held, answered with no message before its answer, proves the session empty."""
    drain, probes = SessionDrain(), Probes()
    assert drain.next_step(connected=True, held=7, received=100) is DrainStep.UNSUBSCRIBE
    drain.send_probe(probes.send, held=7, received=100)
    assert drain.next_step(connected=True, held=7, received=100) is DrainStep.WAIT  # one outstanding at a time
    drain.answered(1, received=103)
    assert drain.next_step(connected=True, held=3, received=103) is DrainStep.WAIT  # still holding messages
    assert drain.next_step(connected=True, held=0, received=103) is DrainStep.UNSUBSCRIBE
    drain.send_probe(probes.send, held=0, received=103)
    drain.answered(2, received=104)  # a queued message arrived before the answer: not empty yet
    assert drain.next_step(connected=True, held=1, received=104) is DrainStep.WAIT
    assert drain.next_step(connected=True, held=0, received=104) is DrainStep.UNSUBSCRIBE
    drain.send_probe(probes.send, held=0, received=104)
    assert drain.next_step(connected=True, held=0, received=104) is DrainStep.WAIT
    drain.answered(3, received=104)
    assert drain.next_step(connected=True, held=0, received=104) is DrainStep.END
    assert drain.probes == 3


def test_a_reconnect_starts_the_drain_over_and_old_answers_prove_nothing() -> None:
    drain, probes = SessionDrain(), Probes()
    drain.send_probe(probes.send, held=0, received=5)
    drain.opened()  # the connection dropped and came back: the resumed session may hold messages again
    drain.answered(1, received=5)
    assert drain.next_step(connected=False, held=0, received=5) is DrainStep.WAIT
    assert drain.next_step(connected=True, held=4, received=9) is DrainStep.UNSUBSCRIBE  # unsubscribe again at once
    drain.send_probe(probes.send, held=4, received=9)
    drain.answered(99, received=9)  # not ours (a normal mode unsubscribe): ignored
    assert drain.next_step(connected=True, held=0, received=9) is DrainStep.WAIT
    drain.answered(2, received=9)
    assert drain.next_step(connected=True, held=0, received=9) is DrainStep.UNSUBSCRIBE  # held 4 when sent


def test_a_probe_that_could_not_be_sent_is_not_waited_for() -> None:
    drain = SessionDrain()
    drain.send_probe(lambda: None, held=0, received=0)
    assert drain.next_step(connected=True, held=0, received=0) is DrainStep.UNSUBSCRIBE


def test_the_drain_never_ends_while_a_message_is_held_or_arrived_after_its_last_probe() -> None:
    """Random interleavings of arrivals, acks, probes and reconnects: END only when the last probe was
    sent with nothing held, no message arrived between it and its answer, and no reconnect came since;
    and END as soon as that is so. (Once such an answer came, the session is empty and unsubscribed:
    nothing arrives any more.)"""
    ended = 0
    for seed in range(300):
        ended += _random_drain(random.Random(seed))
    assert ended > 100  # positive control: most interleavings do reach the end


def _random_drain(rng: random.Random) -> bool:
    drain, probes = SessionDrain(), Probes()
    received = held = 0
    outstanding: tuple[int, int, int] | None = None  # mid, received, held when sent
    proven = False
    for _ in range(300):
        event = rng.choice(["arrive", "ack", "step", "answer", "reconnect"])
        if event == "arrive" and not proven:
            received, held = received + 1, held + 1
        elif event == "ack" and held:
            held -= 1
        elif event == "reconnect":
            drain.opened()
            outstanding, proven = None, False
        elif event == "answer" and outstanding is not None:
            drain.answered(outstanding[0], received=received)
            proven = outstanding[2] == 0 and outstanding[1] == received
            outstanding = None
        elif event == "step":
            step = drain.next_step(connected=True, held=held, received=received)
            if step is DrainStep.END:
                assert proven, (received, held)
                return True
            assert not proven, "proven empty but not ended"
            if step is DrainStep.UNSUBSCRIBE:
                assert outstanding is None
                drain.send_probe(probes.send, held=held, received=received)
                outstanding = (probes.sent[-1], received, held)
    return False


def test_drain_marks_ask_record_and_clear(tmp_path: Path) -> None:
    """A request, then the drained mark with what was delivered; other identities are untouched; clear removes both."""
    assert not drain_marks.drain_requested(tmp_path, "bridge-1") and drain_marks.drained(tmp_path, "bridge-1") is None
    drain_marks.request_drain(tmp_path, "bridge-1")
    assert drain_marks.drain_requested(tmp_path, "bridge-1") and not drain_marks.drain_requested(tmp_path, "bridge-2")
    drain_marks.mark_drained(tmp_path, "bridge-1", {"acked": 42})
    mark = drain_marks.drained(tmp_path, "bridge-1")
    assert mark is not None and mark["acked"] == 42 and mark["identity"] == "bridge-1"
    drain_marks.clear(tmp_path, "bridge-1")
    assert not drain_marks.drain_requested(tmp_path, "bridge-1") and drain_marks.drained(tmp_path, "bridge-1") is None
    assert sorted(p.name for p in drain_marks.drain_dir(tmp_path).iterdir()) == []

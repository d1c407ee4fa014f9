"""Bridge replicas on real Mosquitto 2.0.11 and Kafka (docs/design.md §9).

First the broker's behaviour the design rests on, with raw MQTT 5 clients; then the bridge: scaling
from one replica to two keeps the single bridge's queued messages and doubles none, a drain hands a
replica's session over and leaves nothing behind, and the share of a replica that never returns
waits in its session until its client id comes back or its session is drained.
"""

from __future__ import annotations

import collections
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from iot_platform.access.connection import bridge_credentials, configure
from iot_platform.bridge import drain_marks
from iot_platform.core.envelope import decode_envelope
from iot_platform.settings import Settings
from iot_platform_tests.helpers import run_cli, wait_for
from iot_platform_tests.integration.test_bridge import (  # noqa: F401 - bridge_factory is a fixture
    BridgeProcess,
    bridge_factory,
    Publisher,
    Record,
    publish_paced,
    read_topic,
    telemetry,
    wait_for_count,
)

pytestmark = pytest.mark.integration


class Member:
    """A raw MQTT 5 client of the bridge's broker user, with a persistent session, that acks what it gets."""

    def __init__(self, settings: Settings, client_id: str, *, receive_maximum: int = 1000, ack: bool = True) -> None:
        self.payloads: list[bytes] = []
        self.session_present: bool | None = None
        self._ack, self._held = ack, []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True)
        configure(self.client, settings, bridge_credentials(settings))
        self.client.on_message = self._on_message
        self.client.on_connect = lambda _c, _u, flags, _r, _p: setattr(self, "session_present", flags.session_present)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval, properties.ReceiveMaximum = 3600, receive_maximum
        self.client.connect(settings.mqtt_host, settings.mqtt_port, 30, clean_start=False, properties=properties)
        self.client.loop_start()
        wait_for(lambda: self.session_present is not None, 10, f"CONNACK for {client_id}", interval_s=0.02)

    def _on_message(self, client: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        self.payloads.append(message.payload)
        if self._ack:
            client.ack(message.mid, message.qos)
        else:
            self._held.append(message.mid)

    def ack_held(self) -> None:
        self._ack = True
        for mid in self._held:
            self.client.ack(mid, 1)

    def subscribe(self, topic: str) -> None:
        done: list[int] = []
        self.client.on_subscribe = lambda *_args: done.append(1)
        self.client.subscribe(topic, options=SubscribeOptions(qos=1))
        wait_for(lambda: done, 10, f"SUBACK for {topic}", interval_s=0.02)

    def unsubscribe(self, topic: str) -> None:
        done: list[int] = []
        self.client.on_unsubscribe = lambda *_args: done.append(1)
        self.client.unsubscribe(topic)
        wait_for(lambda: done, 10, f"UNSUBACK for {topic}", interval_s=0.02)

    def cut(self) -> None:
        """The connection breaks without a DISCONNECT (as when the process is SIGKILLed)."""
        self.client.loop_stop()
        self.client.socket().close()

    def end(self, session_expiry: int | None = None) -> None:
        properties = None
        if session_expiry is not None:
            properties = Properties(PacketTypes.DISCONNECT)
            properties.SessionExpiryInterval = session_expiry
        self.client.disconnect(properties=properties)
        self.client.loop_stop()


def session_exists(settings: Settings, client_id: str) -> bool:
    """Whether the broker keeps a session for ``client_id``; asking leaves it as it was (an absent one is
    not created: the asking connection ends with session expiry 0). Nobody may be connected with that id."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True)
    configure(client, settings, bridge_credentials(settings))
    present: list[bool] = []
    client.on_connect = lambda _c, _u, flags, _r, _p: present.append(flags.session_present)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    client.connect(settings.mqtt_host, settings.mqtt_port, 30, clean_start=False, properties=properties)
    client.loop_start()
    try:
        wait_for(lambda: present, 10, f"CONNACK for {client_id}", interval_s=0.02)
    finally:
        ending = Properties(PacketTypes.DISCONNECT)
        ending.SessionExpiryInterval = 3600 if present and present[0] else 0
        client.disconnect(properties=ending)
        client.loop_stop()
    return present[0]


def publish(settings: Settings, messages: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    publisher = Publisher(settings)
    try:
        for topic, payload in messages:
            publisher.publish(topic, payload)
        acknowledged = publisher.acknowledged()
    finally:
        publisher.close()
    assert len(acknowledged) == len(messages)
    return acknowledged


def tagged(settings: Settings, count: int, tag: str) -> list[tuple[str, bytes]]:
    """``count`` telemetry messages whose payloads differ from any other call's."""
    return [(topic, payload.replace(b'"m', f'"{tag}-m'.encode(), 1)) for topic, payload in telemetry(settings, count)]


# -- Mosquitto 2.0.11 ------------------------------------------------------------------------------


def test_mosquitto_routes_a_share_to_an_offline_member_and_keeps_it_for_that_client_id(settings: Settings) -> None:
    """Two members of a shared subscription; one's connection breaks. Mosquitto goes on handing it
    every second message (its round robin ignores whether a member is connected), and keeps them in its
    session: the other member never gets them, the same client id gets them when it returns."""
    group = f"$share/g/{settings.mqtt_topic_filter}"
    tag = uuid.uuid4().hex[:6]
    first, second = Member(settings, f"a-{tag}"), Member(settings, f"b-{tag}")
    first.subscribe(group)
    second.subscribe(group)
    second.cut()
    messages = publish(settings, tagged(settings, 100, "offline"))
    wait_for(lambda: len(first.payloads) >= 50, 10, "the connected member's half")
    probe = publish(settings, tagged(settings, 2, "probe"))  # positive control: the group still delivers
    wait_for(lambda: probe[0][1] in first.payloads or probe[1][1] in first.payloads, 10, "a probe at the connected member")
    assert len(first.payloads) == 51, "exactly every second message, offline member or not"
    back = Member(settings, f"b-{tag}")  # the same client id, without subscribing again
    wait_for(lambda: len(back.payloads) >= 51, 10, "the offline member's share, once its client id returned")
    assert back.session_present and sorted(first.payloads + back.payloads) == sorted(p for _, p in messages + probe)
    first.end(0)
    back.end(0)


def test_a_session_keeps_both_subscription_forms_and_an_unsubscribe_keeps_what_was_queued(settings: Settings) -> None:
    """A session subscribed to the plain filter and then to the shared one keeps both: each message
    comes twice; unsubscribing the plain form ends that. Messages queued beyond a session's window
    survive an UNSUBSCRIBE and still arrive; a DISCONNECT with session expiry 0 ends the session."""
    tag = uuid.uuid4().hex[:6]
    member = Member(settings, f"c-{tag}")
    member.subscribe(settings.mqtt_topic_filter)
    member.end()
    assert session_exists(settings, f"c-{tag}")  # positive control of the last assertion
    member = Member(settings, f"c-{tag}")
    assert member.session_present
    member.subscribe(f"$share/g/{settings.mqtt_topic_filter}")
    twice = publish(settings, tagged(settings, 10, "both"))
    wait_for(lambda: len(member.payloads) >= 20, 10, "every message once per form")
    assert sorted(member.payloads) == sorted(p for _, p in twice * 2)
    member.unsubscribe(settings.mqtt_topic_filter)
    once = publish(settings, tagged(settings, 10, "shared"))
    wait_for(lambda: len(member.payloads) >= 30, 10, "every message once")
    member.cut()
    queued = publish(settings, tagged(settings, 30, "queued"))
    resumed = Member(settings, f"c-{tag}", receive_maximum=10, ack=False)
    wait_for(lambda: len(resumed.payloads) >= 10, 10, "a window of queued messages")
    resumed.unsubscribe(f"$share/g/{settings.mqtt_topic_filter}")
    assert len(resumed.payloads) == 10, "the other 20 are still queued in the session when it unsubscribes"
    resumed.ack_held()
    wait_for(lambda: len(resumed.payloads) >= 30, 10, "the queued messages, after the unsubscribe")
    assert sorted(resumed.payloads) == sorted(p for _, p in queued)
    assert sorted(member.payloads) == sorted(p for _, p in twice * 2 + once)
    resumed.end(session_expiry=0)
    assert not session_exists(settings, f"c-{tag}")


# -- the bridge ---------------------------------------------------------------------------------------


@pytest.fixture
def replica_factory(bridge_factory: Callable[[Settings], BridgeProcess]) -> Callable[[Settings, int, int], BridgeProcess]:
    def make(settings: Settings, index: int, replicas: int) -> BridgeProcess:
        # Its own bridge_id (the records' header): child_env() would hand every replica this process's.
        return bridge_factory(settings.model_copy(
            update={"replica_index": index, "bridge_replicas": replicas, "bridge_id": f"replica-{index}"}))

    return make


def by_payload(records: list[Record]) -> dict[bytes, list[Record]]:
    found: dict[bytes, list[Record]] = collections.defaultdict(list)
    for record in records:
        found[record.value].append(record)
    return found


def assert_each_once(settings: Settings, expected: list[tuple[str, bytes]]) -> dict[bytes, list[Record]]:
    """Every expected message is in Kafka exactly once, and nothing else is."""
    found = by_payload(read_topic(settings.kafka_bootstrap, settings.kafka_topic))
    missing = [p for _, p in expected if p not in found]
    doubled = {p: len(r) for p, r in found.items() if len(r) > 1}
    assert not missing and not doubled, f"{len(missing)} missing (e.g. {missing[:2]}), {len(doubled)} doubled"
    assert len(found) == len(expected)
    return found


def drain(settings: Settings, index: int, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return run_cli(settings.child_env(), "bridge", "--replica", str(index), "--drain", "--timeout", str(timeout_s), timeout=timeout_s + 30)


def test_one_bridge_becoming_two_replicas_keeps_its_queue_and_doubles_nothing(
    settings: Settings, replica_factory: Callable[[Settings, int, int], BridgeProcess]
) -> None:
    """A single bridge (plain subscription) stops; 500 messages wait in its session. Two replicas start:
    replica 0 has the single bridge's client id, so it resumes that session and delivers the 500; it
    moves to the shared subscription and unsubscribes the plain one, so the next 1,000 messages are
    split between the replicas and none arrives twice. Without the unsubscribe replica 0 would get
    each of them once more through the plain subscription its session kept."""
    single = replica_factory(settings, 0, 1).start().wait_subscribed()
    assert single.terminate() == 0
    queued = publish(settings, tagged(settings, 500, "queued"))
    zero = replica_factory(settings, 0, 2).start().wait_subscribed(event="mqtt unsubscribed a former form of the subscription")
    one = replica_factory(settings, 1, 2).start().wait_subscribed()
    later = publish(settings, tagged(settings, 1_000, "later"))
    wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, 1_500, timeout_s=60)
    assert zero.terminate() == 0 and one.terminate() == 0
    found = assert_each_once(settings, queued + later)
    takers = collections.Counter(decode_envelope(found[p][0].headers).bridge_id for _, p in later)
    assert len(takers) == 2 and min(takers.values()) >= 400, f"the shared subscription split the load: {takers}"
    assert {decode_envelope(found[p][0].headers).bridge_id for _, p in queued} == {"replica-0"}


def test_a_drained_replica_hands_everything_over_and_leaves_no_session(
    settings: Settings, replica_factory: Callable[[Settings, int, int], BridgeProcess]
) -> None:
    """Two replicas; while 3,000 messages are published at 500 msg/s, `bridge --replica 1 --drain`
    returns 0 once replica 1 has unsubscribed, delivered and acked everything routed to it, and ended
    its session; replica 1 exits 0. Every message is in Kafka exactly once and the broker keeps no
    session for replica 1. Restarted, the drained replica connects nowhere until `--undrain`.

    Messages flow during the drain, and the last 500 wait until it has returned (a slow drain on a
    loaded machine must not see publishing end first)."""
    zero = replica_factory(settings, 0, 2).start().wait_subscribed()
    one = replica_factory(settings, 1, 2).start().wait_subscribed()
    messages = tagged(settings, 3_000, "drain")
    publisher = Publisher(settings)
    drained = threading.Event()
    try:
        thread = publish_paced(publisher, messages, rate_per_s=500, hold=(2_500, drained))
        wait_for(lambda: len(publisher.sent) >= 1_000, 30, "a third published", interval_s=0.05)
        before = len(publisher.sent)
        result = drain(settings, 1)
        during = len(publisher.sent) - before
        drained.set()
        assert during > 0, "messages must flow while the drain runs"
        thread.join(timeout=60)
        assert not thread.is_alive() and len(publisher.sent) == len(messages)
        acknowledged = publisher.acknowledged()
    finally:
        publisher.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert one.process is not None and one.process.wait(timeout=30) == 0
    wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, len(acknowledged), timeout_s=60)
    found = assert_each_once(settings, acknowledged)
    by_bridge = collections.Counter(decode_envelope(r[0].headers).bridge_id for r in found.values())
    mark = drain_marks.drained(settings.home, settings.model_copy(update={"replica_index": 1}).bridge_client_id)
    assert mark is not None and mark["acked"] == by_bridge["replica-1"] > 0, (mark, by_bridge)
    assert not session_exists(settings, f"{settings.mqtt_client_id}-1")
    assert zero.terminate() == 0

    parked = replica_factory(settings, 1, 2).start().wait_subscribed(event="replica drained: not connecting until `iot-platform bridge --undrain`")
    assert parked.terminate() == 0
    assert not any(line.get("msg") == "mqtt connected" for line in parked.log_lines())
    undrained = run_cli(settings.child_env(), "bridge", "--replica", "1", "--undrain")
    assert undrained.returncode == 0, undrained.stderr
    again = replica_factory(settings, 1, 2).start().wait_subscribed()
    assert again.terminate() == 0


def test_the_share_of_a_replica_that_never_returns_waits_in_its_session_until_it_is_drained(
    settings: Settings, replica_factory: Callable[[Settings, int, int], BridgeProcess]
) -> None:
    """Two replicas; replica 1 is SIGKILLed and never restarted. Of 1,000 messages published after,
    Mosquitto hands every second one to replica 1's session: replica 0 delivers 500 and the other 500
    wait, and they are still missing 5 s after a probe published later reached Kafka through replica
    0. `bridge --replica 1 --drain`, with no replica 1 running, takes the session over, delivers them
    and ends it: all 1,000 in Kafka exactly once, no session left."""
    zero = replica_factory(settings, 0, 2).start().wait_subscribed()
    one = replica_factory(settings, 1, 2).start().wait_subscribed()
    one.kill()
    orphaned = publish(settings, tagged(settings, 1_000, "orphaned"))
    probe = publish(settings, tagged(settings, 2, "probe"))  # published last, one of the two reaches replica 0
    assert wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, 501, timeout_s=60) == 501
    # A bounded wait for more (its positive control: the probe, published after every orphaned message, arrived).
    delivered = wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, 502, timeout_s=5)
    assert delivered == 501, f"{delivered} in Kafka: replica 1's share should wait in its session"
    result = drain(settings, 1)
    assert result.returncode == 0, result.stderr[-3000:]
    wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, 1_002, timeout_s=60)
    assert zero.terminate() == 0
    assert_each_once(settings, orphaned + probe)
    assert not session_exists(settings, f"{settings.mqtt_client_id}-1")
    print(f"\nreplica 1 SIGKILLed: {1_000 - (delivered - 1)} of 1,000 messages waited in its session until the drain")

"""Which subscription a bridge replica holds, and which replica settings can never work (pure).

With one replica the bridge subscribes to ``IOT_MQTT_TOPIC_FILTER``; with several, each replica takes the
MQTT 5 shared subscription ``$share/{IOT_MQTT_SHARE_GROUP}/{filter}``, so the broker hands each message
to one of them. A persistent session keeps its subscriptions across reconnects: a replica that moves
from one form to the other (scaling 1 -> 2 or back) would keep the old one too and receive every
message twice, so on each connection it subscribes to its form first and then unsubscribes the other
(in that order: in between a message may arrive twice, never zero times). A drained replica holds
neither (drain.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from iot_platform.settings import Settings


@dataclass(frozen=True)
class SubscriptionPlan:
    """What to send on each new connection: SUBSCRIBE ``subscribe`` (if any), then UNSUBSCRIBE ``unsubscribe``."""

    subscribe: str | None
    unsubscribe: tuple[str, ...]


def shared_filter(settings: Settings) -> str:
    return f"$share/{settings.mqtt_share_group}/{settings.mqtt_topic_filter}"


def subscription_plan(settings: Settings, *, draining: bool) -> SubscriptionPlan:
    """The replica's subscription and the forms it must not hold (MQTT 3.1.1: the plain filter only)."""
    plain = settings.mqtt_topic_filter
    if settings.mqtt_protocol == "3.1.1":  # one replica, never drained (replica_problem)
        return SubscriptionPlan(plain, ())
    shared = shared_filter(settings)
    if draining:
        return SubscriptionPlan(None, (shared, plain))
    if settings.bridge_replicas > 1:
        return SubscriptionPlan(shared, (plain,))
    return SubscriptionPlan(plain, (shared,))


def replica_problem(settings: Settings, *, draining: bool = False) -> str | None:
    """Why this replica must not run with these settings (one line naming the settings), or None."""
    index, replicas = settings.replica_index, settings.bridge_replicas
    if settings.mqtt_protocol == "3.1.1" and (replicas > 1 or index > 0 or draining):
        what = "--drain" if draining else f"IOT_BRIDGE_REPLICAS={replicas} with IOT_REPLICA_INDEX={index}"
        return (f"{what} needs MQTT 5 (shared subscriptions, session expiry): set IOT_MQTT_PROTOCOL=5, or run "
                "one bridge (IOT_BRIDGE_REPLICAS=1, IOT_REPLICA_INDEX=0) on 3.1.1")
    if replicas == 1 and index > 0 and not draining:
        return (f"IOT_REPLICA_INDEX={index} with IOT_BRIDGE_REPLICAS=1: a second replica on the plain subscription would "
                "receive every message twice; set IOT_BRIDGE_REPLICAS to the number of replicas")
    return None

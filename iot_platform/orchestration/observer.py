"""`platform_observer`: offsets, lag, rates and service liveness as observations of the external assets.

Every minute it reads Kafka's end offsets of the messages topic (bridge output), the consumer's
stored offsets in ``iot.ingest_offsets`` (what is in PostgreSQL) and every service replica's pid file, and
reports an ``AssetObservation`` on ``kafka_iot_messages`` and on ``iot_messages``. Rates are the
difference to the previous tick (kept in the sensor cursor). A source that cannot be read is
reported as an error in the metadata instead of failing the tick, so the other still shows.
"""

import json
import time
from dataclasses import dataclass

import dagster as dg

from iot_platform.observability.pidfile import live_replica_pids
from iot_platform.orchestration.assets.sources import iot_messages, kafka_iot_messages
from iot_platform.orchestration.resources import PlatformSettings, PostgresResource
from iot_platform.orchestration.services import BRIDGE, CONSUMER
from iot_platform.settings import Settings
from iot_platform.storage.audit import consumed_offsets

KAFKA_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Snapshot:
    at: float
    end_offsets: dict[int, int] | None  # partition -> Kafka high watermark; None: unreadable
    consumed: dict[int, int] | None  # partition -> next offset stored in PostgreSQL; None: unreadable


def lag(snapshot: Snapshot) -> dict[int, int] | None:
    """Records in Kafka not yet stored, per partition (a partition never consumed lags fully)."""
    if snapshot.end_offsets is None or snapshot.consumed is None:
        return None
    return {p: max(0, end - snapshot.consumed.get(p, 0)) for p, end in sorted(snapshot.end_offsets.items())}


def rate(previous: dict | None, current_total: int | None, at: float, key: str) -> float | None:
    """Records per second since the previous tick, or None without a usable previous value."""
    if previous is None or current_total is None or previous.get(key) is None or at <= previous["at"]:
        return None
    return max(0.0, (current_total - previous[key]) / (at - previous["at"]))


def kafka_end_offsets(settings: Settings) -> dict[int, int]:
    from iot_platform.observability.kafka_watermarks import topic_watermarks, watermark_reader

    with watermark_reader(settings, "observer", KAFKA_TIMEOUT_S) as client:
        watermarks = topic_watermarks(client, [settings.kafka_topic], KAFKA_TIMEOUT_S)
    return {partition: high for (_topic, partition), (_low, high) in watermarks.items()}


def take_snapshot(settings: Settings, errors: dict[str, str]) -> Snapshot:
    end_offsets = consumed = None
    try:
        end_offsets = kafka_end_offsets(settings)
    except Exception as exc:  # noqa: BLE001 - reported as evidence, the tick goes on
        errors["kafka"] = str(exc)[:300]
    try:
        consumed = {p: n for (t, p), n in consumed_offsets(settings).items() if t == settings.kafka_topic}
    except Exception as exc:  # noqa: BLE001
        errors["postgres"] = str(exc)[:300]
    return Snapshot(time.time(), end_offsets, consumed)


def observations(settings: Settings, snapshot: Snapshot, previous: dict | None, errors: dict[str, str]) -> list[dg.AssetObservation]:
    produced = None if snapshot.end_offsets is None else sum(snapshot.end_offsets.values())
    stored = None if snapshot.consumed is None else sum(snapshot.consumed.values())
    lags = lag(snapshot)
    bridges, consumers = live_replica_pids(settings.home, BRIDGE.name), live_replica_pids(settings.home, CONSUMER.name)
    kafka_meta: dict = {"bridge_alive": bool(bridges), "bridge_pid": bridges.get(0, 0), "bridge_replicas_alive": len(bridges),
                        "bridge_pids": dg.MetadataValue.json({str(i): pid for i, pid in bridges.items()})}
    if produced is not None:
        kafka_meta |= {"end_offsets_total": produced, "end_offsets": dg.MetadataValue.json(snapshot.end_offsets)}
    if (produce_rate := rate(previous, produced, snapshot.at, "produced")) is not None:
        kafka_meta["produce_rate_per_s"] = round(produce_rate, 2)
    pg_meta: dict = {"consumer_alive": bool(consumers), "consumer_pid": consumers.get(0, 0), "consumer_replicas_alive": len(consumers),
                     "consumer_pids": dg.MetadataValue.json({str(i): pid for i, pid in consumers.items()})}
    if stored is not None:
        pg_meta |= {"consumed_offsets_total": stored}
    if lags is not None:
        pg_meta |= {"lag_total": sum(lags.values()), "lag_per_partition": dg.MetadataValue.json(lags)}
    if (ingest_rate := rate(previous, stored, snapshot.at, "stored")) is not None:
        pg_meta["ingest_rate_per_s"] = round(ingest_rate, 2)
    if errors:
        kafka_meta["errors"] = pg_meta["errors"] = dg.MetadataValue.json(errors)
    return [dg.AssetObservation(kafka_iot_messages.key, metadata=kafka_meta), dg.AssetObservation(iot_messages.key, metadata=pg_meta)]


@dg.sensor(name="platform_observer", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Observes Kafka end offsets, consumer lag, rates and service liveness.")
def platform_observer(
    context: dg.SensorEvaluationContext, platform: PlatformSettings, postgres: PostgresResource
) -> dg.SensorResult:
    settings, errors = platform.get(postgres), {}
    snapshot = take_snapshot(settings, errors)
    previous = json.loads(context.cursor) if context.cursor else None
    events = observations(settings, snapshot, previous, errors)
    cursor = {
        "at": snapshot.at,
        "produced": None if snapshot.end_offsets is None else sum(snapshot.end_offsets.values()),
        "stored": None if snapshot.consumed is None else sum(snapshot.consumed.values()),
    }
    return dg.SensorResult(asset_events=events, cursor=json.dumps(cursor))

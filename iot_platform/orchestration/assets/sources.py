"""External assets: the data the services move, which Dagster observes but never materializes.

The bridge and the consumer (see :mod:`..services`) write these continuously; the
`platform_observer` sensor reports their offsets, lag and rates as observations.
"""

from __future__ import annotations

import dagster as dg

INGEST_GROUP = "ingest"

mqtt_telemetry = dg.AssetSpec(
    "mqtt_telemetry",
    deps=["broker_access"],
    description="Device telemetry published to Mosquitto under the topic grammar (QoS 1), by authenticated devices within their ACLs.",
    group_name=INGEST_GROUP,
    kinds={"mqtt"},
)

kafka_iot_messages = dg.AssetSpec(
    "kafka_iot_messages",
    deps=[mqtt_telemetry],
    description="Kafka topic of accepted messages (keyed by device by default: IOT_KAFKA_KEY_MODE), written by the bridge; rejects go to the DLQ topic.",
    group_name=INGEST_GROUP,
    kinds={"kafka"},
)

iot_messages = dg.AssetSpec(
    "iot_messages",
    deps=[kafka_iot_messages, "iot_schema"],
    description="iot.messages: raw telemetry partitioned by day, written by the consumer with its offsets.",
    group_name=INGEST_GROUP,
    kinds={"postgres"},
)

SOURCE_SPECS = [mqtt_telemetry, kafka_iot_messages, iot_messages]

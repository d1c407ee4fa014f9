"""The shared fixtures give real, isolated servers."""

from __future__ import annotations

import psycopg2
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from iot_platform.access.connection import admin_credentials
from iot_platform.settings import Settings
from iot_platform.stack.mosquitto import round_trip
from iot_platform_tests.helpers import mqtt_topic

pytestmark = pytest.mark.integration


def test_settings_fixture_gives_topics_database_and_broker(settings: Settings) -> None:
    """Topics exist with the configured partitions and retention; the database is empty and ours."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    topics = admin.list_topics(timeout=10).topics
    assert len(topics[settings.kafka_topic].partitions) == 6
    assert len(topics[settings.kafka_dlq_topic].partitions) == 1
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.kafka_topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["retention.ms"].value == "259200000"

    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_database(), current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)")
        assert cur.fetchone() == (settings.pg_database, "iot", False)
    conn.close()

    assert settings.mqtt_tls and settings.mqtt_ca_file is not None
    assert round_trip(settings.mqtt_host, settings.mqtt_port, admin_credentials(settings), settings.mqtt_ca_file)
    assert mqtt_topic(settings, "a", "b", "x").endswith("/mtic/msg/client/realtime/a/b/x")
    assert mqtt_topic(settings, "a", "b").startswith(settings.mqtt_topic_filter[:-1])

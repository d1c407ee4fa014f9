"""Which identity a service process runs as: the key of its instance lock, progress file and logs.

A bridge replica is its MQTT client id (``Settings.bridge_client_id``: IOT_MQTT_CLIENT_ID, with
``-{i}`` for replica i > 0); a consumer replica is its static group member
``{IOT_KAFKA_CONSUMER_GROUP}-{IOT_REPLICA_INDEX}`` (docs/design.md §10). Everything keyed by identity
(locks, progress files, drain marks, the watchdog's reading) takes them as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from iot_platform.observability.instance_lock import AlreadyRunning, service_instance
from iot_platform.settings import Settings

IDENTITY_SETTING = {"bridge": "IOT_MQTT_CLIENT_ID", "consumer": "IOT_KAFKA_CONSUMER_GROUP-IOT_REPLICA_INDEX"}


def service_identity(service: str, settings: Settings) -> str:
    """The identity of ``service`` ("bridge" or "consumer") under ``settings``."""
    if service == "bridge":
        return settings.bridge_client_id
    if service == "consumer":
        return settings.consumer_instance_id
    raise ValueError(f"unknown service {service!r}")


def run_as_only_instance(service: str, settings: Settings, main: Callable[[], int]) -> int:
    """Run ``main`` holding the lock of this service identity; exit 1, naming the holder's pid, when
    another process holds it (see instance_lock.py)."""
    identity = service_identity(service, settings)
    try:
        with service_instance(settings.home, service, identity, IDENTITY_SETTING[service]):
            return main()
    except AlreadyRunning as exc:
        logging.getLogger(f"iot_platform.{service}").error(
            f"{service} not started: another one runs with this identity", extra={"error": str(exc), "pid": exc.holder_pid}
        )
        return 1

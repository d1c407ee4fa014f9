"""The MQTT side of the bridge: a persistent QoS 1 session with manual acks, and bounded reading.

The session survives the bridge (MQTT 5 session expiry with ``clean_start=False``, or 3.1.1
``clean_session=False``), so messages the bridge never acked, including those it held when it
was killed, are redelivered to its next connection. The receive maximum (MQTT 5) and the broker's
inflight limit bound how many unacked messages the broker sends; because Mosquitto 2.0.11 sends more
than that when a session resumes, the client also stops reading its socket while the bridge holds
``IOT_MQTT_RECEIVE_MAXIMUM`` unacked messages (``pause_reading_while``): the excess waits in the
broker and in TCP buffers, not in the bridge's memory.

The client runs one of two code paths, chosen here and logged by the bridge: the fast path
(paho_fast.py, paho internals, only on the paho-mqtt release it was written for) or paho's public
API (paho_client.py), also forced with ``IOT_MQTT_CLIENT_PATH=public``.
"""

from __future__ import annotations

import logging
import time

from paho.mqtt.client import CallbackAPIVersion, Client, MQTTv5, MQTTv311
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from iot_platform.access.connection import bridge_credentials, configure
from iot_platform.bridge.paho_client import PAHO_VERSION, PublicBridgeClient, choose_client_path
from iot_platform.settings import Settings


def make_client(settings: Settings) -> PublicBridgeClient:
    """A paho client for the bridge's session, on the path ``client.path`` says; not connected yet."""
    v5 = settings.mqtt_protocol == "5"
    path = choose_client_path(PAHO_VERSION, settings.mqtt_client_path)
    client_class = _fast_client_class(v5) if path.fast else PublicBridgeClient
    client = client_class(
        CallbackAPIVersion.VERSION2,
        client_id=settings.bridge_client_id,
        protocol=MQTTv5 if v5 else MQTTv311,
        clean_session=None if v5 else False,
        manual_ack=True,
    )
    client.path = path
    client.pace_reads(settings.bridge_batch_interval_ms / 1000)
    client.connect_timeout = settings.mqtt_connect_timeout_s
    client.enable_logger(logging.getLogger("iot_platform.bridge.paho"))
    configure(client, settings, bridge_credentials(settings))  # credentials; TLS for mqtts://
    return client


def _fast_client_class(v5: bool) -> type[PublicBridgeClient]:
    from iot_platform.bridge.paho_fast import FastBridgeClient, install_shared_table_properties

    if v5:
        install_shared_table_properties()
    return FastBridgeClient


def connect_async(client: Client, settings: Settings) -> None:
    """Queue the first connection; paho's network thread makes (and remakes) it."""
    if settings.mqtt_protocol == "5":
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = settings.mqtt_session_expiry_s
        properties.ReceiveMaximum = settings.mqtt_receive_maximum
        client.connect_async(
            settings.mqtt_host, settings.mqtt_port, settings.mqtt_keepalive_s, clean_start=False, properties=properties
        )
    else:
        client.connect_async(settings.mqtt_host, settings.mqtt_port, settings.mqtt_keepalive_s)


def end_session(client: Client, timeout_s: float) -> bool:
    """MQTT 5 DISCONNECT with session expiry 0: the broker discards the session (and whatever it still held).

    Only for a session proven empty and unsubscribed (drain.py). Returns once paho has closed the socket
    (True) or after ``timeout_s`` (False: the DISCONNECT may not have gone out, and the empty session with
    no subscription stays until it expires; nothing is routed to it)."""
    properties = Properties(PacketTypes.DISCONNECT)
    properties.SessionExpiryInterval = 0
    client.disconnect(properties=properties)
    deadline = time.monotonic() + timeout_s
    while client.socket() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    return client.socket() is None

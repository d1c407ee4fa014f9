"""One side of the paho golden tests, run as a subprocess: connect to a scripted broker, take N messages.

``--client stock`` is paho-mqtt as installed, through its public API only; this process then never
imports ``iot_platform``, so nothing of the bridge's fast path (which patches paho's packet decoder)
can leak into the reference. ``--client fast|public`` is the bridge's client on that path. Each
QoS 1 message is acked in arrival order (the bridge's client in batches of three). Prints one JSON
list: what ``on_message`` saw for every message.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
from typing import Any


def describe(message: Any) -> dict[str, object]:
    try:
        topic = message.topic
    except UnicodeDecodeError:
        topic = "undecodable:" + bytes(getattr(message, "_topic", b"")).hex()
    payload = bytes(message.payload)
    return {
        "topic": topic,
        "payload": payload.hex() if len(payload) < 512 else f"{len(payload)}:{hashlib.sha256(payload).hexdigest()}",
        "qos": message.qos,
        "retain": bool(message.retain),
        "dup": bool(message.dup),
        "mid": message.mid,
        "properties": None if message.properties is None else str(message.properties),
        "timestamp_is_float": isinstance(message.timestamp, float),
    }


def make(client_kind: str, protocol: str, client_id: str) -> Any:
    if client_kind == "stock":
        from paho.mqtt.client import CallbackAPIVersion, Client, MQTTv5, MQTTv311

        v5 = protocol == "5"
        return Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTv5 if v5 else MQTTv311,
                      clean_session=None if v5 else False, manual_ack=True)
    from iot_platform.bridge.mqtt_session import make_client
    from iot_platform.settings import Settings

    # Plain MQTT: the golden broker is a bare socket on loopback, and stock paho speaks no TLS here either.
    settings = Settings(mqtt_url="mqtt://127.0.0.1:1883", mqtt_protocol=protocol, mqtt_client_id=client_id,
                        mqtt_client_path="public" if client_kind == "public" else "auto")
    client = make_client(settings)
    assert client.path.fast == (client_kind == "fast"), client.path
    return client


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--protocol", choices=["5", "3.1.1"], required=True)
    parser.add_argument("--client", choices=["stock", "fast", "public"], required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    if args.client == "stock":
        assert "iot_platform" not in sys.modules
    client = make(args.client, args.protocol, "golden")
    seen: list[dict[str, object]] = []
    unacked: list[int] = []
    done = threading.Event()

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        seen.append(describe(message))
        if message.qos == 1:
            if args.client == "stock":
                client.ack(message.mid, 1)
            else:
                unacked.append(message.mid)
                if len(unacked) == 3:
                    client.send_pubacks(unacked[:])
                    unacked.clear()
        if len(seen) == args.count:
            if unacked:
                client.send_pubacks(unacked[:])
            done.set()

    client.on_message = on_message
    client.connect("127.0.0.1", args.port, keepalive=60)
    client.loop_start()
    finished = done.wait(30)
    client.disconnect()
    client.loop_stop()
    print(json.dumps(seen))
    return 0 if finished else 1


if __name__ == "__main__":
    sys.exit(main())

"""What Mosquitto's autosave setting costs in publish throughput, and what a broker crash loses.

For each autosave setting: a persistent QoS 1 session subscribes and goes offline, a publisher sends
N QoS 1 messages and waits for every PUBACK (publish rate measured), the broker is SIGKILLed and
restarted, and the session reconnects to count what survived. Every message counted as lost was
acknowledged to its publisher by the broker.

    .venv/bin/python benchmarks/mosquitto_autosave.py --messages 20000
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from iot_platform.access.dynsec import DynsecClient
from iot_platform.access.repair import create_client
from iot_platform.access.state import ClientSpec
from iot_platform.settings import Settings
from iot_platform.stack.mosquitto import MosquittoServer, new_admin
from iot_platform.stack.ports import free_port

TOPIC = "bench/autosave"
BENCH_USER, BENCH_PASSWORD = "bench", "bench-only-password"  # a throw-away broker on loopback


def _provision(server: MosquittoServer) -> None:
    """The broker admits no anonymous client: one client that may publish and read TOPIC."""
    settings = Settings(mqtt_url=server.url, mqtt_admin_username=server.admin.username, mqtt_admin_password=server.admin.password)
    acls = [{"acltype": t, "topic": TOPIC, "allow": True} for t in ("publishClientSend", "publishClientReceive", "subscribePattern")]
    with DynsecClient(settings) as admin:
        admin.execute([{"command": "createRole", "rolename": "bench", "acls": acls},
                       *create_client(ClientSpec(BENCH_USER, roles=("bench",)), BENCH_PASSWORD)])


def _client(client_id: str, clean: bool) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    client.username_pw_set(BENCH_USER, BENCH_PASSWORD)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    return client


def _subscribe_offline(port: int) -> None:
    sub = _client("bench-sub", clean=False)
    done = threading.Event()
    sub.on_subscribe = lambda *_: done.set()
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    sub.subscribe(TOPIC, qos=1)
    done.wait(10)
    sub.disconnect()
    sub.loop_stop()


def _publish(port: int, count: int) -> float:
    pub = _client("bench-pub", clean=True)
    acked = threading.Semaphore(0)
    pub.on_publish = lambda *_: acked.release()
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    start = time.perf_counter()
    payload = b'{"temperature": 21.5, "humidity": 40.1, "seq": 0}'
    window = threading.Semaphore(1000)
    pub.on_publish = lambda *_: (window.release(), acked.release())
    for _ in range(count):
        window.acquire()
        pub.publish(TOPIC, payload, qos=1)
    for _ in range(count):
        acked.acquire()
    elapsed = time.perf_counter() - start
    pub.disconnect()
    pub.loop_stop()
    return count / elapsed


def _count_survivors(port: int, expected: int) -> int:
    received = 0
    lock = threading.Lock()

    def on_message(*_: object) -> None:
        nonlocal received
        with lock:
            received += 1

    sub = _client("bench-sub", clean=False)
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < 2.0 and received < expected:
        if received != last:
            last, quiet_since = received, time.monotonic()
        time.sleep(0.1)
    sub.disconnect()
    sub.loop_stop()
    return received


def run(autosave_changes: int, messages: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as workdir:
        server = MosquittoServer(Path(workdir), free_port(), autosave_changes=autosave_changes, admin=new_admin()).start()
        try:
            _provision(server)
            _subscribe_offline(server.port)
            rate = _publish(server.port, messages)
            server.kill()
            server.start()
            survived = _count_survivors(server.port, messages)
        finally:
            server.kill()
    return rate, messages - survived


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--settings", type=int, nargs="+", default=[1_000_000_000, 10_000, 1_000, 100])
    args = parser.parse_args()
    print(f"{'autosave changes':>18} {'publish msg/s':>14} {'lost on SIGKILL':>16}")
    for changes in args.settings:
        rate, lost = run(changes, args.messages)
        label = "never (1e9)" if changes >= 1_000_000_000 else str(changes)
        print(f"{label:>18} {rate:>14,.0f} {lost:>16,}")


if __name__ == "__main__":
    main()

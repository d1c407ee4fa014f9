"""Sustained throughput and delivery latency of one `iot-platform bridge` process.

Starts its own Mosquitto (credentials required, a TLS listener and a plain loopback one) and Kafka
(stack launchers, in a temporary directory, stopped at the end; --kafka-bootstrap uses another
Kafka), then measures, for each transport of --transport (plain MQTT and MQTT over TLS, same run):

1. drain: N messages wait in the bridge's persistent session (published while it was stopped);
   the bridge is started and we time how fast they reach Kafka (sum of high watermarks) -- the
   bridge's sustained msg/s, without a publisher competing for the CPU -- and read the bridge's
   peak resident memory (VmHWM) after the drain, against an idle bridge's;
2. live: a publisher sends at a fixed rate while the bridge runs; delivery latency (MQTT receipt
   to Kafka confirmation) p50/p99 comes from the bridge's own histogram (/metrics), the end-to-end
   rate from Kafka.

Usage: .venv/bin/python benchmarks/bridge_throughput.py [--messages 200000] [--live-rate 10000] [--transport plain tls]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path

import paho.mqtt.client as mqtt
from confluent_kafka import Consumer, TopicPartition

from iot_platform.access.connection import configure
from iot_platform.bridge.metrics import histogram_quantile
from iot_platform.settings import Settings
from iot_platform.stack.certs import server_certificate
from iot_platform.stack.kafka import KafkaServer, ensure_topics
from iot_platform.stack.mosquitto import MosquittoServer, new_admin
from iot_platform.stack.ports import free_port
from iot_platform.stack.sandbox import provision_mqtt_access, publisher_credentials


def kafka_total(consumer: Consumer, topic: str) -> int:
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)


def start_bridge(settings: Settings, workdir: Path) -> subprocess.Popen[bytes]:
    log_path = workdir / f"bridge-{time.monotonic_ns()}.log"
    env = settings.child_env()
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "iot_platform.cli", "bridge"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if '"mqtt subscribed"' in log_path.read_text():
            return process
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"bridge did not subscribe:\n{log_path.read_text()[-2000:]}")


def max_in_flight(workdir: Path) -> int:
    """Largest in-flight count any bridge heartbeat reported (bounded by the broker's window)."""
    values = [0]
    for path in workdir.glob("bridge-*.log"):
        for line in path.read_text().splitlines():
            if '"heartbeat"' in line:
                values.append(int(json.loads(line)["in_flight"]))
    return max(values)


def peak_rss_mib(process: subprocess.Popen[bytes]) -> float:
    """The process's peak resident set so far (VmHWM), in MiB."""
    with open(f"/proc/{process.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/<pid>/status")


def stop_bridge(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def publisher(settings: Settings) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}")
    configure(client, settings, publisher_credentials(settings))
    client.max_inflight_messages_set(1000)
    client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=60)
    client.loop_start()
    return client


def payloads(settings: Settings, count: int) -> list[tuple[str, bytes]]:
    prefix = settings.mqtt_topic_grammar.split("{tenant_id}")[0]
    out = []
    for seq in range(count):
        topic = f"{prefix}tenant{seq % 20}/project{seq % 3}/device{seq % 500}"
        body = {"msg_id": f"{seq:012d}", "ts": 1764000000000 + seq, "temperature": 21.5, "humidity": 40.2, "battery": 3.71}
        out.append((topic, json.dumps(body).encode()))
    return out


def publish_all(client: mqtt.Client, messages: list[tuple[str, bytes]], rate_per_s: float | None) -> None:
    infos: collections.deque[mqtt.MQTTMessageInfo] = collections.deque()
    start = time.monotonic()
    for index, (topic, payload) in enumerate(messages):
        if rate_per_s and index % 100 == 0:
            ahead = index / rate_per_s - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        while len(infos) >= 20_000:  # paho refuses beyond 65,535 unacknowledged messages
            infos.popleft().wait_for_publish(60)
        infos.append(client.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(60)


def scrape_latency(port: int) -> dict[float, float]:
    """The bridge's delivery-latency histogram: cumulative count per upper bound (seconds)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        float(m.group(1)): float(m.group(2))
        for m in re.finditer(r'iot_bridge_delivery_latency_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)', text)
    }


def latency_ms(buckets: dict[float, float], q: float, since: dict[float, float] | None = None) -> float:
    """The q-quantile in ms of the observations made after ``since`` (a previous scrape)."""
    since = since or {}
    value = histogram_quantile([(bound, count - since.get(bound, 0.0)) for bound, count in buckets.items()], q)
    return float("nan") if value is None else value * 1000


def measure_rate(consumer: Consumer, topic: str, target: int, timeout_s: float) -> tuple[float, float]:
    """(sustained msg/s over the middle 10-90 % of the run, seconds to reach target)."""
    samples = []
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        total = kafka_total(consumer, topic)
        samples.append((time.monotonic(), total))
        if total >= target:
            break
        time.sleep(0.25)
    lo = next((s for s in samples if s[1] >= 0.1 * target), samples[0])
    hi = next((s for s in samples if s[1] >= 0.9 * target), samples[-1])
    rate = (hi[1] - lo[1]) / max(hi[0] - lo[0], 1e-9)
    return rate, samples[-1][0] - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000, help="messages queued for the drain phase")
    parser.add_argument("--live-messages", type=int, default=100_000)
    parser.add_argument("--live-rate", type=float, default=10_000, help="publish rate of the live phase (msg/s)")
    parser.add_argument("--mqtt-protocol", choices=["5", "3.1.1"], default="5")
    parser.add_argument("--transport", nargs="+", choices=["plain", "tls"], default=["plain", "tls"],
                        help="broker listeners to measure, in this order (default: both)")
    parser.add_argument("--kafka-bootstrap")
    args = parser.parse_args()

    # The directory is removed last, after the stack has stopped the servers that write into it.
    with tempfile.TemporaryDirectory(prefix="iot-bench-bridge-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        mosquitto = MosquittoServer(work / "mosquitto", free_port(), admin=new_admin(), tls_port=free_port(),
                                    tls=server_certificate(work / "tls", "mosquitto")).start()
        stack.callback(mosquitto.kill)
        bootstrap = args.kafka_bootstrap
        if not bootstrap:
            kafka = KafkaServer(work / "kafka", free_port(), free_port()).start()
            stack.callback(kafka.kill)
            bootstrap = kafka.bootstrap
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}"})
        stack.callback(consumer.close)
        print(f"MQTT {args.mqtt_protocol}, load average before: {os.getloadavg()[0]:.1f} (2 cores, shared)")
        for transport in args.transport:
            tag = uuid.uuid4().hex[:8]
            settings = Settings(
                home=work / "home",
                mqtt_url=mosquitto.url if transport == "tls" else mosquitto.plain_url,
                mqtt_ca_file=mosquitto.ca_file,
                mqtt_admin_username=mosquitto.admin.username,
                mqtt_admin_password=mosquitto.admin.password,
                kafka_bootstrap=bootstrap,
                kafka_topic=f"bench-messages-{tag}",
                kafka_dlq_topic=f"bench-dlq-{tag}",
                mqtt_client_id=f"bench-bridge-{tag}",
                mqtt_topic_filter=f"b{tag}/mtic/msg/client/realtime/#",
                mqtt_topic_grammar=f"b{tag}/mtic/msg/client/realtime/{{tenant_id}}/{{project_id}}[/...]",
                bridge_metrics_port=free_port(),
                heartbeat_interval_s=1.0,
                mqtt_protocol=args.mqtt_protocol,
            )
            settings = provision_mqtt_access(settings)
            ensure_topics(settings)
            run_transport(transport, settings, work / f"run-{transport}", consumer, args, stack)
    return 0


def run_transport(
    transport: str, settings: Settings, work: Path, consumer: Consumer, args: argparse.Namespace, stack: ExitStack
) -> None:
    work.mkdir(parents=True)
    metrics_port = settings.bridge_metrics_port
    # Phase 1 (drain): the session exists, the bridge is stopped, the broker queues N messages.
    idle = start_bridge(settings, work)
    idle_rss = peak_rss_mib(idle)
    stop_bridge(idle)
    pub = publisher(settings)
    stack.callback(pub.loop_stop)
    t0 = time.monotonic()
    publish_all(pub, payloads(settings, args.messages), None)
    print(f"[{transport}] queued {args.messages} messages in the bridge's session in {time.monotonic() - t0:.1f}s")
    bridge = start_bridge(settings, work)
    stack.callback(lambda: bridge.poll() is None and bridge.kill())
    drain_rate, took = measure_rate(consumer, settings.kafka_topic, args.messages, 120)
    drain_latency = scrape_latency(metrics_port)
    drain_rss = peak_rss_mib(bridge)
    print(f"[{transport}] drain: {args.messages} messages in {took:.1f}s, sustained {drain_rate:,.0f} msg/s "
          f"= {1e6 / drain_rate:.1f} us/msg (latency under saturation p50 {latency_ms(drain_latency, 0.5):.1f} ms, "
          f"p99 {latency_ms(drain_latency, 0.99):.1f} ms, max in flight {max_in_flight(work)})")
    print(f"[{transport}] bridge peak RSS (VmHWM): {drain_rss:.1f} MiB after the drain, {idle_rss:.1f} MiB when subscribed and idle")
    stop_bridge(bridge)

    # Phase 2 (live): publish at a fixed rate while the bridge runs.
    bridge = start_bridge(settings, work)
    base = kafka_total(consumer, settings.kafka_topic)
    before = scrape_latency(metrics_port)
    t0 = time.monotonic()
    publish_all(pub, payloads(settings, args.live_messages), args.live_rate)
    live_rate, _ = measure_rate(consumer, settings.kafka_topic, base + args.live_messages, 60)
    elapsed = time.monotonic() - t0
    live = scrape_latency(metrics_port)
    print(f"[{transport}] live: {args.live_messages} messages offered at {args.live_rate:,.0f} msg/s, all in Kafka after "
          f"{elapsed:.1f}s; delivery latency p50 {latency_ms(live, 0.5, before):.1f} ms, "
          f"p99 {latency_ms(live, 0.99, before):.1f} ms")
    stop_bridge(bridge)
    pub.disconnect()


if __name__ == "__main__":
    sys.exit(main())

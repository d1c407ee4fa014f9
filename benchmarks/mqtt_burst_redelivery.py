"""Messages the broker sends the bridge again after it acked them all and restarted cleanly.

Starts a private Mosquitto (the platform's configuration, or another autosave setting) and Kafka in
a temporary directory, and the bridge (`iot-platform bridge`, MQTT 5 or 3.1.1). 20 `mosquitto_pub
-q 1 -l` publishers send a burst of N messages at once; once Kafka holds all N the bridge is stopped
cleanly (SIGTERM: it acks what Kafka confirmed, then disconnects) and started again on the same
session. Everything the second bridge receives within 5 quiet seconds is a redelivery of a message
the first one acked: a duplicate in Kafka.

    .venv/bin/python benchmarks/mqtt_burst_redelivery.py --protocol 3.1.1 --autosave seconds:1 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from iot_platform.settings import Settings
from iot_platform.stack.kafka import KafkaServer, ensure_topics
from iot_platform.stack.mosquitto import MosquittoServer
from iot_platform.stack.ports import free_port


def parse_autosave(text: str) -> tuple[int, bool]:
    """``seconds:N`` (save every N s) or ``changes:N`` (save after N changes) -> (interval, on_changes)."""
    kind, _, number = text.partition(":")
    if kind not in ("seconds", "changes") or not number.isdigit():
        raise argparse.ArgumentTypeError("use seconds:N or changes:N")
    return int(number), kind == "changes"


def start_bridge(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "iot_platform.cli", "bridge"], env=settings.child_env(),
                                stdout=log, stderr=subprocess.STDOUT)


def log_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def wait_for_line(path: Path, message: str, timeout_s: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [line for line in log_lines(path) if line.get("msg") == message]
        if found:
            return found[-1]
        time.sleep(0.1)
    raise RuntimeError(f"no {message!r} in {path}:\n{path.read_text()[-2000:]}")


def kafka_total(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:6]}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        consumer.close()


def burst(host: str, port: int, prefix: str, messages: int, publishers: int) -> float:
    """``publishers`` mosquitto_pub -q 1 processes sending ``messages`` in all at once; returns seconds."""
    per = messages // publishers
    start = time.monotonic()
    processes = []
    for index in range(publishers):
        process = subprocess.Popen(
            ["mosquitto_pub", "-h", host, "-p", str(port), "-q", "1", "-l", "-i", f"burst-{uuid.uuid4().hex[:8]}",
             "-t", f"{prefix}tenant{index % 4}/project1/device{index}"],
            stdin=subprocess.PIPE,
        )
        processes.append((process, "".join(f'{{"msg_id":"{index}-{n}","seq":{n}}}\n' for n in range(per)).encode()))
    for process, body in processes:
        assert process.stdin is not None
        process.stdin.write(body)
        process.stdin.close()
    for process, _ in processes:
        if process.wait(300) != 0:
            raise RuntimeError("mosquitto_pub failed")
    return time.monotonic() - start


def redeliveries_after_clean_restart(settings: Settings, workdir: Path, messages: int, publishers: int) -> dict[str, object]:
    """One burst, one clean bridge restart; the figures (see the module docstring)."""
    ensure_topics(settings)
    first_log, second_log = workdir / f"bridge-{uuid.uuid4().hex[:6]}.log", workdir / f"bridge-{uuid.uuid4().hex[:6]}.log"
    first = start_bridge(settings, first_log)
    try:
        wait_for_line(first_log, "mqtt subscribed")
        prefix = settings.mqtt_topic_grammar.split("{tenant_id}")[0]
        published_s = burst(settings.mqtt_host, settings.mqtt_port, prefix, messages, publishers)
        deadline = time.monotonic() + 300
        while kafka_total(settings.kafka_bootstrap, settings.kafka_topic) < messages and time.monotonic() < deadline:
            time.sleep(0.5)
        first.send_signal(signal.SIGTERM)
        first.wait(60)
        stopped = wait_for_line(first_log, "bridge stopped")
    finally:
        if first.poll() is None:
            first.kill()
    second = start_bridge(settings, second_log)
    try:
        wait_for_line(second_log, "mqtt connected")
        received, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < 5.0:
            beats = [line for line in log_lines(second_log) if line.get("msg") == "heartbeat"]
            now_received = int(beats[-1]["received"]) if beats else 0  # type: ignore[arg-type]
            if now_received != received:
                received, quiet_since = now_received, time.monotonic()
            time.sleep(0.25)
        second.send_signal(signal.SIGTERM)
        second.wait(60)
        again = int(wait_for_line(second_log, "bridge stopped")["received"])  # type: ignore[arg-type]
    finally:
        if second.poll() is None:
            second.kill()
    return {"published": messages // publishers * publishers, "publish_s": round(published_s, 1),
            "first_acked": stopped["acked"], "redelivered": again}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--publishers", type=int, default=20)
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="3.1.1")
    parser.add_argument("--autosave", type=parse_autosave, default=None, help="seconds:N or changes:N (default: the platform's)")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="iot-bench-redelivery-") as tmp:
        work = Path(tmp)
        options = {} if args.autosave is None else {"autosave_interval": args.autosave[0], "autosave_on_changes": args.autosave[1]}
        mosquitto = MosquittoServer(work / "mosquitto", free_port(), **options).start()
        kafka = KafkaServer(work / "kafka", free_port(), free_port()).start()
        try:
            conf = (work / "mosquitto" / "mosquitto.conf").read_text().splitlines()
            autosave = [line for line in conf if line.startswith("autosave")]
            print(f"MQTT {args.protocol}, {args.messages} messages from {args.publishers} publishers, mosquitto {autosave}, "
                  f"load {os.getloadavg()[0]:.1f}")
            for run in range(args.runs):
                tag = uuid.uuid4().hex[:8]
                settings = Settings(
                    home=work / "home", mqtt_url=mosquitto.url, kafka_bootstrap=kafka.bootstrap, mqtt_protocol=args.protocol,
                    mqtt_client_id=f"bench-{tag}", kafka_topic=f"bench-{tag}", kafka_dlq_topic=f"bench-dlq-{tag}",
                    mqtt_topic_filter=f"b{tag}/#", mqtt_topic_grammar=f"b{tag}/{{tenant_id}}/{{project_id}}[/...]",
                    bridge_metrics_port=0, heartbeat_interval_s=0.5,
                )
                print(f"run {run + 1}: {json.dumps(redeliveries_after_clean_restart(settings, work, args.messages, args.publishers))}")
        finally:
            kafka.kill()
            mosquitto.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())

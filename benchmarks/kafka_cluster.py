"""What a three-broker Kafka costs on this machine, against one broker: start, memory, acks=all writes, failover.

Starts its own cluster (``stack/kafka_cluster.py``: 1 node, or 3 combined broker+controller nodes,
as `dev up` runs them) in a temporary directory, creates the platform's topics (replication factor =
brokers, min.insync.replicas 2 of 3), produces N records as the bridge builds them (``build_record`` of
simulator telemetry from 5 tenants x 3 projects x 20 devices: device key, JSON value, the envelope
headers; 20,000 distinct records cycled) with the bridge's producer settings (``producer_config``:
idempotent, ``acks=all``, lz4, its linger), and prints JSON: seconds until every node was a registered
broker, produce rate, the records' mean size and their size on disk per replica (lz4 batches), the CPU
seconds of the brokers over the produce (and per record), each node's resident memory afterwards, and
with three brokers the failover: the leader of partition 0 SIGKILLed, seconds until another replica
leads it, seconds until the restarted node is back in every ISR. Everything is stopped and removed at
the end.

Usage: .venv/bin/python benchmarks/kafka_cluster.py [--brokers 3] [--records 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from iot_platform.bridge.producer import producer_config
from iot_platform.core.records import InboundMessage, OutboundRecord, RecordRules, build_record, headers_size
from iot_platform.devices.fleet import Fleet, FleetSpec
from iot_platform.settings import Settings
from iot_platform.stack.kafka import ensure_topics
from iot_platform.stack.kafka_cluster import KafkaCluster, NodeAddress
from iot_platform.stack.ports import free_port

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def bridge_records(settings: Settings, count: int) -> list[OutboundRecord]:
    """``count`` records as the bridge builds them from a simulated fleet's telemetry."""
    rules = RecordRules.from_settings(settings)
    fleet = Fleet(FleetSpec(5, 3, 20, settings.mqtt_topic_grammar, run_id="kafka-cluster-benchmark"))
    now_ms = int(time.time() * 1000)
    records = [build_record(InboundMessage(m.topic, m.payload, 1, False, now_ms), rules) for m in fleet.messages(count, now_ms)]
    assert all(r.dead_letter_reason is None for r in records), "the fleet sent a message the bridge dead-letters"
    return records


def produce(settings: Settings, records: int) -> tuple[float, float]:
    """Produce ``records`` bridge records; returns (records per second, mean record bytes: key + value + headers)."""
    producer = Producer({**producer_config(settings), "queue.buffering.max.messages": 500_000})
    built = bridge_records(settings, 20_000)
    failed = 0

    def report(err, _msg) -> None:  # type: ignore[no-untyped-def]
        nonlocal failed
        failed += err is not None

    started = time.monotonic()
    for i in range(records):
        record = built[i % len(built)]
        while True:
            try:
                producer.produce(record.topic, record.value, key=record.key, headers=record.headers, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    elapsed = time.monotonic() - started
    if failed:
        raise RuntimeError(f"{failed} records were not delivered")
    size = sum(len(r.key or b"") + len(r.value) + headers_size(r.headers) for r in built) / len(built)
    return records / elapsed, size


def leader_of(admin: AdminClient, topic: str, partition: int) -> int:
    return admin.list_topics(topic, timeout=10).topics[topic].partitions[partition].leader


def failover(cluster: KafkaCluster, settings: Settings) -> dict[str, float | int]:
    admin = AdminClient(cluster.client_config())
    leader = leader_of(admin, settings.kafka_topic, 0)
    killed_at = time.monotonic()
    cluster.node(leader).kill()
    while leader_of(admin, settings.kafka_topic, 0) in (-1, leader):
        time.sleep(0.1)
    elected_s = elapsed(killed_at)
    restart = time.monotonic()
    cluster.node(leader).start()
    registered_s = elapsed(restart)
    while True:
        partitions = admin.list_topics(timeout=10).topics[settings.kafka_topic].partitions.values()
        if all(len(p.isrs) == cluster.size for p in partitions):
            break
        time.sleep(0.1)
    return {"killed_node": leader, "new_leader_after_s": round(elected_s, 1),
            "restarted_node_registered_after_s": round(registered_s, 1),
            "back_in_every_isr_after_restart_s": round(elapsed(restart), 1)}


def elapsed(since: float) -> float:
    return time.monotonic() - since


def run(args: argparse.Namespace) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="iot-kafka-cluster-"))
    nodes = [NodeAddress("127.0.0.1", free_port(), free_port()) for _ in range(args.brokers)]
    cluster = KafkaCluster(workdir / "kafka", nodes)
    try:
        started = time.monotonic()
        cluster.start()
        result: dict[str, object] = {"brokers": args.brokers, "start_s": round(elapsed(started), 1),
                                     "load_average_at_start": os.getloadavg()[0]}
        settings = Settings(kafka_bootstrap=cluster.bootstrap, kafka_brokers=args.brokers, home=workdir / "home")
        ensure_topics(settings)
        before = [cpu_ticks(pid) for pid in cluster.pids if pid]
        rate, size = produce(settings, args.records)
        result |= {"produce_msg_s": round(rate), "record_bytes": round(size)}
        cpu_s = sum(cpu_ticks(pid) for pid in cluster.pids if pid) / TICKS - sum(before) / TICKS
        result |= {"broker_cpu_s": round(cpu_s, 1), "broker_cpu_us_per_record": round(cpu_s / args.records * 1e6, 1),
                   "load_average_after_produce": os.getloadavg()[0]}
        result["rss_mib"] = [rss_mib(pid) for pid in cluster.pids if pid]
        stored = sum(f.stat().st_size for d in (workdir / "kafka").rglob(f"{settings.kafka_topic}-*") if d.is_dir() for f in d.glob("*.log"))
        result["disk_bytes_per_record_per_replica"] = round(stored / args.records / args.brokers, 1)
        if args.brokers > 1:
            result["failover"] = failover(cluster, settings)
        started = time.monotonic()
        cluster.stop()
        result["stop_s"] = round(elapsed(started), 1)
        return result
    finally:
        cluster.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", type=int, choices=(1, 3), default=3)
    parser.add_argument("--records", type=int, default=200_000)
    print(json.dumps(run(parser.parse_args())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

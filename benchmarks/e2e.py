"""End-to-end benchmark: simulated devices -> Mosquitto -> bridge -> Kafka -> consumer -> PostgreSQL.

Starts a private Mosquitto, Kafka and PostgreSQL in a temporary directory (stack classes), the
bridge and the consumer as `iot-platform` subprocesses, and `iot-platform simulate` publisher
processes; everything is stopped at the end. Prints sustained msg/s, latency percentiles, the CPU
used by each component, and what `iot-platform verify` found lost or duplicated.

  --mode fixed --rate R --duration S   publish R msg/s for S s while the pipeline runs; latency is
                                       device ts (set at publish) -> ingested_at (the consumer's
                                       transaction start, so it slightly under-states visibility).
  --mode max --count N                 backlog drain: with the bridge and consumer stopped, N messages
                                       are queued in Mosquitto for the bridge's persistent session;
                                       then both start and the drain time gives msg/s end to end.

  --transport plain tls                each transport in turn on a fresh stack (default: both): MQTT on the
                                       broker's plain loopback listener, then over TLS; both authenticated.
                                       Publishers are `iot-platform simulate` processes publishing through
                                       registered gateway devices (one per tenant and project).

Usage: .venv/bin/python benchmarks/e2e.py --mode fixed --rate 2000 --duration 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from iot_platform.devices.verify import kafka_offsets, verify, wait_until_drained
from iot_platform.devices.verify_report import Expectation
from iot_platform.settings import Settings
from iot_platform.stack.sandbox import PrivateStack, ServiceProcess, wait_pipeline_ready
from iot_platform.storage.db import connect

TICKS = os.sysconf("SC_CLK_TCK")


def process_tree_ticks(root_pid: int) -> int:
    """utime+stime (clock ticks) of ``root_pid`` and all its live descendants, from /proc."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        ticks[pid] = int(fields[11]) + int(fields[12])
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo += children.get(pid, [])
    return total


class CpuMeter:
    """CPU seconds per named process tree between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.wall_s = 0.0
        self._started = 0.0

    def start(self) -> None:
        self.before = {name: process_tree_ticks(pid) for name, pid in self.pids.items()}
        self._started = time.monotonic()

    def stop(self) -> None:
        self.wall_s = time.monotonic() - self._started
        self.seconds = {name: (process_tree_ticks(pid) - self.before[name]) / TICKS for name, pid in self.pids.items()}

    def as_percent(self) -> dict[str, float]:
        return {name: round(100 * s / self.wall_s, 1) for name, s in self.seconds.items()} if self.wall_s else {}


def start_publishers(settings: Settings, workdir: Path, *, processes: int, rate: float | None, duration_s: float | None,
                     count: int | None, devices: int) -> list[tuple[subprocess.Popen[bytes], Path, str]]:
    publishers = []
    for i in range(processes):
        summary = workdir / f"publisher-{i}.json"
        run_id = f"bench{i}{os.urandom(3).hex()}"
        argv = [sys.executable, "-m", "iot_platform.cli", "simulate", "--tenants", "5", "--projects", "4",
                "--devices", str(devices), "--run-id", run_id, "--summary", str(summary), "--quiet",
                "--rate", str((rate or 0) / processes), "--max-in-flight", "5000",
                # gateways of their own: a second publisher re-registering the same one would rotate its password
                "--tenant-prefix", f"p{i}t"]
        if duration_s is not None:
            argv += ["--duration", str(duration_s)]
        if count is not None:
            argv += ["--count", str(count // processes)]
        log = open(workdir / f"publisher-{i}.log", "ab")  # noqa: SIM115 - closed with the process
        publishers.append((subprocess.Popen(argv, env=settings.child_env(), stdout=log, stderr=log), summary, run_id))
    return publishers


def start_profilers(out_dir: Path | None, services: list[ServiceProcess], duration_s: float) -> list[subprocess.Popen[bytes]]:
    """py-spy (the optional 'profile' extra) sampling each service; collapsed stacks in out_dir/NAME.txt."""
    if out_dir is None:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).with_name("py-spy")
    return [
        subprocess.Popen([str(py_spy), "record", "--pid", str(s.pid), "--duration", str(int(duration_s)), "--rate", "50",
                          "--nonblocking", "--format", "raw", "--output", str(out_dir / f"{s.name}.txt")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for s in services
    ]


def wait_publishers(publishers: list[tuple[subprocess.Popen[bytes], Path, str]]) -> tuple[list[dict], float]:  # type: ignore[type-arg]
    """The publishers' summaries and the CPU seconds they used (from wait4's rusage: they have exited)."""
    summaries, cpu_s = [], 0.0
    for process, summary, _ in publishers:
        _, _, usage = os.wait4(process.pid, 0)
        process.returncode = 0
        cpu_s += usage.ru_utime + usage.ru_stime
        summaries.append(json.loads(summary.read_text()))
    return summaries, cpu_s


def latency_percentiles(settings: Settings, run_ids: list[str]) -> dict[str, float]:
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(
                """
                SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY lat),
                       max(lat), min(ingested_at), max(ingested_at), count(*),
                       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY to_bridge),
                       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY to_row)
                FROM (SELECT extract(epoch FROM ingested_at - device_ts) AS lat, ingested_at,
                             extract(epoch FROM received_at - device_ts) AS to_bridge,
                             extract(epoch FROM ingested_at - received_at) AS to_row
                      FROM (SELECT ingested_at, received_at, (payload_json->>'ts')::timestamptz AS device_ts
                            FROM iot.messages WHERE payload_json->>'run_id' = ANY(%s)) AS m) AS l
                """,
                (run_ids,),
            )
            (p50, p95, p99), worst, first, last, rows, to_bridge, to_row = cur.fetchone()
            return {"p50_s": round(float(p50), 3), "p95_s": round(float(p95), 3), "p99_s": round(float(p99), 3),
                    "max_s": round(float(worst), 3), "rows": rows, "ingest_span_s": round((last - first).total_seconds(), 3),
                    "publish_to_bridge_p50_p99_s": [round(float(v), 3) for v in to_bridge],
                    "bridge_to_row_p50_p99_s": [round(float(v), 3) for v in to_row]}
    finally:
        conn.close()


def stored_count(settings: Settings, run_ids: list[str]) -> int:
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM iot.messages WHERE payload_json->>'run_id' = ANY(%s)", (run_ids,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def check_loss(settings: Settings, summaries: list[dict]) -> dict[str, int]:  # type: ignore[type-arg]
    lost = duplicates = stored = 0
    for summary in summaries:
        report = verify(settings, run_id=summary["run_id"], expectation=Expectation.from_summary(summary))
        lost += report["totals"]["lost"]  # type: ignore[index]
        duplicates += report["totals"]["duplicates"]  # type: ignore[index]
        stored += report["totals"]["stored"]  # type: ignore[index]
    return {"stored": stored, "lost": lost, "duplicates": duplicates}


def run(args: argparse.Namespace, transport: str) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="iot-e2e-"))
    stack = PrivateStack(workdir / "stack").start()
    bridge = consumer = None
    try:
        settings = stack.settings(workdir / "home")
        mqtt_url = stack.mosquitto.url if transport == "tls" else stack.mosquitto.plain_url
        settings = settings.model_copy(update={"consumer_batch_max_wait_ms": args.batch_wait_ms, "mqtt_url": mqtt_url})
        bridge, consumer = ServiceProcess("bridge", settings, workdir), ServiceProcess("consumer", settings, workdir)
        bridge.start()
        consumer.start()
        wait_pipeline_ready(settings, 90, (bridge, consumer))
        processes = args.publishers or (1 if (args.rate or 0) <= 5_000 and args.mode == "fixed" else 2)
        result: dict[str, object] = {"mode": args.mode, "transport": transport, "publishers": processes}
        if args.mode == "fixed":
            meter = CpuMeter(_pids(stack, bridge, consumer))
            meter.start()
            publishers = start_publishers(settings, workdir, processes=processes, rate=args.rate,
                                          duration_s=args.duration, count=None, devices=args.devices)
            profilers = start_profilers(args.profile, [bridge, consumer], args.duration)
            summaries, publishers_cpu_s = wait_publishers(publishers)
            wait_until_drained(settings, timeout_s=120, interval_s=0.2)
            meter.stop()
            meter.seconds["publishers"] = publishers_cpu_s
            acked = sum(sum(s["acked"].values()) for s in summaries)
            latency = latency_percentiles(settings, [s["run_id"] for s in summaries])
            result |= {"target_rate": args.rate, "duration_s": args.duration, "acked": acked,
                       "published_msg_s": round(sum(s["rate_msg_s"] for s in summaries), 1),
                       "stored_msg_s": round(latency["rows"] / max(latency["ingest_span_s"], 1e-9), 1),
                       "latency": latency}
        else:
            bridge.stop()
            consumer.stop()
            publishers = start_publishers(settings, workdir, processes=processes, rate=None, duration_s=None,
                                          count=args.count, devices=args.devices)
            summaries, _ = wait_publishers(publishers)
            run_ids = [s["run_id"] for s in summaries]
            acked = sum(sum(s["acked"].values()) for s in summaries)
            bridge.start()
            consumer.start()
            meter = CpuMeter(_pids(stack, bridge, consumer))
            meter.start()
            profilers = start_profilers(args.profile, [bridge, consumer], 15)
            started = time.monotonic()
            bridge_done = None
            while stored_count(settings, run_ids) < acked and time.monotonic() - started < 600:
                if bridge_done is None and _kafka_records(settings) >= acked:
                    bridge_done = time.monotonic() - started
                time.sleep(0.2)
            drain_s = time.monotonic() - started
            meter.stop()
            result |= {"backlog": acked, "drain_s": round(drain_s, 2), "stored_msg_s": round(acked / drain_s, 1),
                       "bridge_drain_s": round(bridge_done, 2) if bridge_done else None,
                       "bridge_msg_s": round(acked / bridge_done, 1) if bridge_done else None}
        for profiler in profilers:
            profiler.wait(60)
        result["cpu_percent"] = meter.as_percent()
        result["cpu_seconds"] = {k: round(v, 2) for k, v in meter.seconds.items()}
        result |= check_loss(settings, summaries)
        return result
    finally:
        for service in (bridge, consumer):
            if service is not None:
                service.stop(timeout_s=15)
        stack.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)


def _kafka_records(settings: Settings) -> int:
    return sum(p.high for p in kafka_offsets(settings) if p.topic == settings.kafka_topic)


def _pids(stack: PrivateStack, bridge: ServiceProcess, consumer: ServiceProcess) -> dict[str, int]:
    pids = {"mosquitto": stack.mosquitto.pid, "kafka": stack.kafka.pids[0], "postgres": stack.postgres.pid,
            "bridge": bridge.pid, "consumer": consumer.pid}
    return {name: pid for name, pid in pids.items() if pid}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["fixed", "max"], default="fixed")
    parser.add_argument("--rate", type=float, default=2_000, help="fixed mode: msg/s of the whole fleet")
    parser.add_argument("--duration", type=float, default=30, help="fixed mode: seconds of publishing")
    parser.add_argument("--count", type=int, default=200_000, help="max mode: backlog size")
    parser.add_argument("--devices", type=int, default=50, help="devices per project (5 tenants x 4 projects)")
    parser.add_argument("--publishers", type=int, default=0, help="publisher processes (default: 1, or 2 above 5,000 msg/s)")
    parser.add_argument("--batch-wait-ms", type=int, default=Settings().consumer_batch_max_wait_ms, help="the consumer's IOT_CONSUMER_BATCH_MAX_WAIT_MS")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="sample the bridge and consumer with py-spy (pip install -e '.[profile]') into DIR")
    parser.add_argument("--transport", nargs="+", choices=["plain", "tls"], default=["plain", "tls"],
                        help="MQTT listeners to measure, each on a fresh stack, in this order (default: both)")
    args = parser.parse_args()
    results = []
    for transport in args.transport:
        results.append(run(args, transport))
        print(json.dumps(results[-1], indent=1), flush=True)
    return 0 if all(r["lost"] == 0 and r["duplicates"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

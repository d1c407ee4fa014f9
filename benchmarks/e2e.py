"""End-to-end benchmark: simulated devices -> Mosquitto -> bridge -> Kafka -> consumer -> PostgreSQL.

Starts a private Mosquitto, Kafka and PostgreSQL in a temporary directory (stack classes), the
bridge and the consumer as `iot-platform` subprocesses, and `iot-platform simulate` publisher
processes; everything is stopped at the end. Before measuring, a warm-up load runs through the whole
pipeline (Kafka's JIT, PostgreSQL's caches). Prints rates, latency, the CPU budget of each process
(CPU seconds per 1,000 messages and microseconds per message in total), the database transactions
that stored the measured rows (`postgres_transactions`: one per consumer batch, after the meter
stopped), and what `iot-platform verify` found lost or duplicated.

The default load is a realistic fleet: each publisher process publishes for 5 tenants x 4 projects x
3 devices (60 device topics each), JSON payloads of ~220 bytes that carry a message id, QoS 1.

  --mode max --count N                 backlog drain (default): with the bridge and consumer stopped, N
                                       messages are queued in Mosquitto for the bridge's persistent
                                       session; then both start. Reports the total time from starting
                                       them to the last row, the first row's delay, and the steady rate
                                       between 10% and 90% of the rows.
  --mode fixed --rate R --duration S   publish R msg/s for S s while the pipeline runs; latency is
                                       device ts (set at publish) -> ingested_at (the consumer's
                                       transaction start, so it slightly under-states visibility).
  --transport tls plain                MQTT over TLS (the platform's default, default here) and/or the
                                       broker's plain loopback listener, each on a fresh stack.

  --breakdown                          also each process's CPU by thread kind (JIT, GC, request threads
                                       of the JVM; PostgreSQL's backends and background processes)
  --set SETTING=VALUE, --kafka-jit     the same run with other platform settings / broker JIT (before
                                       and after figures from one command)

Progress is read through one PostgreSQL connection (the consumer's stored offsets, six rows) and one
Kafka client, both opened once: a connection per reading would fork a PostgreSQL backend each time,
which the CPU meter counts as PostgreSQL's, and a row count over the JSON payloads would cost more
than the inserts it watches.

Usage: .venv/bin/python benchmarks/e2e.py   (or --mode fixed --rate 2000 --duration 30)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from pydantic import ValidationError

from iot_platform.devices.verify import verify
from iot_platform.devices.verify_report import Expectation
from iot_platform.settings import Settings
from iot_platform.stack.sandbox import PrivateStack, ServiceProcess, wait_pipeline_ready
from iot_platform.storage.db import connect

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(path: str) -> list[str] | None:
    """The fields of a /proc stat file after the command name (None if the process or thread is gone)."""
    try:
        with open(path) as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _ticks_of(fields: list[str]) -> int:
    return int(fields[11]) + int(fields[12])  # utime + stime


def _process_tree(root_pid: int) -> tuple[list[int], dict[int, int]]:
    """``root_pid`` and its live descendants, and each one's utime+stime (clock ticks), from /proc."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(f"/proc/{entry}/stat")) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
            ticks[int(entry)] = _ticks_of(fields)
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree, ticks


def process_tree_ticks(root_pid: int) -> int:
    """utime+stime (clock ticks) of ``root_pid`` and all its live descendants."""
    tree, ticks = _process_tree(root_pid)
    return sum(ticks.get(pid, 0) for pid in tree)


def _title(pid: int) -> str:
    """A process's role: PostgreSQL titles each process after it (a client's backend carries its
    address, folded to "backend"); others are named by their executable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            title = cmdline.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "?"
    if title.startswith("postgres: "):
        return "backend" if "(" in title else " ".join(title.split()[1:3])
    return Path(title.split()[0]).name if title else "?"


def thread_ticks(root_pid: int) -> dict[str, int]:
    """utime+stime (clock ticks) of every live thread under ``root_pid``, summed per kind: the process's
    title and the thread's name (the JVM names its threads: request handlers, GC, JIT), digits folded."""
    found: dict[str, int] = {}
    for pid in _process_tree(root_pid)[0]:
        title = _title(pid)
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            if (fields := _stat_fields(f"/proc/{pid}/task/{tid}/stat")) is None:
                continue
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as comm:
                    thread = comm.read().strip()
            except OSError:
                continue
            label = re.sub(r"\d+", "#", f"{title} / {thread}")
            found[label] = found.get(label, 0) + _ticks_of(fields)
    return found


class CpuMeter:
    """CPU seconds per named group of process trees between start() and stop()."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.before: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.wall_s = 0.0
        self._started = 0.0

    def start(self, fresh: tuple[str, ...] = ()) -> None:
        """From now on; processes named in ``fresh`` were just started and count from their first tick."""
        self.before = {name: 0 if name in fresh else self._ticks(pids) for name, pids in self.pids.items()}
        self._threads_before = {name: self._threads(name) for name in self.pids}
        self._started = time.monotonic()

    def stop(self) -> None:
        self.wall_s = time.monotonic() - self._started
        self.seconds = {name: (self._ticks(pids) - self.before[name]) / TICKS for name, pids in self.pids.items()}
        self._threads_after = {name: self._threads(name) for name in self.pids}

    def _threads(self, name: str) -> dict[str, int]:
        merged: dict[str, int] = {}
        for pid in self.pids[name]:
            for label, ticks in thread_ticks(pid).items():
                merged[label] = merged.get(label, 0) + ticks
        return merged

    def breakdown(self, name: str, top: int = 8) -> dict[str, float]:
        """CPU seconds of ``name``'s busiest thread kinds; "exited" is what threads and processes that
        ended inside the window used (counted in the total, gone from /proc)."""
        before, after = self._threads_before[name], self._threads_after[name]
        used = {label: (ticks - before.get(label, 0)) / TICKS for label, ticks in after.items()}
        used = {label: s for label, s in used.items() if s > 0}
        busiest = dict(sorted(used.items(), key=lambda item: -item[1])[:top])
        busiest["exited"] = max(0.0, self.seconds[name] - sum(used.values()))
        return {label: round(s, 2) for label, s in busiest.items()}

    @staticmethod
    def _ticks(pids: list[int]) -> int:
        return sum(process_tree_ticks(pid) for pid in pids)

    def as_percent(self) -> dict[str, float]:
        return {name: round(100 * s / self.wall_s, 1) for name, s in self.seconds.items()} if self.wall_s else {}


class Progress:
    """Cheap readings of the pipeline's progress: records in Kafka's topic and records the consumer has
    stored (its offsets in PostgreSQL), through connections opened once."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.kafka_topic
        self.conn = connect(settings)
        self.conn.autocommit = True
        self.kafka = Consumer({**settings.kafka_config(), "group.id": f"iot-bench-{os.urandom(4).hex()}",
                               "enable.auto.commit": False, "socket.timeout.ms": 10_000})
        partitions = self.kafka.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]

    def produced(self) -> int:
        return sum(self.kafka.get_watermark_offsets(tp, timeout=10, cached=False)[1] for tp in self.partitions)

    def stored(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute("SELECT coalesce(sum(next_offset), 0) FROM iot.ingest_offsets WHERE topic = %s", (self.topic,))
            return int(cur.fetchone()[0])

    def rows(self, run_ids: list[str]) -> int:
        """Rows of these simulator runs (a scan of the payloads: for the end of a run, not for polling)."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM iot.messages WHERE payload_json->>'run_id' = ANY(%s)", (run_ids,))
            return int(cur.fetchone()[0])

    def transactions(self, run_ids: list[str]) -> int:
        """Database transactions that stored rows of these runs: each consumer batch is one, and its
        rows share its transaction id (a scan of the payloads, like ``rows``)."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT count(DISTINCT xmin::text) FROM iot.messages WHERE payload_json->>'run_id' = ANY(%s)", (run_ids,))
            return int(cur.fetchone()[0])

    def wait_stored(self, target: int, timeout_s: float) -> None:
        """Until the consumer's offsets sum to ``target``: every record in Kafka stored (or skipped)."""
        _wait(lambda: self.stored() >= target, timeout_s, f"{target} records stored")

    def wait_rows(self, run_ids: list[str], target: int, timeout_s: float) -> None:
        """Until ``target`` rows of these runs are stored: the bridge may still hold some in Mosquitto."""
        _wait(lambda: self.rows(run_ids) >= target, timeout_s, f"{target} rows of {run_ids}")

    def close(self) -> None:
        self.kafka.close()
        self.conn.close()


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached within {timeout_s} s: {what}")
        time.sleep(0.2)


def drain_figures(samples: list[tuple[float, int]], backlog: int) -> dict[str, float | None]:
    """First-row delay, total time and the steady rate between 10% and 90% of ``backlog`` from
    (seconds since start, records stored) samples."""
    def reached(fraction: float) -> float | None:
        return next((t for t, n in samples if n >= fraction * backlog), None)

    first, t10, t90, done = next((t for t, n in samples if n > 0), None), reached(0.1), reached(0.9), reached(1.0)
    steady = round(0.8 * backlog / (t90 - t10), 1) if t10 is not None and t90 is not None and t90 > t10 else None
    return {"first_row_s": first, "total_s": done, "steady_10_90_msg_s": steady,
            "total_msg_s": round(backlog / done, 1) if done else None}


def budget(cpu_seconds: dict[str, float], messages: int) -> dict[str, object]:
    """CPU seconds per 1,000 messages per process, and microseconds of CPU per message in total."""
    services = {name: s for name, s in cpu_seconds.items() if name != "publishers"}
    return {"cpu_s_per_1000_msgs": {name: round(1000 * s / messages, 3) for name, s in services.items()},
            "total_us_per_msg": round(1e6 * sum(services.values()) / messages, 1)}


def start_publishers(settings: Settings, workdir: Path, *, processes: int, rate: float | None, duration_s: float | None,
                     count: int | None, devices: int, prefix: str = "p") -> list[tuple[subprocess.Popen[bytes], Path, str]]:
    publishers = []
    for i in range(processes):
        summary = workdir / f"publisher-{i}.json"
        run_id = f"bench{i}{os.urandom(3).hex()}"
        argv = [sys.executable, "-m", "iot_platform.cli", "simulate", "--tenants", "5", "--projects", "4",
                "--devices", str(devices), "--run-id", run_id, "--summary", str(summary), "--quiet",
                "--rate", str((rate or 0) / processes), "--max-in-flight", "5000",
                # gateways of their own: a second publisher re-registering the same one would rotate its password
                "--tenant-prefix", f"{prefix}{i}t"]
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
    stack = PrivateStack(workdir / "stack", kafka_jit=args.kafka_jit).start()  # main(): --kafka-jit and --set agree
    services: list[ServiceProcess] = []
    progress = None
    try:
        settings = stack.settings(workdir / "home")
        mqtt_url = stack.mosquitto.url if transport == "tls" else stack.mosquitto.plain_url
        settings = Settings.model_validate({**settings.model_dump(), "consumer_batch_max_wait_ms": args.batch_wait_ms,
                                            "mqtt_url": mqtt_url, **args.overrides})
        services = replicas(settings, workdir, bridges=args.bridges, consumers=args.consumers)
        for service in services:
            service.start()
        wait_pipeline_ready(settings, 90, tuple(services))
        progress = Progress(settings)
        if args.warmup:
            warmup = start_publishers(settings, workdir, processes=1, rate=None, duration_s=None, count=args.warmup,
                                      devices=args.devices, prefix="w")
            warmed, _ = wait_publishers(warmup)
            progress.wait_rows([s["run_id"] for s in warmed], sum(sum(s["acked"].values()) for s in warmed), 180)
        processes = args.publishers or (1 if args.mode == "fixed" and args.rate <= 5_000 else 2)
        result: dict[str, object] = {"mode": args.mode, "transport": transport, "publishers": processes,
                                     "bridges": args.bridges, "consumers": args.consumers,
                                     "device_topics": processes * 20 * args.devices, "warmup": args.warmup}
        if args.mode == "fixed":
            meter = CpuMeter(_pids(stack, services))
            meter.start()
            publishers = start_publishers(settings, workdir, processes=processes, rate=args.rate,
                                          duration_s=args.duration, count=None, devices=args.devices)
            profilers = start_profilers(args.profile, services, args.duration)
            summaries, publishers_cpu_s = wait_publishers(publishers)
            progress.wait_stored(progress.produced(), 120)
            meter.stop()
            meter.seconds["publishers"] = publishers_cpu_s
            acked = sum(sum(s["acked"].values()) for s in summaries)
            latency = latency_percentiles(settings, [s["run_id"] for s in summaries])
            result |= {"target_rate": args.rate, "duration_s": args.duration, "acked": acked,
                       "published_msg_s": round(sum(s["rate_msg_s"] for s in summaries), 1),
                       "stored_msg_s": round(latency["rows"] / max(latency["ingest_span_s"], 1e-9), 1),
                       "latency": latency}
        else:
            for service in services:
                service.stop()
            publishers = start_publishers(settings, workdir, processes=processes, rate=None, duration_s=None,
                                          count=args.count, devices=args.devices)
            summaries, _ = wait_publishers(publishers)
            acked = sum(sum(s["acked"].values()) for s in summaries)
            run_ids = [s["run_id"] for s in summaries]
            produced_before, stored_before = progress.produced(), progress.stored()
            started = time.monotonic()
            for service in services:
                service.start()
            # Fresh processes: everything they use from here on, start-up included, is the drain's.
            meter = CpuMeter(_pids(stack, services))
            meter.start(fresh=("bridge", "consumer"))
            profilers = start_profilers(args.profile, services, 15)
            samples: list[tuple[float, int]] = []
            bridge_done = None
            while time.monotonic() - started < 600:
                now, stored = time.monotonic() - started, progress.stored() - stored_before
                if bridge_done is None and progress.produced() - produced_before >= acked:
                    bridge_done = now
                if stored >= acked:
                    break
                samples.append((now, stored))
                time.sleep(0.1)
            meter.stop()  # before the row count below: a scan of the payloads is the benchmark's work, not the platform's
            # Offsets also count copies the bridge produced twice (the consumer skips them as duplicates),
            # so the last rows are awaited by run id, in the few readings that remain.
            while (rows := progress.rows(run_ids)) < acked and time.monotonic() - started < 600:
                samples.append((time.monotonic() - started, min(stored, acked - 1)))
                time.sleep(0.2)
            samples.append((time.monotonic() - started, rows))
            result |= {"backlog": acked, **drain_figures(samples, acked),
                       "kafka_copies": progress.produced() - produced_before - acked,  # produced twice by the bridge
                       "bridge_into_kafka_s": round(bridge_done, 2) if bridge_done else None,
                       "bridge_msg_s": round(acked / bridge_done, 1) if bridge_done else None}
        for profiler in profilers:
            profiler.wait(60)
        result["cpu_percent"] = meter.as_percent()
        result["cpu_seconds"] = {k: round(v, 2) for k, v in meter.seconds.items()}
        if args.breakdown:
            result["cpu_breakdown_s"] = {name: meter.breakdown(name) for name in meter.pids}
        result["postgres_transactions"] = progress.transactions([s["run_id"] for s in summaries])
        result |= budget(meter.seconds, acked)
        result |= check_loss(settings, summaries)
        return result
    finally:
        if progress is not None:
            progress.close()
        for service in services:
            service.stop(timeout_s=15)
        stack.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)


def replicas(settings: Settings, workdir: Path, *, bridges: int, consumers: int) -> list[ServiceProcess]:
    """Bridge and consumer replicas as the platform runs them (``--replica i``'s settings), each with its
    own log directory and no metrics port (several on one machine would collide)."""
    def replica(name: str, count: int, index: int) -> ServiceProcess:
        env = {f"IOT_{name.upper()}_REPLICAS": str(count), "IOT_REPLICA_INDEX": str(index),
               "IOT_BRIDGE_METRICS_PORT": "0", "IOT_CONSUMER_METRICS_PORT": "0"}
        return ServiceProcess(name, settings, workdir / f"{name}-{index}", extra_env=env)

    return ([replica("bridge", bridges, i) for i in range(bridges)]
            + [replica("consumer", consumers, i) for i in range(consumers)])


def _pids(stack: PrivateStack, services: list[ServiceProcess]) -> dict[str, list[int]]:
    pids = {"mosquitto": [stack.mosquitto.pid], "kafka": list(stack.kafka.pids), "postgres": [stack.postgres.pid]}
    for service in services:
        pids.setdefault(service.name, []).append(service.pid)
    return {name: [pid for pid in found if pid] for name, found in pids.items()}


def _setting(item: str) -> tuple[str, str]:
    """``--set SETTING=VALUE``: the name must be a platform setting (Settings ignores unknown names)."""
    name, equals, value = item.partition("=")
    if not equals or name not in Settings.model_fields:
        raise argparse.ArgumentTypeError(f"{item!r}: expected SETTING=VALUE, SETTING a field of Settings (e.g. kafka_linger_ms=20)")
    return name, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["fixed", "max"], default="max")
    parser.add_argument("--rate", type=float, default=2_000, help="fixed mode: msg/s of the whole fleet")
    parser.add_argument("--duration", type=float, default=30, help="fixed mode: seconds of publishing")
    parser.add_argument("--count", type=int, default=100_000, help="max mode: backlog size")
    parser.add_argument("--warmup", type=int, default=20_000, help="messages through the running pipeline before measuring")
    parser.add_argument("--devices", type=int, default=3, help="devices per project, per publisher (5 tenants x 4 projects)")
    parser.add_argument("--publishers", type=int, default=0, help="publisher processes (default: 1, or 2 above 5,000 msg/s)")
    parser.add_argument("--batch-wait-ms", type=int, default=Settings().consumer_batch_max_wait_ms, help="the consumer's IOT_CONSUMER_BATCH_MAX_WAIT_MS")
    parser.add_argument("--bridges", type=int, default=1, help="bridge replicas (IOT_BRIDGE_REPLICAS), on a shared subscription above 1")
    parser.add_argument("--consumers", type=int, default=1, help="consumer replicas (IOT_CONSUMER_REPLICAS) in one group")
    parser.add_argument("--breakdown", action="store_true",
                        help="also print each process's CPU by thread kind (JVM threads, PostgreSQL backends)")
    parser.add_argument("--set", action="append", default=[], type=_setting, metavar="SETTING=VALUE", dest="overrides",
                        help="a platform setting for this run (e.g. kafka_linger_ms=20), repeatable")
    parser.add_argument("--kafka-jit", choices=["c1", "tiered"], default=None,
                        help="the broker's JIT (same as --set kafka_local_jit=...; default: the platform's)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="sample the bridge and consumer with py-spy (pip install -e '.[profile]') into DIR")
    parser.add_argument("--transport", nargs="+", choices=["plain", "tls"], default=["tls"],
                        help="MQTT listeners to measure, each on a fresh stack, in this order (default: tls)")
    args = parser.parse_args()
    args.overrides = dict(args.overrides)
    if args.kafka_jit is not None:
        if args.overrides.setdefault("kafka_local_jit", args.kafka_jit) != args.kafka_jit:
            parser.error("--kafka-jit and --set kafka_local_jit=... disagree")
    try:  # a bad value fails here, before any server starts
        args.kafka_jit = Settings.model_validate(args.overrides).kafka_local_jit
    except ValidationError as exc:
        parser.error(f"--set: {exc}")
    results = []
    for transport in args.transport:
        results.append(run(args, transport))
        print(json.dumps(results[-1], indent=1), flush=True)
    return 0 if all(r["lost"] == 0 and r["duplicates"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

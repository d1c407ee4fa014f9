"""Machinery of the fault tests and the end-to-end benchmark: private servers, service processes,
a background publisher, and the wait-then-verify step that every invariant is checked with.

Private servers are secured like the platform's (Mosquitto: credentials on every listener, TLS with
a private CA; each ``settings()`` provisions its own bridge and test publisher). They live in a temporary directory and can sit behind :class:`TcpProxy` instances (Kafka
then advertises the proxy's port, so every client's traffic crosses it). The bridge and the consumer
run as real ``iot-platform`` subprocesses in sessions of their own, so a SIGKILL hits exactly them.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from iot_platform.devices.fleet import FleetSpec
from iot_platform.devices.simulate import SimulationResult, new_run_id, simulate
from iot_platform.devices.verify import verify, wait_until_drained
from iot_platform.devices.verify_report import Expectation
from iot_platform.settings import Settings
from iot_platform.stack.databases import ensure_platform_role_and_databases
from iot_platform.stack.kafka import KafkaServer, ensure_topics
from iot_platform.stack.mosquitto import MosquittoServer
from iot_platform.stack.ports import free_port
from iot_platform.stack.postgres import PostgresServer
from iot_platform.storage.migrate import apply_migrations
from iot_platform_tests.faults.proxy import TcpProxy
from iot_platform.stack.certs import server_certificate
from iot_platform.stack.mosquitto import new_admin
from iot_platform_tests.helpers import provision_mqtt_access, publisher_for, service_env, wait_for


@dataclass
class PrivateStack:
    """Mosquitto, Kafka and PostgreSQL of our own; optionally Kafka and/or PostgreSQL behind a proxy."""

    root: Path
    kafka_proxy: bool = False
    pg_proxy: bool = False
    mosquitto: MosquittoServer = field(init=False)
    kafka: KafkaServer = field(init=False)
    postgres: PostgresServer = field(init=False)
    kafka_tcp: TcpProxy | None = field(init=False, default=None)
    pg_tcp: TcpProxy | None = field(init=False, default=None)

    def start(self) -> "PrivateStack":
        self.mosquitto = MosquittoServer(
            self.root / "mosquitto", free_port(), admin=new_admin(), tls_port=free_port(),
            tls=server_certificate(self.root / "tls", "mosquitto"),
        )
        proxy_port = free_port() if self.kafka_proxy else None
        self.kafka = KafkaServer(self.root / "kafka", free_port(), free_port(), advertised_port=proxy_port)
        self.postgres = PostgresServer(self.root / "postgres", free_port())
        try:
            self.mosquitto.start()
            if proxy_port is not None:
                self.kafka_tcp = TcpProxy(proxy_port, "127.0.0.1", self.kafka.port).start()
            self.kafka.start()
            self.postgres.start()
            if self.pg_proxy:
                self.pg_tcp = TcpProxy(free_port(), "127.0.0.1", self.postgres.port).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for action in (
            lambda: self.kafka.resume(),
            lambda: self.kafka.kill(),
            lambda: self.mosquitto.kill(),
            lambda: self.postgres.destroy(),
            lambda: self.kafka_tcp and self.kafka_tcp.stop(),
            lambda: self.pg_tcp and self.pg_tcp.stop(),
        ):
            with contextlib.suppress(Exception):
                action()

    def settings(self, home: Path) -> Settings:
        """Settings isolated like the ``settings`` fixture: own topics, group, topic namespace, database."""
        tag = uuid.uuid4().hex[:10]
        kafka_port = self.kafka_tcp.port if self.kafka_tcp else self.kafka.port
        settings = Settings(
            home=home,
            mqtt_url=self.mosquitto.url,
            mqtt_ca_file=self.mosquitto.ca_file,
            mqtt_admin_username=self.mosquitto.admin.username,
            mqtt_admin_password=self.mosquitto.admin.password,
            kafka_bootstrap=f"127.0.0.1:{kafka_port}",
            pg_host="127.0.0.1",
            pg_port=self.pg_tcp.port if self.pg_tcp else self.postgres.port,
            bridge_metrics_port=0,
            consumer_metrics_port=0,
            heartbeat_interval_s=1.0,
            kafka_topic=f"iot-messages-{tag}",
            kafka_dlq_topic=f"iot-messages-dlq-{tag}",
            kafka_consumer_group=f"iot-postgres-writer-{tag}",
            mqtt_client_id=f"iot-bridge-{tag}",
            mqtt_topic_filter=f"t{tag}/mtic/msg/client/realtime/#",
            mqtt_topic_grammar=f"t{tag}/mtic/msg/client/realtime/{{tenant_id}}/{{project_id}}[/...]",
            pg_database=f"iot_fault_{tag}",
        )
        settings = provision_mqtt_access(settings)
        ensure_topics(settings)
        ensure_platform_role_and_databases(self.postgres.admin_dsn, settings, settings.pg_database)
        apply_migrations(settings)
        return settings


class Service:
    """`iot-platform bridge|consumer` as a subprocess with these settings; its log in ``log_dir``."""

    def __init__(self, name: str, settings: Settings, log_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.name, self.settings, self.log_dir = name, settings, log_dir
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> "Service":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = service_env(self.settings) | self.extra_env
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "iot_platform.cli", self.name],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.starts += 1
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no flush, no ack, no commit."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        if self.process is None:
            return None
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def pipeline(settings: Settings, log_dir: Path, consumer_env: dict[str, str] | None = None) -> Iterator[tuple[Service, Service]]:
    """Bridge and consumer running; both stopped (SIGTERM, then SIGKILL) when the block ends."""
    bridge = Service("bridge", settings, log_dir)
    consumer = Service("consumer", settings, log_dir, consumer_env)
    try:
        bridge.start()
        consumer.start()
        wait_pipeline_ready(settings, timeout_s=90, services=(bridge, consumer))
        yield bridge, consumer
    finally:
        for service in (bridge, consumer):
            with contextlib.suppress(Exception):
                service.stop(timeout_s=15)


def fleet_spec(settings: Settings, *, bad_fraction: float = 0.0, seed: int = 1, **overrides: object) -> FleetSpec:
    values: dict[str, object] = dict(
        tenants=3, projects=2, devices=5, topic_grammar=settings.mqtt_topic_grammar, run_id=new_run_id(),
        bad_fraction=bad_fraction, max_payload_bytes=settings.max_payload_bytes, seed=seed,
    )
    values.update(overrides)
    return FleetSpec(**values)  # type: ignore[arg-type]


class Publisher(threading.Thread):
    """The simulator in a background thread; ``result`` once it has finished."""

    def __init__(self, settings: Settings, spec: FleetSpec, *, count: int, rate: float | None, drain_timeout_s: float = 120.0) -> None:
        super().__init__(name="publisher", daemon=True)
        self.settings, self.spec, self.count, self.rate = settings, spec, count, rate
        self.drain_timeout_s = drain_timeout_s
        self.stop_event = threading.Event()
        self.result: SimulationResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = simulate(
                self.settings, self.spec, credentials_for=publisher_for(self.settings), rate=self.rate, count=self.count,
                max_outstanding=5_000, drain_timeout_s=self.drain_timeout_s, stop=self.stop_event,
            )
        except BaseException as exc:  # noqa: BLE001 - surfaced by finish()
            self.error = exc

    def finish(self, timeout_s: float = 180.0) -> SimulationResult:
        self.join(timeout_s)
        if self.is_alive():
            self.stop_event.set()
            self.join(30)
        if self.error is not None:
            raise self.error
        assert self.result is not None, "publisher did not finish"
        return self.result


def wait_pipeline_ready(settings: Settings, timeout_s: float, services: tuple[Service, ...] = ()) -> None:
    """A probe message published to MQTT is stored in the database: the bridge has subscribed and
    both services work. Raises with the services' logs otherwise."""
    spec = fleet_spec(settings, tenants=1, projects=1, devices=1, run_id=f"probe{uuid.uuid4().hex[:6]}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for service in services:
            if not service.alive():
                raise AssertionError(f"{service.name} exited early:\n{service.log_tail()}")
        simulate(settings, spec, credentials_for=publisher_for(settings), rate=None, count=1, drain_timeout_s=5)
        if stored_count(settings, spec.run_id):
            return
        time.sleep(1.0)
    logs = "\n".join(f"--- {s.name} ---\n{s.log_tail()}" for s in services)
    raise AssertionError(f"pipeline not ready within {timeout_s} s\n{logs}")


def stored_count(settings: Settings, run_id: str) -> int:
    """Rows of simulator run ``run_id`` in iot.messages (0 while the database is not ready)."""
    from iot_platform.storage.db import connect

    try:
        conn = connect(settings)
    except Exception:  # noqa: BLE001 - not ready yet
        return 0
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM iot.messages WHERE payload_json->>'run_id' = %s", (run_id,))
            return int(cur.fetchone()[0])
    except Exception:  # noqa: BLE001 - schema or partition not there yet
        return 0
    finally:
        conn.close()


def settle_and_verify(settings: Settings, result: SimulationResult, timeout_s: float = 120.0) -> dict[str, object]:
    """Wait for the pipeline to deliver everything the broker acknowledged, then the verify report.

    Polls until nothing is lost and the dead letters match, or ``timeout_s`` passes (the report then
    shows what is missing)."""
    expectation = Expectation.from_summary(result.to_json())
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = max(deadline - time.monotonic(), 1.0)
        with contextlib.suppress(Exception):
            wait_until_drained(settings, timeout_s=min(remaining, 10.0), interval_s=0.5)
        try:
            report = verify(settings, run_id=result.run_id, expectation=expectation)
        except Exception:  # noqa: BLE001 - a server may still be coming back
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)
            continue
        settled = report["totals"]["lost"] == 0 and report["expected"]["dead_letters_match"]  # type: ignore[index]
        if (settled and report["kafka"]["pending"] == 0) or time.monotonic() >= deadline:  # type: ignore[index]
            return report
        time.sleep(1.0)


def assert_invariants(report: dict[str, object], result: SimulationResult) -> None:
    """lost = 0, duplicates in the database = 0, dead letters = exactly the bad messages sent."""
    totals = report["totals"]
    assert isinstance(totals, dict)
    summary = {k: v for k, v in result.to_json().items() if k != "devices"}
    context = f"\nsimulator: {summary}\ntotals: {totals}\nproblems: {report['problem_streams']}\nkafka: {report['kafka']}"
    assert result.unacked == 0, "the broker did not acknowledge every message" + context
    assert totals["lost"] == 0, "messages lost" + context
    assert totals["duplicates"] == 0, "duplicates in iot.messages" + context
    assert totals["stored"] == result.acked["good"], "stored rows differ from good messages sent" + context
    assert totals["dead_letters"] == result.bad_acked, "dead letters differ from bad messages sent" + context
    assert report["dead_letters_by_category"].get("unmarked", 0) == 0, "a good message was dead-lettered" + context  # type: ignore[union-attr]
    assert totals["duplicate_dead_letters"] == 0, "a bad message was dead-lettered twice" + context


def run_with_fault(
    settings: Settings,
    log_dir: Path,
    fault: Callable[[], None],
    *,
    count: int = 4_000,
    rate: float = 800,
) -> None:
    """Publish ``count`` messages at ``rate``; once a fifth of them are stored (traffic flows end to end)
    and while the publisher still runs, inject ``fault``. Both services must recover without a restart,
    and the invariants of :func:`assert_invariants` must hold."""
    with pipeline(settings, log_dir) as (bridge, consumer):
        spec = fleet_spec(settings, bad_fraction=0.01)
        publisher = Publisher(settings, spec, count=count, rate=rate)
        publisher.start()
        wait_for(lambda: stored_count(settings, spec.run_id) >= count // 5, 60, f"{count // 5} rows stored before the fault",
                 interval_s=0.1)
        assert publisher.is_alive(), "the publisher finished before the fault: it would not hit mid-stream"
        fault()
        result = publisher.finish(timeout_s=240)
        report = settle_and_verify(settings, result, timeout_s=180)
        for service in (bridge, consumer):
            assert service.alive() and service.starts == 1, f"{service.name} did not recover by itself:\n{service.log_tail()}"
    assert_invariants(report, result)

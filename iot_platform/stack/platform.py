"""`iot-platform dev up | status | down`: the whole platform on one machine, each part a real server.

State lives in ``IOT_HOME`` (default ``.iot/``): each server's data and log, and ``state.json``
with the pids we started (every Kafka node's: ``IOT_KAFKA_BROKERS`` is 1 or 3, ``stack/kafka_cluster.py``). ``up`` is safe to run twice (it starts only what is not running, and says
so when everything runs) and, if any part fails, stops what this call started and shows that part's
log. ``down`` stops, by pid, the processes recorded in ``state.json`` and nothing else.

One platform per home: ``up`` and ``down`` hold ``run/locks/dev.lock`` while they work (a second
one at the same time is refused, naming its pid), and the Dagster daemon holds
``run/locks/platform.lock`` for its lifetime (inherited from ``up``), so an ``up`` that finds a
running platform its ``state.json`` does not record refuses to start a second one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from iot_platform.observability.instance_lock import AlreadyRunning, acquire, holder, record_holder
from iot_platform.observability.pidfile import live_replica_pids, read_live_pid, replica_pidfile_name
from iot_platform.observability.replica_counts import counts_of, record_replica_counts
from iot_platform.settings import Settings
from iot_platform.stack import dagster_processes
from iot_platform.stack.databases import ensure_platform_role_and_databases
from iot_platform.access.connection import admin_credentials
from iot_platform.stack.certs import server_certificate
from iot_platform.stack.kafka import JAVA_HINT, ensure_topics
from iot_platform.stack.kafka_cluster import KafkaCluster, formatted_sizes, local_node_addresses
from iot_platform.stack.mosquitto import MosquittoServer, mosquitto_binary
from iot_platform.stack.ports import ensure_port_free
from iot_platform.stack.postgres import PostgresServer, server_binary
from iot_platform.stack.process import StackError, pid_alive, require_binary, spawn, stop_group, stop_groups, wait_until
from iot_platform.stack.secrets import with_platform_secrets

log = logging.getLogger(__name__)
SERVICES = ("bridge", "consumer")
# Stopped in this order: producers of data first, storage last, so in-flight work can commit.
STOP_ORDER = ("simulator", "dagster_daemon", "dagster_webserver", "mosquitto", "kafka", "postgres")
SERVERS = ("postgres", "kafka", "mosquitto", "dagster_webserver", "dagster_daemon")


@dataclass
class PlatformState:
    """The pids `dev up` started: one per part (``pids``; a cluster's first node), and every node of a
    part that has several (``nodes``: Kafka's)."""

    pids: dict[str, int | None] = field(default_factory=dict)
    nodes: dict[str, list[int | None]] = field(default_factory=dict)

    @classmethod
    def load(cls, home: Path) -> "PlatformState":
        try:
            state = json.loads((home / "state.json").read_text())
            return cls(pids=state["pids"], nodes=state.get("nodes", {}))
        except (OSError, ValueError, KeyError):
            return cls()

    def save(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "state.json").write_text(json.dumps({"pids": self.pids, "nodes": self.nodes}, indent=2) + "\n")

    def all_pids(self, name: str) -> list[int | None]:
        return self.nodes.get(name) or [self.pids.get(name)]

    def alive(self, name: str) -> bool:
        """Every process of the part runs (all of a cluster's nodes)."""
        return all(pid_alive(pid) for pid in self.all_pids(name))


class LocalPlatform:
    """The local platform. Secured like production: broker credentials (generated once into
    IOT_HOME/secrets/) on every listener, MQTT over TLS with a private CA (IOT_HOME/tls/), the plain
    listener on loopback only; devices are registered with `iot-platform devices add`."""

    def __init__(self, settings: Settings, progress: Callable[[str], None] | None = None) -> None:
        settings = with_platform_secrets(settings)
        tls = server_certificate(settings.home / "tls", "mosquitto", (settings.mqtt_host,)) if settings.mqtt_tls else None
        if tls is not None and settings.mqtt_ca_file is None:
            settings = settings.model_copy(update={"mqtt_ca_file": tls.ca})
        pg_tls = server_certificate(settings.home / "tls", "postgres", (settings.pg_host,))
        if "pg_sslmode" not in settings.model_fields_set and settings.pg_sslrootcert is None:
            # Our own server, our own CA: verify it fully unless told otherwise.
            settings = settings.model_copy(update={"pg_sslmode": "verify-full", "pg_sslrootcert": pg_tls.ca})
        try:
            nodes = local_node_addresses(settings.kafka_bootstrap, settings.kafka_controller_port, settings.kafka_brokers)
        except ValueError as exc:
            raise StackError(str(exc)) from None
        # Clients bootstrap through every node, so any one may be down.
        settings = settings.model_copy(update={"kafka_bootstrap": ",".join(f"{n.host}:{n.port}" for n in nodes)})
        self.settings = settings
        self.home = settings.home
        self.logs = self.home / "logs"
        self.state = PlatformState.load(self.home)
        self.progress = progress or (lambda line: None)
        self.postgres = PostgresServer(self.home / "postgres", settings.pg_port, host=settings.pg_host, tls=pg_tls)
        self.kafka = KafkaCluster(self.home / "kafka", nodes, jit=settings.kafka_local_jit)
        for node, pid in zip(self.kafka.nodes, self.state.all_pids("kafka")):
            node.pid = pid
        self.mosquitto = MosquittoServer(
            self.home / "mosquitto",
            (settings.mqtt_plain_port or None) if settings.mqtt_tls else settings.mqtt_port,
            host=settings.mqtt_host,
            admin=admin_credentials(settings),
            tls_port=settings.mqtt_port if tls else None,
            tls=tls,
        )

    # -- up ---------------------------------------------------------------------------------------
    def up(self, demo: bool) -> None:
        with self._dev_lock():
            self._up(demo)

    @contextlib.contextmanager
    def _dev_lock(self) -> Iterator[None]:
        try:
            fd = acquire(self.home / "run" / "locks" / "dev.lock", f"`iot-platform dev up` or `dev down` for {self.home}")
        except AlreadyRunning as exc:
            raise StackError(str(exc)) from None
        try:
            yield
        finally:
            os.close(fd)

    def running(self, demo: bool) -> bool:
        """Every part of this home's platform (and both services) is up already."""
        return (
            all(self.state.alive(name) for name in SERVERS)
            and self._services_running()
            and (not demo or self.state.alive("simulator"))
        )

    def _up(self, demo: bool) -> None:
        # Recorded first, also on a running platform: service_watchdog follows it (replica_counts.py).
        for name, (before, after) in record_replica_counts(self.home, counts_of(self.settings)).items():
            if before is not None:
                self.progress(f"{name}: {before} -> {after} replicas; service_watchdog applies it within a minute")
        if self.running(demo):
            pids = ", ".join(f"{name} {self.state.pids[name]}" for name in SERVERS)
            self.progress(f"the platform in {self.home} is already running ({pids}); nothing started")
            return
        if all(self.state.alive(name) for name in SERVERS) and (not demo or self.state.alive("simulator")):
            self.progress(f"the platform in {self.home} is running; waiting for every service replica")
            self._wait_for_services()
            return
        platform_lock = self.home / "run" / "locks" / "platform.lock"
        daemon = holder(platform_lock)
        if daemon is not None and not self.state.alive("dagster_daemon"):
            raise StackError(
                f"the platform in {self.home} is already running: its Dagster daemon (pid {daemon or 'unknown'}) holds "
                f"{platform_lock}, but {self.home / 'state.json'} does not record it; stop that process group, or set "
                "IOT_HOME to another directory"
            )
        if not self.state.alive("mosquitto"):
            # A broker started by a package install usually holds this port: fail before starting anything.
            ensure_port_free(self.settings.mqtt_host, self.settings.mqtt_port, "IOT_MQTT_URL")
        self._require_programs()
        started: list[str] = []
        try:
            self._step("postgres", started, self._start_postgres)
            self._step("kafka", started, self._start_kafka)
            self._step("mosquitto", started, self._start_mosquitto)
            applied = self._apply_migrations()
            self._sync_broker_access()
            self._step("dagster_webserver", started, self._start_webserver)
            # After the webserver, which creates Dagster's storage: the UI shows the schema, roles and dashboards.
            with dagster_processes.first_materializations(self.settings, self.logs, applied, self.progress):
                self._step("dagster_daemon", started, self._start_daemon, checked=False)  # proven by the services
                self._wait_for_services()
            if demo:
                self._step("simulator", started, self._start_demo_fleet, checked=False)
        except BaseException:
            self.progress(f"startup failed; stopping what this call started: {', '.join(started) or 'nothing'}")
            for name in reversed(started):
                self._stop(name)
            raise

    def _require_programs(self) -> None:
        """A program a server that is not running needs is missing: fail before starting anything."""
        if not self.state.alive("postgres"):
            server_binary("initdb")
            server_binary("pg_ctl")
        if not self.state.alive("kafka"):
            require_binary("java", JAVA_HINT)
        if not self.state.alive("mosquitto"):
            mosquitto_binary()

    def _step(self, name: str, started: list[str], start: Callable[[], int | None], *, checked: bool = True) -> None:
        """Start one part unless it runs already; ``checked``: ``start`` returns only once it is healthy."""
        if self.state.alive(name):
            self.progress(f"{name}: already running (pid {self.state.pids[name]})")
            return
        self.progress(f"{name}: starting ...")
        begin = time.monotonic()
        self.state.pids[name] = start()
        self.state.save(self.home)
        started.append(name)
        state = f"ready in {time.monotonic() - begin:.1f} s" if checked else "started"
        self.progress(f"{name}: {state} (pid {self.state.pids[name]})")

    def _start_postgres(self) -> int | None:
        self.postgres.start()
        ensure_platform_role_and_databases(self.postgres.admin_dsn, self.settings)
        return self.postgres.pid

    def _start_kafka(self) -> int | None:
        self._refuse_other_cluster_layout()
        self.kafka.start()
        self.state.nodes["kafka"] = self.kafka.pids
        if self.kafka.size > 1:
            self.progress(f"kafka: {self.kafka.size} brokers at {self.kafka.bootstrap} (pids {', '.join(map(str, self.kafka.pids))})")
        for change in ensure_topics(self.settings):
            self.progress(f"kafka: {change}")
        return self.kafka.pids[0]

    def _refuse_other_cluster_layout(self) -> None:
        """A home whose Kafka has the other size would start an empty cluster while iot.ingest_offsets
        points into the old one (the consumer would skip to offsets the new topics do not have)."""
        sizes = formatted_sizes(self.kafka.workdir)
        if sizes and self.kafka.size not in sizes:
            raise StackError(
                f"{self.kafka.workdir} holds the Kafka of IOT_KAFKA_BROKERS={sizes[0]}, not {self.kafka.size}: a new "
                "cluster would start empty while the consumer's stored offsets point into the old one. Keep "
                f"IOT_KAFKA_BROKERS={sizes[0]}, or use another IOT_HOME (or `iot-platform dev down` and remove "
                f"{self.home}) to start over"
            )

    def _start_mosquitto(self) -> int | None:
        return self.mosquitto.start().pid

    def _apply_migrations(self) -> list[str]:
        from iot_platform.storage.migrate import apply_migrations

        applied = apply_migrations(self.settings)
        self.progress(f"postgres: schema up to date ({len(applied)} migration(s) applied now)")
        return applied

    def _sync_broker_access(self) -> None:
        from iot_platform.access.sync import sync_broker_access

        report = sync_broker_access(self.settings)
        self.progress(f"mosquitto: access matches the registry ({report.commands} change(s) made now)")

    def _start_webserver(self) -> int:
        return dagster_processes.start_webserver(self.settings, self.logs)

    def _start_daemon(self) -> int:
        # The daemon inherits the platform lock and holds it as long as it lives (see the module docstring).
        fd = acquire(self.home / "run" / "locks" / "platform.lock", f"the platform in {self.home}")
        try:
            pid = dagster_processes.start_daemon(self.settings, self.logs, pass_fds=(fd,))
            record_holder(fd, pid)
            return pid
        finally:
            os.close(fd)

    def _replicas(self, name: str) -> int:
        return {"bridge": self.settings.bridge_replicas, "consumer": self.settings.consumer_replicas}[name]

    def _services_running(self) -> bool:
        """Every replica of both services (IOT_BRIDGE_REPLICAS, IOT_CONSUMER_REPLICAS) has a live pid file."""
        return all(set(range(self._replicas(name))) <= set(live_replica_pids(self.home, name)) for name in SERVICES)

    def _wait_for_services(self, timeout_s: float = 180.0) -> None:
        self.progress("dagster: waiting for the watchdog to start the bridge and the consumer ...")
        daemon = self.state.pids.get("dagster_daemon")
        wait_until(
            self._services_running,
            timeout_s=timeout_s,
            what="bridge and consumer replicas under Dagster",
            alive=lambda: pid_alive(daemon),
            log_path=self.logs / "dagster-daemon.log",
            interval_s=1.0,
        )
        for name in SERVICES:
            pids = ", ".join(str(pid) for pid in live_replica_pids(self.home, name).values())
            self.progress(f"{name}: running under Dagster (pid {pids})")

    def _start_demo_fleet(self) -> int:
        argv = [sys.executable, "-m", "iot_platform.cli", "simulate", "--demo"]
        return spawn(argv, self.logs / "simulator.log", env=self.settings.child_env()).pid

    # -- status / down ----------------------------------------------------------------------------
    def replica_pids(self, name: str) -> list[int | None]:
        """The live pid of every replica of a service (index < IOT_BRIDGE_REPLICAS / IOT_CONSUMER_REPLICAS,
        None where its pid file names no live process), or of every Kafka node, in index order."""
        if name == "kafka":
            return [pid if pid_alive(pid) else None for pid in self.state.all_pids("kafka")]
        return [read_live_pid(self.home, replica_pidfile_name(name, index)) for index in range(self._replicas(name))]

    def status(self) -> dict:
        pids: dict[str, int | None] = {n: p if pid_alive(p) else None for n, p in self.state.pids.items()}
        for name in SERVICES:
            pids[name] = read_live_pid(self.home, name)  # replica 0 under the service's own name
        return {
            "mqtt": {"host": self.settings.mqtt_host, "port": self.settings.mqtt_port, "url": self.settings.mqtt_url,
                     "ca_file": str(self.settings.mqtt_ca_file) if self.settings.mqtt_ca_file else None,
                     "plain_port": self.settings.mqtt_plain_port or None},
            "kafka": {"bootstrap": self.settings.kafka_bootstrap, "brokers": self.kafka.size,
                      "topics": [self.settings.kafka_topic, self.settings.kafka_dlq_topic]},
            "postgres": {"dsn": self.settings.pg_dsn(with_password=False)},
            "dagster": {"url": self.settings.dagster_url},
            "home": str(self.home),
            "pids": pids,
            "replicas": {name: self.replica_pids(name) for name in (*SERVICES, "kafka")},
        }

    def down(self) -> list[str]:
        with self._dev_lock():
            return self._down()

    def _down(self) -> list[str]:
        stopped = []
        for name in STOP_ORDER:
            if any(pid_alive(pid) for pid in self.state.all_pids(name)):
                self.progress(f"{name}: stopping (pid {self.state.pids[name]})")
                self._stop(name)
                stopped.append(name)
        # Services normally leave with the daemon's process group; a survivor is ours too.
        # Every replica that left a live pid file, also one above today's IOT_*_REPLICAS.
        for name in SERVICES:
            for index, pid in live_replica_pids(self.home, name).items():
                label = name if index == 0 else f"{name} replica {index}"
                self.progress(f"{label}: stopping (pid {pid})")
                stop_group(pid)
                stopped.append(label)
        self.state.pids = {}
        self.state.save(self.home)
        return stopped

    def _stop(self, name: str) -> None:
        if name == "postgres":
            self.postgres.stop(mode="fast")
        else:
            # A cluster's nodes all at once: one by one, the last would wait for a quorum that is leaving.
            stop_groups(self.state.all_pids(name), timeout_s=30)
        self.state.pids[name] = None
        self.state.nodes.pop(name, None)
        self.state.save(self.home)


__all__ = ["LocalPlatform", "PlatformState", "StackError"]

"""The bridge's counters and its Prometheus metrics (prometheus_client, as in the consumer).

Two layers, because the hot path handles tens of thousands of messages a second and a
prometheus_client increment takes a lock (about 0.6 µs here):
- ``BridgeStats``: plain integers counted where things happen, each with a single writing thread.
  They are also the bridge's state (its window, what it holds, its progress report), so they exist
  anyway.
- ``BridgeMetrics``: prometheus_client ``Counter``/``Gauge``/``Histogram`` objects on a private
  registry, like ``consumer/metrics.py``, updated per batch, never per message: the main loop adds
  what the counters grew by at most every ``PUBLISH_INTERVAL_S`` (``publish``), and reads the gauges
  then. The one exception is the delivery latency, a per-message distribution: it is observed on the
  main thread as each delivery report arrives, into ``LatencyHistogram``'s plain bucket counts (a
  prometheus_client ``Histogram`` takes two locks per observation, ~2.5% of the bridge's samples in
  a drain), and a scrape reads them as they are.
A scrape sees the counters at most ``PUBLISH_INTERVAL_S`` old.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily

from iot_platform.observability.metrics_endpoint import start_metrics_server

LATENCY_BUCKETS_S = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
    0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
PUBLISH_INTERVAL_S = 0.25


@dataclass
class BridgeStats:
    """Counters of one bridge process. Writers: ``received``/``last_received_monotonic``/``read_pauses`` on
    paho's thread; ``acked``/``acks_discarded`` by the AckGate under its lock; everything else on the
    producer-owning (main) thread."""

    received: int = 0
    last_received_monotonic: float = 0.0
    delivered_messages: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    acked: int = 0
    acks_discarded: int = 0
    connections: int = 0
    read_pauses: int = 0  # times paho's thread found the window full and did not read

    @property
    def delivered_dead_letters(self) -> int:
        return sum(self.dead_lettered.values())


class LatencyHistogram:
    """A Prometheus histogram that one thread observes without a lock (the bridge's main thread).

    Buckets hold what ``prometheus_client.Histogram`` would count (an observation goes into the first
    bucket whose upper bound is at least its value). A scrape, on the metrics server's thread, copies
    the counts in one step under the GIL; the sum is read separately, so it may lag the counts by
    the observations made in between.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation = name, documentation
        self._bounds = buckets
        self._counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at or below it)`` per bucket, ending with +Inf."""
        total, found = 0, []
        for bound, count in zip((*self._bounds, math.inf), list(self._counts)):
            total += count
            found.append((bound, total))
        return found

    def collect(self) -> Iterator[HistogramMetricFamily]:
        buckets = [("+Inf" if math.isinf(bound) else repr(bound), float(count)) for bound, count in self.cumulative()]
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=self._sum)


@dataclass(frozen=True)
class LiveState:
    """The gauges, read when the counters are published."""

    in_flight: int
    connected: bool
    retries: int
    draining: bool


class BridgeMetrics:
    """The bridge's Prometheus metrics on a private registry (``serve`` exposes them on a port)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.received = Counter("iot_bridge_received", "MQTT messages received.", registry=r)
        self.produced = Counter("iot_bridge_produced", "Records confirmed by Kafka.", ["kind"], registry=r)
        self.dead_lettered = Counter("iot_bridge_dead_lettered", "Dead letters confirmed by Kafka.", ["reason"], registry=r)
        self.acked = Counter("iot_bridge_acked", "MQTT acks sent after Kafka confirmed.", registry=r)
        self.acks_discarded = Counter(
            "iot_bridge_acks_discarded", "Acks dropped because their connection was gone (redelivered).", registry=r
        )
        self.delivery_retries = Counter("iot_bridge_delivery_retries", "Failed Kafka deliveries produced again.", registry=r)
        self.mqtt_connections = Counter("iot_bridge_mqtt_connections", "Successful MQTT connections.", registry=r)
        self.read_pauses = Counter(
            "iot_bridge_read_pauses", "Socket reads skipped because the bridge held a full window of unacked messages.", registry=r
        )
        self.in_flight = Gauge("iot_bridge_in_flight", "Received, not yet acked or discarded.", registry=r)
        self.mqtt_connected = Gauge("iot_bridge_mqtt_connected", "1 while connected to the broker.", registry=r)
        self.draining = Gauge("iot_bridge_draining", "1 while this replica hands its MQTT session over (iot-platform bridge --drain).", registry=r)
        self.drained = Gauge("iot_bridge_drained", "1 once this replica's session has ended: it takes no messages until undrained.", registry=r)
        self.delivery_latency = LatencyHistogram(
            "iot_bridge_delivery_latency_seconds", "From MQTT receipt to Kafka confirmation.", LATENCY_BUCKETS_S
        )
        r.register(self.delivery_latency)
        self._published: dict[str, int] = {}
        self._message_kind = self.produced.labels("message")

    def publish(self, stats: BridgeStats, live: LiveState) -> None:
        """Bring the counters up to ``stats`` and set the gauges (the main thread)."""
        for name, counter, total in (
            ("received", self.received, stats.received),
            ("delivered", self._message_kind, stats.delivered_messages),
            ("acked", self.acked, stats.acked),
            ("acks_discarded", self.acks_discarded, stats.acks_discarded),
            ("connections", self.mqtt_connections, stats.connections),
            ("read_pauses", self.read_pauses, stats.read_pauses),
            ("retries", self.delivery_retries, live.retries),
        ):
            grown = total - self._published.get(name, 0)
            if grown:
                counter.inc(grown)
                self._published[name] = total
        self.in_flight.set(live.in_flight)
        self.mqtt_connected.set(int(live.connected))
        self.draining.set(int(live.draining))

    def dead_letter_delivered(self, reason: str) -> None:
        """Bad input is rare: counted here at once."""
        self.dead_lettered.labels(reason).inc()
        self.produced.labels("dead_letter").inc()

    def latency_quantile(self, q: float) -> float | None:
        """The q-quantile of the delivery latency so far, estimated from the histogram; None before the first."""
        return histogram_quantile(self.delivery_latency.cumulative(), q)

    def serve(self, port: int) -> Callable[[], None] | None:
        """Start the /metrics endpoint on ``port`` (0: off); returns a function that stops it."""
        if port == 0:
            return None
        server, thread = start_metrics_server(port, self.registry, "IOT_BRIDGE_METRICS_PORT")

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return stop


def histogram_quantile(cumulative: Iterable[tuple[float, float]], q: float) -> float | None:
    """The q-quantile from cumulative bucket counts ``(upper bound, count)`` ending with +Inf, as
    Prometheus' histogram_quantile estimates it (linear within a bucket; the highest finite bound when
    it falls in +Inf); None without observations (pure)."""
    buckets = sorted(cumulative)
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > lower_count:  # the bucket that holds the rank
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        if not math.isinf(bound):
            lower_bound = bound
        lower_count = count
    return lower_bound

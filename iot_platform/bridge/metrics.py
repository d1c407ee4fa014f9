"""The bridge's counters, heartbeat numbers and Prometheus metrics.

Counting is on the hot path (tens of thousands of messages a second), so each field is a plain
integer with a single writing thread, and Prometheus reads them only when scraped. Readers may see
a value a message old; they never see a torn or lost count.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from iot_platform.observability.metrics_endpoint import start_metrics_server

LATENCY_BUCKETS_S = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
    0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip


@dataclass
class LatencyHistogram:
    """Fixed-bucket histogram of delivery latency (receive to Kafka confirmation), in seconds."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS_S
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total_s += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        running, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out

    def quantile(self, q: float) -> float | None:
        """Estimated q-quantile (linear within a bucket); None before the first observation."""
        total = sum(self.counts)
        if total == 0:
            return None
        rank, running, lower = q * total, 0, 0.0
        for bound, count in zip((*self.bounds, self.bounds[-1]), self.counts):
            if count and running + count >= rank:
                return lower + (bound - lower) * (rank - running) / count
            running += count
            lower = bound
        return self.bounds[-1]


@dataclass
class BridgeStats:
    """Counters of one bridge process. Writers: ``received``/``last_received_monotonic``/``read_pauses`` on
    paho's thread; ``acked``/``acks_discarded`` by the AckGate under its lock; everything else on the
    producer-owning thread."""

    received: int = 0
    last_received_monotonic: float = 0.0
    delivered_messages: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    acked: int = 0
    acks_discarded: int = 0
    connections: int = 0
    read_pauses: int = 0  # times paho's thread found the window full and did not read
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    @property
    def delivered_dead_letters(self) -> int:
        return sum(self.dead_lettered.values())

    def record_delivery(self, dead_letter_reason: str | None, latency_s: float) -> None:
        if dead_letter_reason is None:
            self.delivered_messages += 1
        else:
            self.dead_lettered[dead_letter_reason] = self.dead_lettered.get(dead_letter_reason, 0) + 1
        self.latency.observe(latency_s)


class BridgeCollector(Collector):
    """Exposes BridgeStats (and live gauges) to Prometheus at scrape time."""

    def __init__(self, stats: BridgeStats, in_flight: Callable[[], int], connected: Callable[[], bool], retries: Callable[[], int]) -> None:
        self._stats, self._in_flight, self._connected, self._retries = stats, in_flight, connected, retries

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        s = self._stats
        yield CounterMetricFamily("iot_bridge_received", "MQTT messages received.", value=s.received)
        produced = CounterMetricFamily("iot_bridge_produced", "Records confirmed by Kafka.", labels=["kind"])
        produced.add_metric(["message"], s.delivered_messages)
        produced.add_metric(["dead_letter"], s.delivered_dead_letters)
        yield produced
        dead = CounterMetricFamily("iot_bridge_dead_lettered", "Dead letters confirmed by Kafka.", labels=["reason"])
        for reason, count in sorted(dict(s.dead_lettered).items()):
            dead.add_metric([reason], count)
        yield dead
        yield CounterMetricFamily("iot_bridge_acked", "MQTT acks sent after Kafka confirmed.", value=s.acked)
        yield CounterMetricFamily(
            "iot_bridge_acks_discarded", "Acks dropped because their connection was gone (redelivered).", value=s.acks_discarded
        )
        yield CounterMetricFamily("iot_bridge_delivery_retries", "Failed Kafka deliveries produced again.", value=self._retries())
        yield CounterMetricFamily("iot_bridge_mqtt_connections", "Successful MQTT connections.", value=s.connections)
        yield CounterMetricFamily(
            "iot_bridge_read_pauses", "Socket reads skipped because the bridge held a full window of unacked messages.",
            value=s.read_pauses,
        )
        yield GaugeMetricFamily("iot_bridge_in_flight", "Received, not yet acked or discarded.", value=self._in_flight())
        yield GaugeMetricFamily("iot_bridge_mqtt_connected", "1 while connected to the broker.", value=int(self._connected()))
        latency = HistogramMetricFamily(
            "iot_bridge_delivery_latency_seconds", "From MQTT receipt to Kafka confirmation.", unit=""
        )
        latency.add_metric([], s.latency.cumulative(), s.latency.total_s)
        yield latency


def serve_metrics(port: int, collector: Collector) -> Callable[[], None] | None:
    """Start the /metrics endpoint on ``port`` (0: off); returns a function that stops it."""
    if port == 0:
        return None
    registry = CollectorRegistry()
    registry.register(collector)
    server, thread = start_metrics_server(port, registry, "IOT_BRIDGE_METRICS_PORT")

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop

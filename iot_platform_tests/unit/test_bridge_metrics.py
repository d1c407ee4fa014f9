"""The bridge's Prometheus metrics (prometheus_client) and latency quantiles (its backoff is core/retry.py's: unit/test_retry.py)."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from iot_platform.bridge.metrics import LATENCY_BUCKETS_S, BridgeMetrics, BridgeStats, LiveState, histogram_quantile


@pytest.mark.parametrize(
    ("observations", "q", "low", "high"),
    [
        ([0.004] * 98 + [0.6, 500.0], 0.5, 0.003, 0.005),  # interpolated inside (0.003, 0.005]
        ([0.004] * 98 + [0.6, 500.0], 0.99, 0.5, 0.75),
        ([500.0] * 3, 0.5, 120.0, 120.0),  # beyond the last bound: the highest finite bound
        ([0.0005], 1.0, 0.0, 0.001),
        ([0.01, 0.02, 0.03, 0.05], 0.0, 0.0, 0.0075),
    ],
)
def test_latency_quantile_is_estimated_from_the_histogram(observations: list[float], q: float, low: float, high: float) -> None:
    """Quantiles interpolate within buckets as Prometheus' histogram_quantile does; none before the first observation."""
    metrics = BridgeMetrics()
    assert metrics.latency_quantile(0.5) is None
    for seconds in observations:
        metrics.delivery_latency.observe(seconds)
    estimate = metrics.latency_quantile(q)
    assert estimate is not None and low <= estimate <= high


def test_histogram_quantile_of_empty_or_missing_buckets_is_none() -> None:
    assert histogram_quantile([], 0.5) is None
    assert histogram_quantile([(0.1, 0.0), (float("inf"), 0.0)], 0.5) is None


def test_every_bridge_metric_is_exposed_and_counters_follow_the_plain_counts() -> None:
    """received, produced, dead-lettered, acked, in flight, drain state and the latency histogram are
    exposed; publishing twice adds only what the plain counters grew by."""
    stats = BridgeStats(received=5, acked=2, acks_discarded=1, delivered_messages=2, connections=1)
    metrics = BridgeMetrics(CollectorRegistry())
    metrics.dead_letter_delivered("payload_too_large")
    for seconds in (0.01, 0.02, 0.03):
        metrics.delivery_latency.observe(seconds)
    metrics.publish(stats, LiveState(in_flight=2, connected=True, retries=4, draining=True))
    stats.received += 10
    metrics.publish(stats, LiveState(in_flight=2, connected=True, retries=4, draining=True))
    text = generate_latest(metrics.registry).decode()
    for line in [
        "iot_bridge_received_total 15.0",
        'iot_bridge_produced_total{kind="message"} 2.0',
        'iot_bridge_produced_total{kind="dead_letter"} 1.0',
        'iot_bridge_dead_lettered_total{reason="payload_too_large"} 1.0',
        "iot_bridge_acked_total 2.0",
        "iot_bridge_acks_discarded_total 1.0",
        "iot_bridge_delivery_retries_total 4.0",
        "iot_bridge_mqtt_connections_total 1.0",
        "iot_bridge_in_flight 2.0",
        "iot_bridge_mqtt_connected 1.0",
        "iot_bridge_draining 1.0",
        "iot_bridge_drained 0.0",
        'iot_bridge_delivery_latency_seconds_bucket{le="+Inf"} 3.0',
        "iot_bridge_delivery_latency_seconds_count 3.0",
    ]:
        assert line in text, line


def test_the_lock_free_latency_histogram_exposes_what_prometheus_clients_would() -> None:
    """Bucket bounds inclusive, +Inf, count and sum: line for line what a prometheus_client Histogram
    with the same buckets exposes for the same observations (it adds only its `_created` time)."""
    metrics = BridgeMetrics(CollectorRegistry())
    reference = CollectorRegistry()
    histogram = Histogram("iot_bridge_delivery_latency_seconds", "From MQTT receipt to Kafka confirmation.",
                          buckets=LATENCY_BUCKETS_S, registry=reference)
    rng = random.Random(15)
    observations = [0.0, *LATENCY_BUCKETS_S, 1e9] + [rng.expovariate(20) for _ in range(2_000)]
    for seconds in observations:
        metrics.delivery_latency.observe(seconds)
        histogram.observe(seconds)

    def latency_lines(registry: CollectorRegistry) -> set[str]:
        return {line for line in generate_latest(registry).decode().splitlines() if "delivery_latency" in line}

    ours, theirs = latency_lines(metrics.registry), latency_lines(reference)
    assert ours == {line for line in theirs if "_created" not in line}
    assert f'iot_bridge_delivery_latency_seconds_count {float(len(observations))}' in ours

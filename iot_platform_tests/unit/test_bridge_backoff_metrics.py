"""Backoff bounds and the bridge's latency histogram and Prometheus exposition."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from iot_platform.bridge.backoff import jittered_backoff
from iot_platform.bridge.metrics import BridgeCollector, BridgeStats, LatencyHistogram


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 10, 100, 10_000])
@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
def test_backoff_grows_is_jittered_and_capped(attempt: int, rand: float) -> None:
    """Delay = base * 2**attempt times a factor in [0.5, 1.5), never above the cap, never negative."""
    delay = jittered_backoff(attempt, base_s=0.5, cap_s=30.0, rand=lambda: rand)
    assert 0 < delay <= 30.0
    assert delay == min(30.0, 0.5 * 2 ** min(attempt, 32) * (0.5 + rand))


def test_backoff_jitter_spreads_retries() -> None:
    """Two retries of the same attempt rarely wait the same time (no lockstep)."""
    delays = {round(jittered_backoff(3), 6) for _ in range(50)}
    assert len(delays) > 40


def test_histogram_quantiles() -> None:
    """Quantiles interpolate within buckets; none before the first observation."""
    histogram = LatencyHistogram()
    assert histogram.quantile(0.5) is None
    for _ in range(98):
        histogram.observe(0.004)  # bucket (0.003, 0.005]
    histogram.observe(0.6)
    histogram.observe(500.0)  # beyond the last bound
    assert 0.003 < histogram.quantile(0.5) <= 0.005
    assert 0.5 < histogram.quantile(0.99) <= 0.75
    assert histogram.cumulative()[-1] == ("+Inf", 100)


def test_collector_exposes_every_bridge_metric() -> None:
    """received, produced, dead-lettered, acked, in flight and the latency histogram are exposed."""
    stats = BridgeStats(received=5, acked=2, acks_discarded=1)
    stats.record_delivery(None, 0.01)
    stats.record_delivery("payload_too_large", 0.02)
    stats.record_delivery(None, 0.03)
    registry = CollectorRegistry()
    registry.register(BridgeCollector(stats, in_flight=lambda: 2, connected=lambda: True, retries=lambda: 4))
    text = generate_latest(registry).decode()
    for line in [
        "iot_bridge_received_total 5.0",
        'iot_bridge_produced_total{kind="message"} 2.0',
        'iot_bridge_produced_total{kind="dead_letter"} 1.0',
        'iot_bridge_dead_lettered_total{reason="payload_too_large"} 1.0',
        "iot_bridge_acked_total 2.0",
        "iot_bridge_acks_discarded_total 1.0",
        "iot_bridge_delivery_retries_total 4.0",
        "iot_bridge_in_flight 2.0",
        "iot_bridge_mqtt_connected 1.0",
        'iot_bridge_delivery_latency_seconds_bucket{le="+Inf"} 3.0',
        "iot_bridge_delivery_latency_seconds_count 3.0",
    ]:
        assert line in text, line

"""The bridge's latency histogram and Prometheus exposition (its backoff is core/retry.py's: unit/test_retry.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from iot_platform.bridge.metrics import BridgeCollector, BridgeStats, LatencyHistogram


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

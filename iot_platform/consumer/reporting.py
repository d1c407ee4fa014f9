"""What the consumer tells the outside: lag per partition, its progress file, its heartbeat line.

Guarantee: lag is the broker's high watermark as last fetched (librdkafka's cache: no broker round
trip) minus the stored position, refreshed at most once a second, per owned partition only. The
progress file (observability/progress.py, read by the liveness watchdog, docs/design.md §6.5) is
rewritten on every loop turn with the batches committed and the records waiting (in Kafka, pending,
in flight), so a consumer that stops committing while records wait is seen as stuck. The heartbeat
log line comes every ``IOT_HEARTBEAT_INTERVAL_S``. Nothing here blocks on Kafka or PostgreSQL.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer

from iot_platform.consumer.metrics import ConsumerMetrics
from iot_platform.consumer.positions import Positions
from iot_platform.observability.kafka_watermarks import cached_high_watermarks
from iot_platform.observability.progress import ProgressFile
from iot_platform.settings import Settings

log = logging.getLogger(__name__)


class Reporter:
    def __init__(self, settings: Settings, metrics: ConsumerMetrics, positions: Positions, progress: ProgressFile) -> None:
        self._settings, self._metrics, self._positions, self._progress = settings, metrics, positions, progress
        self._last_heartbeat = self._last_lag_update = time.monotonic()
        self._heartbeat_inserted = 0
        self._lag_total = 0

    def tick(self, consumer: Consumer, commits: int, waiting_in_process: int) -> None:
        """Once per loop turn: lag (at most once a second), the progress file, the heartbeat when due."""
        now = time.monotonic()
        if now - self._last_lag_update >= 1.0:
            self._lag_total = self._update_lag(consumer)
            self._last_lag_update = now
        self._progress.update(commits, self._lag_total + waiting_in_process, now)
        if now - self._last_heartbeat < self._settings.heartbeat_interval_s:
            return
        totals = self._metrics.totals
        rate = (totals.inserted - self._heartbeat_inserted) / (now - self._last_heartbeat)
        log.info("consumer heartbeat", extra={**vars(totals), "rows_per_s": round(rate, 1), "lag": self._lag_total,
                                              "assigned": len(self._positions.assigned()), "position_gaps": self._positions.gaps})
        self._last_heartbeat, self._heartbeat_inserted = now, totals.inserted

    def _update_lag(self, consumer: Consumer) -> int:
        """Per partition: the broker's high watermark (as last fetched) minus the stored position."""
        total = 0
        for (topic, partition), high in cached_high_watermarks(consumer, self._positions.assigned()).items():
            position = self._positions.next_offset((topic, partition))
            if position is not None:
                lag = max(0, high - position)
                self._metrics.set_lag(topic, partition, lag)
                total += lag
        return total

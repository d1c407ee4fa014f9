"""`iot-platform bridge`: MQTT -> Kafka, at least once, nothing dropped.

Guarantee: every message the broker delivers is produced to Kafka (good records to the messages
topic, bad input to the dead-letter topic) and acked to the broker only after Kafka confirmed it.
A message is never acked otherwise: if the bridge dies, Kafka stalls or the connection drops, the
broker keeps it and redelivers it, which can duplicate a message in Kafka but never loses one.
Acks go out in the order the messages arrived (acks.py). Backpressure is the broker's inflight
window: while Kafka is slow, acks stop and the broker stops sending; and because Mosquitto 2.0.11
sends a resuming session more than the window, the bridge also stops reading its socket while it
holds ``mqtt_receive_maximum`` unacked messages, or while the producer's buffer (``bridge_buffer_kb``)
is full, so its memory is bounded by the window and the buffer, not by the broker's backlog. MQTT
reconnects forever with the platform's jittered backoff (core/retry.py, paho's network thread);
librdkafka reconnects to Kafka on its own; failed deliveries are produced again (producer.py).

Threads: paho's network thread receives, builds records and hands them to the producer; the main
thread polls the producer (delivery reports, retries) and then queues the acks confirmed so far as
one batch (acks.py). Each takes a turn at most once per ``bridge_batch_interval_ms`` (pace.py), so
at a steady rate a wake-up serves many messages. The main thread also logs the heartbeat, watches
for stalls and, on SIGTERM/SIGINT, stops receiving, flushes, acks what was delivered and exits 0
within ``bridge_shutdown_timeout_s`` (plus one MQTT connect timeout at most).

Replicas (replicas.py): replica i is MQTT client ``Settings.bridge_client_id``; on every connection it
subscribes to its form of the filter (shared above one replica) and unsubscribes the other. Asked to
drain (drain_marks.py, looked for about once a second), it unsubscribes, delivers and acks what the
broker still sends, ends its session once it is proven empty (drain.py), marks itself drained and
exits 0.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from iot_platform.bridge.acks import AckGate, InFlightMessage
from iot_platform.bridge.drain import DrainStep, SessionDrain
from iot_platform.bridge.drain_marks import drain_requested, mark_drained
from iot_platform.bridge.metrics import PUBLISH_INTERVAL_S, BridgeMetrics, BridgeStats, LiveState
from iot_platform.bridge.mqtt_session import connect_async, end_session, make_client
from iot_platform.bridge.pace import Pace
from iot_platform.bridge.paho_client import PublicBridgeClient
from iot_platform.bridge.producer import FatalProducerError, ReliableProducer
from iot_platform.bridge.replicas import SubscriptionPlan, subscription_plan
from iot_platform.core.records import InboundMessage, RecordRules, build_record, dead_letter_record
from iot_platform.core.retry import Backoff
from iot_platform.core.topic_grammar import INVALID_TOPIC_ENCODING
from iot_platform.observability.progress import ProgressFile
from iot_platform.settings import Settings

log = logging.getLogger(__name__)
_AUTH_REFUSED = (0x86, 0x87)  # Bad user name or password, Not authorized (3.1.1's 4 and 5 map to these)
_DRAIN_CHECK_INTERVAL_S = 1.0  # how often a running bridge looks for a drain request


class Bridge:
    """One bridge process: one MQTT session, one Kafka producer. ``draining``: hand the session over from the start."""

    def __init__(self, settings: Settings, *, draining: bool = False) -> None:
        self._settings = settings
        self.identity = settings.bridge_client_id
        self._rules = RecordRules.from_settings(settings)
        self.stats = BridgeStats()
        self.metrics = BridgeMetrics()
        self._observe_latency = self.metrics.delivery_latency.observe
        self._client: PublicBridgeClient = make_client(settings)
        self._gate = AckGate(self._client.send_pubacks, self.stats)
        self._producer = ReliableProducer(settings, self._rules, self._delivered, self._gate.is_stale)
        self._window = settings.mqtt_receive_maximum
        self._client.pause_reading_while(self._over_window, self._gate.acks_sent)
        self._stop = threading.Event()
        self._receiving = True
        self._exit_code = 0
        self._reconnect_attempt = 0
        self._subscription_lock = threading.Lock()  # a drain never starts between a subscription's decision and its packet
        self._drain: SessionDrain | None = SessionDrain() if draining else None
        self._session_ended = False
        self._reconnect_backoff = Backoff(initial_s=0.5, maximum_s=settings.bridge_reconnect_max_backoff_s)
        self._client.on_pre_connect = lambda _c, _u: self._gate.closed()
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = lambda _c, _u: self._schedule_reconnect("connect failed")
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_unsubscribe = self._on_unsubscribe
        self._client.on_message = self._on_message

    def stop(self) -> None:
        """Ask the bridge to stop (signal handlers, parent watch); returns at once."""
        self._stop.set()

    def begin_drain(self) -> None:
        """Stop taking new messages and hand the session over (see drain.py); returns at once."""
        with self._subscription_lock:
            if self._drain is None:
                self._drain = SessionDrain()
                log.info("drain requested", extra={"client_id": self.identity, "in_flight": self.in_flight})

    @property
    def in_flight(self) -> int:
        s = self.stats
        return s.received - s.acked - s.acks_discarded - self._producer.stale_failures

    def _over_window(self) -> bool:
        """As many unacked messages held as the window allows, or as many bytes waiting for Kafka as
        the producer's buffer takes (paho's thread, before every packet read)."""
        if (self.in_flight >= self._window or self._producer.full) and self._gate.connected:
            self.stats.read_pauses += 1
            return True
        return False

    def run(self) -> int:
        """Run until stopped; 0 after a clean stop, 1 after a fatal error."""
        stop_metrics = self.metrics.serve(self._settings.bridge_metrics_port)
        progress = ProgressFile(self._settings.home, "bridge", self.identity)
        connect_async(self._client, self._settings)
        self._client.loop_start()
        path = self._client.path
        log.log(logging.INFO if path.fast or self._settings.mqtt_client_path == "public" else logging.WARNING,
                "bridge started", extra={**self._describe(), "paho_path": path.name, "paho_path_reason": path.reason})
        try:
            self._main_loop(progress)
        except FatalProducerError as exc:
            log.critical("fatal kafka producer error: restart needed", extra={"error": str(exc)})
            self._exit_code = 1
        finally:
            self._shutdown()
            progress.close()
            if stop_metrics:
                stop_metrics()
        return self._exit_code

    def _main_loop(self, progress: ProgressFile) -> None:
        interval = self._settings.heartbeat_interval_s
        next_heartbeat = time.monotonic() + interval
        next_drain_check = next_publish = time.monotonic()
        last = (time.monotonic(), 0)
        stall_reported_for = -1.0
        ack_pace = Pace(self._settings.bridge_batch_interval_ms / 1000)  # one PUBACK write per interval at most (pace.py)
        while not self._stop.is_set():
            self._producer.service(0.05)
            ack_pace.turn()
            self._gate.flush()
            now = time.monotonic()
            if now >= next_publish:
                next_publish = now + PUBLISH_INTERVAL_S
                self._publish_metrics()
            if self._drain is None and now >= next_drain_check:
                next_drain_check = now + _DRAIN_CHECK_INTERVAL_S
                if drain_requested(self._settings.home, self.identity):
                    self.begin_drain()
            if self._drain is not None and self._drain_step(self._drain):
                return
            progress.update(self.stats.acked, self.in_flight, now)  # for service_watchdog: acks made, messages held
            quiet_since = max(self.stats.last_received_monotonic, self._gate.connected_since)
            if self._gate.connected and now - quiet_since > self._settings.stall_timeout_s and stall_reported_for != quiet_since:
                stall_reported_for = quiet_since
                log.warning(
                    "stall: connected but nothing received",
                    extra={"quiet_s": round(now - quiet_since, 1), "in_flight": self.in_flight},
                )
            if now >= next_heartbeat:
                rate = (self.stats.received - last[1]) / max(now - last[0], 1e-9)
                last = (now, self.stats.received)
                next_heartbeat = now + interval
                log.info("heartbeat", extra=self._heartbeat(rate))

    def _drain_step(self, drain: SessionDrain) -> bool:
        """Advance the drain (main thread, after the flush); True once the session has ended."""
        received = self.stats.received  # before in_flight: see SessionDrain.send_probe
        held = self.in_flight
        step = drain.next_step(connected=self._gate.connected, held=held, received=received)
        if step is DrainStep.UNSUBSCRIBE:
            drain.send_probe(lambda: self._client.unsubscribe(list(self._plan(draining=True).unsubscribe))[1], held=held, received=received)
        elif step is DrainStep.END:
            self._end_session()
            return True
        return False

    def _end_session(self) -> None:
        """The session is proven empty and holds no subscription: end it, and mark this identity drained."""
        self._receiving = False
        self._session_ended = True
        logging.getLogger("iot_platform.bridge.paho").setLevel(logging.CRITICAL)  # see _shutdown
        ended = end_session(self._client, timeout_s=self._settings.mqtt_connect_timeout_s)
        s = self.stats
        summary = {"received": s.received, "acked": s.acked, "probes": self._drain.probes if self._drain else 0}
        mark_drained(self._settings.home, self.identity, summary)
        log.info("drained: session ended", extra={"client_id": self.identity, "disconnect_sent": ended, **summary})

    def _shutdown(self) -> None:
        self._receiving = False  # later messages are neither produced nor acked: redelivered next session
        deadline = time.monotonic() + self._settings.bridge_shutdown_timeout_s
        undelivered = self._producer.flush(self._settings.bridge_shutdown_timeout_s * 0.8)
        self._gate.flush()
        while self._client.want_write() and self._gate.connected and time.monotonic() < deadline:
            time.sleep(0.01)  # let paho's thread write the last PUBACKs before DISCONNECT
        # paho logs an error for every loop turn after a disconnect it was asked for: not news here.
        logging.getLogger("iot_platform.bridge.paho").setLevel(logging.CRITICAL)
        if not self._session_ended:
            self._client.disconnect()  # keeps the session: MQTT 5 expiry / 3.1.1 clean_session=False
        self._client.loop_stop()
        self._producer.close()
        self._publish_metrics()
        log.info("bridge stopped", extra={**self._heartbeat(0.0), "undelivered": undelivered})

    def _publish_metrics(self) -> None:
        live = LiveState(self.in_flight, self._gate.connected, self._producer.retries, self._drain is not None and not self._session_ended)
        self.metrics.publish(self.stats, live)
        self.metrics.drained.set(int(self._session_ended))

    # -- paho's network thread -----------------------------------------------------------------

    def _on_message(self, _client: Client, _userdata: Any, msg: MQTTMessage) -> None:
        if not self._receiving:
            return
        try:
            received_at_ms = time.time_ns() // 1_000_000
            try:
                topic, rejection = msg.topic, None
            except UnicodeDecodeError:  # brokers should refuse these; dead-letter, never crash
                raw = getattr(msg, "_topic", b"")  # paho keeps the undecodable bytes only there
                topic, rejection = raw.decode("utf-8", "replace"), INVALID_TOPIC_ENCODING
            inbound = InboundMessage(topic, msg.payload, msg.qos, msg.retain, received_at_ms)
            record = build_record(inbound, self._rules) if rejection is None else dead_letter_record(inbound, rejection, self._rules)
            receipt = self._gate.received(msg.mid) if msg.qos else -1
            # msg.timestamp is paho's receive time, on time.monotonic().
            item = InFlightMessage(msg.mid, msg.qos, self._gate.generation, inbound, record, msg.timestamp, receipt)
            self.stats.received += 1
            self.stats.last_received_monotonic = item.received_monotonic
            self._producer.send(item)
        except Exception:  # a bug, not bad data: stop rather than hold an unacked message forever
            log.exception("unexpected error handling a message; stopping")
            self._exit_code = 1
            self.stop()

    def _on_connect(self, client: Client, _u: Any, flags: ConnectFlags, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            if reason.value in _AUTH_REFUSED:  # a misconfiguration, not an outage: retrying cannot help
                log.critical(
                    "mqtt credentials refused: check IOT_MQTT_USERNAME and IOT_MQTT_PASSWORD",
                    extra={"reason": str(reason), "username": self._settings.mqtt_username},
                )
                self._exit_code = 1
                self.stop()
                return
            log.error("mqtt connection refused", extra={"reason": str(reason)})
            return
        generation = self._gate.opened()
        self.stats.connections += 1
        self._reconnect_attempt = 0
        with self._subscription_lock:
            if self._drain is not None:
                self._drain.opened()  # the main loop unsubscribes and probes on this connection
            else:
                plan = self._plan(draining=False)
                if plan.subscribe is not None:
                    client.subscribe(plan.subscribe, options=SubscribeOptions(qos=self._settings.mqtt_qos))
                if plan.unsubscribe:  # after the subscription, so no message falls between the two forms
                    client.unsubscribe(list(plan.unsubscribe))
        log.info("mqtt connected", extra={"session_present": flags.session_present, "generation": generation,
                                          "client_id": self.identity, "draining": self._drain is not None})

    def _on_disconnect(self, _c: Client, _u: Any, _f: DisconnectFlags, reason: ReasonCode, _p: Any) -> None:
        self._gate.closed()
        if self._receiving:
            self._schedule_reconnect(f"disconnected: {reason}")

    def _on_subscribe(self, _c: Client, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        subscription = self._plan(draining=False).subscribe
        if any(r.is_failure for r in reasons):
            log.error("subscription refused; stopping", extra={"filter": subscription, "reasons": [str(r) for r in reasons]})
            self._exit_code = 1
            self.stop()
            return
        log.info("mqtt subscribed", extra={"filter": subscription})

    def _on_unsubscribe(self, _c: Client, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        # Success: a subscription was removed; 0x11 "No subscription existed" is not a failure.
        if any(r.is_failure for r in reasons):
            log.error("unsubscribe refused: check the bridge's broker role (unsubscribe access)",
                      extra={"reasons": [str(r) for r in reasons], "draining": self._drain is not None})
            if self._drain is not None:  # the session would keep being routed messages: never end it
                self._exit_code = 1
                self.stop()
            return
        if self._drain is not None:
            self._drain.answered(mid, received=self.stats.received)
        elif any(r.value == 0 for r in reasons):
            log.info("mqtt unsubscribed a former form of the subscription", extra={"plan": str(self._plan(draining=False))})

    def _plan(self, *, draining: bool) -> SubscriptionPlan:
        return subscription_plan(self._settings, draining=draining)

    def _schedule_reconnect(self, why: str) -> None:
        delay = self._reconnect_backoff.delay(self._reconnect_attempt)
        self._reconnect_attempt += 1
        self._client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]  # paho accepts floats
        log.warning("mqtt reconnecting", extra={"why": why, "in_s": round(delay, 2), "attempt": self._reconnect_attempt})

    # -- producer-owning (main) thread -----------------------------------------------------------

    def _delivered(self, item: InFlightMessage) -> None:
        self._gate.ack(item)
        reason = item.record.dead_letter_reason
        if reason is None:
            self.stats.delivered_messages += 1
        else:
            self.stats.dead_lettered[reason] = self.stats.dead_lettered.get(reason, 0) + 1
            self.metrics.dead_letter_delivered(reason)
        self._observe_latency(time.monotonic() - item.received_monotonic)

    def _heartbeat(self, rate: float) -> dict[str, Any]:
        s = self.stats
        p50, p99 = self.metrics.latency_quantile(0.5), self.metrics.latency_quantile(0.99)
        return {
            "received": s.received,
            "produced": s.delivered_messages,
            "dead_lettered": s.delivered_dead_letters,
            "acked": s.acked,
            "acks_discarded": s.acks_discarded + self._producer.stale_failures,
            "in_flight": self.in_flight,
            "read_pauses": s.read_pauses,
            "waiting": self._producer.waiting,
            "retries": self._producer.retries,
            "connected": self._gate.connected,
            "draining": self._drain is not None,
            "generation": self._gate.generation,
            "rate_per_s": round(rate, 1),
            "latency_p50_ms": None if p50 is None else round(p50 * 1000, 1),
            "latency_p99_ms": None if p99 is None else round(p99 * 1000, 1),
        }

    def _describe(self) -> dict[str, Any]:
        s = self._settings
        return {
            "mqtt": s.mqtt_url,
            "filter": s.mqtt_topic_filter,
            "client_id": self.identity,
            "replica": s.replica_index,
            "replicas": s.bridge_replicas,
            "subscription": self._plan(draining=False).subscribe,
            "protocol": s.mqtt_protocol,
            "kafka": s.kafka_bootstrap,
            "topic": s.kafka_topic,
            "dlq_topic": s.kafka_dlq_topic,
            "bridge_id": s.bridge_id,
            "metrics_port": s.bridge_metrics_port,
        }

"""The fault tests' publisher and their wait-then-verify step, on top of :mod:`iot_platform.stack.sandbox`
(private servers, service processes), which the benchmarks share."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

from iot_platform.devices.fleet import FleetSpec
from iot_platform.devices.simulate import SimulationResult, simulate
from iot_platform.devices.verify import verify, wait_until_drained
from iot_platform.devices.verify_report import Expectation
from iot_platform.settings import Settings
from iot_platform.stack.sandbox import (  # re-exported: the fault tests take their servers from here too
    PrivateStack,
    ServiceProcess,
    fleet_spec,
    pipeline,
    publisher_for,
    stored_count,
    wait_pipeline_ready,
)
from iot_platform_tests.helpers import wait_for

__all__ = ["PrivateStack", "Publisher", "ServiceProcess", "assert_invariants", "fleet_spec", "pipeline", "run_with_fault",
           "settle_and_verify", "stored_count", "wait_pipeline_ready"]


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

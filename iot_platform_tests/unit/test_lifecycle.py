"""The services' process set-up: the cycle collector's tuning (in a fresh interpreter, not pytest's)."""

from __future__ import annotations

import json
import subprocess
import sys

from iot_platform.observability.lifecycle import SERVICE_GC_THRESHOLDS

_PROBE = """
import gc, json
from iot_platform.observability.lifecycle import tune_gc_for_message_rates
before = gc.get_threshold()
tune_gc_for_message_rates()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_tuning_freezes_start_up_objects_and_raises_the_thresholds() -> None:
    """After the call, start-up's objects are out of every collection and young collections are rarer."""
    result = json.loads(subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60).stdout)
    assert result["before"] == [700, 10, 10]  # CPython's defaults: what the tuning replaces
    assert result["after"] == list(SERVICE_GC_THRESHOLDS)
    assert result["frozen"] > 1_000  # the imported modules' objects, at least

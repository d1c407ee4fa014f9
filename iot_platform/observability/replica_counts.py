"""How many replicas of each service the local platform should run, as the last `dev up` asked.

The Dagster processes of `iot-platform dev up` keep the environment they started with, so a new
``IOT_BRIDGE_REPLICAS`` / ``IOT_CONSUMER_REPLICAS`` could not reach `service_watchdog` without a
restart that would stop every replica. Instead `dev up` records the counts in
``{IOT_HOME}/run/replicas.json`` (replaced atomically) each time it runs, also on a platform that is
already up, and the watchdog reads the file on every tick: scaling is `IOT_CONSUMER_REPLICAS=3
iot-platform dev up`, and only the replicas that change are touched. Without the file (`dg dev`, a
deployment) the watchdog follows its own settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from iot_platform.settings import Settings


def replica_counts_path(home: Path) -> Path:
    return home / "run" / "replicas.json"


def counts_of(settings: Settings) -> dict[str, int]:
    return {"bridge": settings.bridge_replicas, "consumer": settings.consumer_replicas}


def read_replica_counts(home: Path) -> dict[str, int]:
    """The recorded counts (service -> replicas); empty when there is no readable file."""
    try:
        recorded = json.loads(replica_counts_path(home).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(recorded, dict):
        return {}
    return {name: count for name, count in recorded.items() if isinstance(count, int) and not isinstance(count, bool) and count >= 1}


def record_replica_counts(home: Path, counts: dict[str, int]) -> dict[str, tuple[int | None, int]]:
    """Record ``counts``; returns what changed (service -> (before, after))."""
    before = read_replica_counts(home)
    path = replica_counts_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(counts, sort_keys=True) + "\n")
    temporary.replace(path)
    return {name: (before.get(name), count) for name, count in counts.items() if before.get(name) != count}


def desired_replicas(settings: Settings) -> dict[str, int]:
    """The counts the watchdog keeps: the recorded ones where recorded, else the settings'."""
    return {**counts_of(settings), **read_replica_counts(settings.home)}

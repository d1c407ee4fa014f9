"""Pid files of the long-running services, so `iot-platform dev status` can show their pids.

A service writes ``{IOT_HOME}/run/{name}.pid`` when it starts and removes it when it exits; replica
``i > 0`` of a service writes ``{name}-{i}.pid`` (replica 0 keeps the single service's name, which
older tools read). A stale file (its process gone) is reported as not running, never trusted blindly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from iot_platform.observability.lifecycle import pid_alive


def pidfile_path(home: Path, name: str) -> Path:
    return home / "run" / f"{name}.pid"


def replica_pidfile_name(name: str, index: int) -> str:
    """``bridge`` for replica 0, ``bridge-2`` for replica 2."""
    return name if index == 0 else f"{name}-{index}"


def live_replica_pids(home: Path, name: str) -> dict[int, int]:
    """Replica index -> pid of every replica of ``name`` whose pid file names a live process."""
    found = {0: read_live_pid(home, name)}
    for path in (home / "run").glob(f"{name}-*.pid"):
        index = path.stem[len(name) + 1:]
        if index.isdigit():
            found[int(index)] = read_live_pid(home, path.stem)
    return {index: pid for index, pid in sorted(found.items()) if pid is not None}


def read_live_pid(home: Path, name: str) -> int | None:
    """The pid in the service's pid file if that process is alive, else None."""
    try:
        pid = int(pidfile_path(home, name).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


@contextlib.contextmanager
def pidfile(home: Path, name: str) -> Iterator[Path]:
    """Hold ``{home}/run/{name}.pid`` for the lifetime of the block."""
    path = pidfile_path(home, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()

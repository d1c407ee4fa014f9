"""How a drain is asked for and how its end is known: two small files per bridge identity.

``{IOT_HOME}/run/drain/bridge-{identity}.requested`` asks the replica with that MQTT client id to
drain (`iot-platform bridge --drain` writes it); the running replica looks for it about once a second,
and a replica that starts while it exists drains instead of subscribing, so a drain interrupted by a
restart carries on. ``bridge-{identity}.drained`` is written by the replica once its session has
ended, with what it delivered; from then on a bridge started with that identity on this home does
not connect at all (it waits to be stopped), so a supervisor that restarts it (Kubernetes keeps
restarting a container until its pod is deleted) cannot subscribe it again. ``clear`` (`iot-platform
bridge --undrain`) removes both, and the identity runs normally again.

Plain files under IOT_HOME, like the instance locks and progress reports beside them: in Kubernetes
they live in the pod's volume (gone with the pod, so a new pod of the same ordinal starts afresh).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from iot_platform.observability.instance_lock import identity_key


def drain_dir(home: Path) -> Path:
    return home / "run" / "drain"


def requested_path(home: Path, identity: str) -> Path:
    return drain_dir(home) / f"bridge-{identity_key(identity)}.requested"


def drained_path(home: Path, identity: str) -> Path:
    return drain_dir(home) / f"bridge-{identity_key(identity)}.drained"


def request_drain(home: Path, identity: str) -> None:
    _write(requested_path(home, identity), {"identity": identity, "requested_at": time.time(), "by_pid": os.getpid()})


def drain_requested(home: Path, identity: str) -> bool:
    return requested_path(home, identity).exists()


def mark_drained(home: Path, identity: str, summary: dict[str, Any]) -> None:
    _write(drained_path(home, identity), {"identity": identity, "drained_at": time.time(), "pid": os.getpid(), **summary})


def drained(home: Path, identity: str) -> dict[str, Any] | None:
    """The drained mark's content (identity, time, pid, what was delivered), or None."""
    try:
        return dict(json.loads(drained_path(home, identity).read_text()))
    except FileNotFoundError:
        return None
    except ValueError:  # written atomically, so only a foreign file: it still says "drained"
        return {"identity": identity}


def clear(home: Path, identity: str) -> None:
    for path in (requested_path(home, identity), drained_path(home, identity)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _write(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(content))
    os.replace(temporary, path)

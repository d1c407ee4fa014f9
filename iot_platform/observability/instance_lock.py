"""One process per service identity: an exclusive lock that the kernel releases when its holder dies.

Guarantee: while a bridge holds the lock of its MQTT client id (or a consumer the lock of its group
instance) under ``{IOT_HOME}/run/locks/``, a second one with the same identity on this machine and
home refuses to start and names the holder's pid. Two bridges on one client id would take the
session from each other in turn and multiply redeliveries; two consumers of one instance would
fence each other out of the group. The lock is ``flock`` on an open file: it needs no cleanup, a
SIGKILLed holder releases it at once, and a stale file never blocks anybody. The file is not
inherited by child processes (Python opens files non-inheritable).

Identities (today one per service; replicas will add theirs): ``identity_key`` makes any identity
a safe file name, so ``{service}-{key}.lock`` and the progress files beside it never collide.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from iot_platform.errors import PlatformError


class AlreadyRunning(PlatformError):
    """Another live process holds this identity's lock."""

    def __init__(self, what: str, holder_pid: int | None, path: Path) -> None:
        holder = f"pid {holder_pid}" if holder_pid else "another process"
        super().__init__(f"{what} is already running ({holder}, lock {path})")
        self.holder_pid = holder_pid


def identity_key(identity: str) -> str:
    """``identity`` as a file-name part: letters, digits and ``_.-~`` kept, the rest %-encoded (pure)."""
    key = quote(identity, safe="")
    return key.replace(".", "%2E") if set(key) <= {"."} else key


def lock_path(home: Path, service: str, identity: str) -> Path:
    return home / "run" / "locks" / f"{service}-{identity_key(identity)}.lock"


def acquire(path: Path, what: str) -> int:
    """Take the exclusive lock at ``path`` and record this pid in it; returns the open descriptor, which
    holds the lock until it is closed (in every process that shares it). AlreadyRunning if it is held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        raise AlreadyRunning(what, holder, path) from None
    record_holder(fd, os.getpid())
    return fd


def record_holder(fd: int, pid: int) -> None:
    """Name ``pid`` as the holder (when the lock is handed to a child process that keeps it)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid}\n".encode(), 0)


def holder(path: Path) -> int | None:
    """The recorded pid of whoever holds the lock at ``path`` now (0 if unrecorded); None when it is free."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or 0
    finally:
        os.close(fd)
    return None


@contextlib.contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold the exclusive lock at ``path`` for the block; raise AlreadyRunning if a live process has it."""
    fd = acquire(path, what)
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def service_instance(home: Path, service: str, identity: str, setting: str) -> Iterator[None]:
    """The lock of one service identity; the error names the identity and the setting that changes it."""
    with exclusive(lock_path(home, service, identity), f"a {service} with {setting}={identity}"):
        yield


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None

"""Starting, watching and stopping the local platform's server processes.

Every server runs in a session of its own, so it outlives the `dev up` command that started it and
its whole process group can be stopped by the pid we recorded, and nothing else.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from iot_platform.errors import PlatformError
from iot_platform.observability.lifecycle import pid_alive


class StackError(PlatformError):
    """A local server could not be installed, started or reached; the message says what to do."""


def require_binary(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"{name} is not installed: {install_hint}")
    return path


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


@dataclass(frozen=True)
class RunAs:
    """An unprivileged account to run a server as (PostgreSQL refuses to run as root)."""

    uid: int
    gid: int
    name: str

    @classmethod
    def for_server(cls, preferred: str) -> "RunAs | None":
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(preferred)
        except KeyError as exc:
            raise StackError(f"running as root needs the '{preferred}' account to run the server as") from exc
        return cls(entry.pw_uid, entry.pw_gid, entry.pw_name)

    def chown_tree(self, path: Path) -> None:
        for root, dirs, files in os.walk(path):
            os.chown(root, self.uid, self.gid)
            for name in dirs + files:
                os.lchown(os.path.join(root, name), self.uid, self.gid)

    def demote(self) -> Callable[[], None]:
        def _demote() -> None:
            os.setgid(self.gid)
            os.setuid(self.uid)

        return _demote


def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    run_as: RunAs | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start a server detached in its own session, stdout and stderr appended to ``log_path``
    (``pass_fds``: open files it inherits, e.g. a lock it is to hold)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=run_as.demote() if run_as else None,
            pass_fds=tuple(pass_fds),
        )


def stop_group(pid: int | None, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group led by ``pid``; SIGKILL what is left after ``timeout_s``."""
    if not pid_alive(pid):
        return
    assert pid is not None
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid) and not _group_alive(pid):
            return
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)
    _wait_gone(pid, 5.0)


def stop_groups(pids: Sequence[int | None], timeout_s: float = 20.0) -> None:
    """:func:`stop_group` for several groups at once: all get SIGTERM together, so the wait is one ``timeout_s``."""
    alive = [pid for pid in pids if pid is not None and pid_alive(pid)]
    for pid in alive:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(pid_alive(p) or _group_alive(p) for p in alive):
        time.sleep(0.1)
    for pid in alive:
        stop_group(pid, timeout_s=0)


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Only zombies left in the group count as gone.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_until(
    check: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    alive: Callable[[], bool] | None = None,
    log_path: Path | None = None,
    interval_s: float = 0.25,
) -> None:
    """Poll ``check`` until true; fail early, with the log's tail, if the process died meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            log = f"\n--- last lines of {log_path} ---\n{tail(log_path)}" if log_path else ""
            raise StackError(f"{what} exited while starting{log}")
        time.sleep(interval_s)
    log = f"\n--- last lines of {log_path} ---\n{tail(log_path)}" if log_path else ""
    raise StackError(f"{what} was not ready within {timeout_s:.0f} s{log}")

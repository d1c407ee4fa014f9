"""A private PostgreSQL cluster from the machine's server binaries (initdb + pg_ctl).

The cluster listens on loopback only, with password (SCRAM) authentication and, given a server
certificate of the platform's CA, TLS (``ssl=on``; clients choose with ``IOT_PG_SSLMODE``), ``fsync`` on: the
consumer's exactly-once effect relies on a commit being durable. As root, the server runs as the
``postgres`` account (PostgreSQL refuses root), so its directory lives where that account can
reach it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from iot_platform.stack.certs import ServerCertificate
from iot_platform.stack.ports import ensure_port_free
from iot_platform.stack.process import RunAs, StackError, pid_alive, wait_until

INSTALL_HINT = "install PostgreSQL 15+ server binaries (sudo apt-get install postgresql)"
ADMIN_USER = "postgres"
ADMIN_PASSWORD = "postgres"  # loopback-only development cluster; the README says so


def server_binary(name: str) -> str:
    """initdb/pg_ctl from PATH, else from Debian's versioned directory."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise StackError(f"{name} is not installed: {INSTALL_HINT}")
    return candidates[-1]


def render_conf(port: int, socket_dir: Path) -> str:
    """Settings appended to postgresql.conf (pure)."""
    return "\n".join(
        [
            f"port = {port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{socket_dir}'",
            "max_connections = 200",
            "shared_buffers = 256MB",
            "fsync = on",
            "synchronous_commit = on",
            "max_wal_size = 2GB",
            "log_min_messages = warning",
            "log_line_prefix = '%m [%p] %u@%d '",
            "",
        ]
    )


class PostgresServer:
    """A cluster listening on ``127.0.0.1:port`` with its data under ``workdir``.

    When running as root, ``workdir`` must be reachable by the ``postgres`` account; if it is not
    (pytest's private temp dirs are mode 700), the data directory is placed in a world-traversable
    temporary directory and linked from ``workdir``.
    """

    def __init__(self, workdir: Path, port: int, host: str = "127.0.0.1", *, tls: ServerCertificate | None = None) -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.port = port
        self.tls = tls
        self.run_as = RunAs.for_server("postgres")
        self.data_dir = self._data_dir()
        self.log_path = self.data_dir.parent / "postgres.log"

    def _data_dir(self) -> Path:
        link = self.workdir / "pgdata"
        if link.exists():
            return link.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.run_as is None or _reachable_by(self.workdir, self.run_as):
            return link
        holder = Path(tempfile.mkdtemp(prefix="iot-pg-"))
        os.chmod(holder, 0o755)
        link.symlink_to(holder / "pgdata")
        return holder / "pgdata"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://{ADMIN_USER}:{ADMIN_PASSWORD}@{self.host}:{self.port}/postgres?connect_timeout=5"

    @property
    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _run(self, argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            preexec_fn=self.run_as.demote() if self.run_as else None,
            cwd="/",
        )

    def _initdb_once(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pwfile = self.data_dir.parent / "pwfile"
        pwfile.write_text(ADMIN_PASSWORD + "\n")
        if self.run_as:
            self.run_as.chown_tree(self.data_dir.parent)
        # Collation "C": PostgreSQL compares text bytewise (memcmp) only under "C" or "POSIX"; under
        # "C.UTF-8" every comparison in a B-tree (the message-id claim, the tenant index) goes
        # through strcoll, 1-2 µs of backend CPU per stored row (docs/benchmarks.md). The order is the
        # same: glibc's C.UTF-8 sorts by code point, the byte order of UTF-8. Character classes stay
        # C.UTF-8.
        result = self._run(
            [server_binary("initdb"), "-D", str(self.data_dir), "-U", ADMIN_USER, "--pwfile", str(pwfile),
             "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
             "--lc-collate=C"],
            timeout_s=120,
        )
        pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(f"initdb failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# iot-platform\n" + render_conf(self.port, self.data_dir))

    def start(self, timeout_s: float = 60.0) -> "PostgresServer":
        if self.is_running():
            return self
        ensure_port_free(self.host, self.port, "IOT_PG_PORT")
        self._initdb_once()
        options = f"-p {self.port}"
        if self.tls is not None:
            # The server reads its key as its own account and refuses a key others can read.
            for source, name in ((self.tls.cert, "server.crt"), (self.tls.key, "server.key")):
                shutil.copyfile(source, self.data_dir / name)
                os.chmod(self.data_dir / name, 0o600)
            options += " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
        if self.run_as:
            self.run_as.chown_tree(self.data_dir.parent)
        # The port may change between runs of the same cluster (tests): pass it explicitly.
        result = self._run(
            [server_binary("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path), "-w",
             "-t", str(int(timeout_s)), "-o", options, "start"],
            timeout_s=timeout_s + 10,
        )
        if result.returncode != 0:
            raise StackError(f"postgres did not start: {result.stderr.strip()}\n{_tail(self.log_path)}")
        wait_until(self.accepts_connections, timeout_s=timeout_s, what="postgres", log_path=self.log_path)
        return self

    def accepts_connections(self) -> bool:
        import psycopg2

        try:
            psycopg2.connect(self.admin_dsn).close()
            return True
        except psycopg2.OperationalError:
            return False

    def is_running(self) -> bool:
        return pid_alive(self.pid)

    def stop(self, mode: str = "fast", timeout_s: float = 60.0) -> None:
        if not self.is_running():
            return
        self._run([server_binary("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w",
                   "-t", str(int(timeout_s)), "stop"], timeout_s=timeout_s + 10)

    def kill(self) -> None:
        self.stop(mode="immediate")

    def destroy(self) -> None:
        """Stop the server and delete its cluster, also where it lives outside ``workdir`` (as root)."""
        self.kill()
        holder = self.data_dir.parent
        shutil.rmtree(self.data_dir if holder.is_relative_to(self.workdir) else holder, ignore_errors=True)
        link = self.workdir / "pgdata"
        if link.is_symlink():
            link.unlink()


def _reachable_by(path: Path, account: RunAs) -> bool:
    """Every ancestor of ``path`` lets ``account`` traverse it (o+x, or owned by it)."""
    for part in [path, *path.parents]:
        st = part.stat()
        if st.st_uid != account.uid and not st.st_mode & 0o001:
            return False
    return True


def _tail(path: Path) -> str:
    from iot_platform.stack.process import tail

    return f"--- last lines of {path} ---\n{tail(path)}"

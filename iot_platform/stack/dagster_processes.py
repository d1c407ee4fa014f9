"""The Dagster webserver and daemon of the local platform, and the first materializations `dev up` records.

Both get ``DAGSTER_HOME`` under the platform's home (the project's ``dagster.yaml`` plus PostgreSQL storage) and the
platform settings as ``IOT_*`` variables, so the services they launch use the same endpoints.
The daemon's process group also holds the code server and the run workers it starts, so stopping
that group stops the supervised bridge and consumer too.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from iot_platform.settings import Settings
from iot_platform.stack.ports import ensure_port_free
from iot_platform.stack.process import StackError, spawn, stop_group, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTANCE_CONFIG = REPO_ROOT / "dagster.yaml"
# Runs, event logs and schedule/sensor state in PostgreSQL (a database of its own). Not in the project's
# dagster.yaml, where `dg check defs` / `dg dev` (no DAGSTER_HOME) would fail on the unset IOT_PG_* variables.
# scheme: with SQLAlchemy 2.1 the default scheme does not pick psycopg2 (docs/design.md §4).
STORAGE_CONFIG = """
storage:
  postgres:
    postgres_db:
      username: {env: IOT_PG_USER}
      password: {env: IOT_PG_PASSWORD}
      hostname: {env: IOT_PG_HOST}
      port: {env: IOT_PG_PORT}
      db_name: {env: IOT_PG_DAGSTER_DATABASE}
      scheme: postgresql+psycopg2
      params:
        connect_timeout: 10
"""
DEFINITIONS_MODULE = "iot_platform.orchestration.definitions"
FIRST_MATERIALIZATIONS_MODULE = "iot_platform.orchestration.first_materializations"


def dagster_home(settings: Settings) -> Path:
    home = settings.home / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    if not INSTANCE_CONFIG.exists():
        raise StackError(f"{INSTANCE_CONFIG} is missing: run from a checkout of the repository")
    (home / "dagster.yaml").write_text(INSTANCE_CONFIG.read_text() + STORAGE_CONFIG)
    return home


def dagster_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in settings.child_env().items() if not k.startswith("DAGSTER_")}
    env["DAGSTER_HOME"] = str(dagster_home(settings))
    # Dagster's own storage connects through SQLAlchemy/libpq, which reads these (dagster.yaml cannot
    # pass them: its connection params take no environment variables).
    env["PGSSLMODE"] = settings.pg_sslmode
    if settings.pg_sslrootcert:
        env["PGSSLROOTCERT"] = str(settings.pg_sslrootcert)
    return env


def _workspace_args() -> list[str]:
    workspace = REPO_ROOT / "workspace.yaml"
    return ["-w", str(workspace)] if workspace.exists() else ["-m", DEFINITIONS_MODULE]


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def start_webserver(settings: Settings, log_dir: Path) -> int:
    ensure_port_free(settings.dagster_host, settings.dagster_port, "IOT_DAGSTER_PORT")
    process = spawn(
        [_bin("dagster-webserver"), "-h", settings.dagster_host, "-p", str(settings.dagster_port), *_workspace_args()],
        log_dir / "dagster-webserver.log",
        env=dagster_env(settings),
        cwd=REPO_ROOT,
    )
    wait_until(
        lambda: graphql_ready(settings.dagster_url),
        timeout_s=180,
        what="dagster webserver",
        alive=lambda: process.poll() is None,
        log_path=log_dir / "dagster-webserver.log",
        interval_s=1.0,
    )
    return process.pid


def start_daemon(settings: Settings, log_dir: Path, pass_fds: tuple[int, ...] = ()) -> int:
    """Start the daemon (``pass_fds``: open files it keeps for its lifetime, e.g. the platform lock)."""
    process = spawn(
        [_bin("dagster-daemon"), "run", *_workspace_args()],
        log_dir / "dagster-daemon.log",
        env=dagster_env(settings),
        cwd=REPO_ROOT,
        pass_fds=pass_fds,
    )
    return process.pid


@contextlib.contextmanager
def first_materializations(settings: Settings, log_dir: Path, applied: list[str],
                           progress: Callable[[str], None], timeout_s: float = 120.0) -> Iterator[None]:
    """Around the rest of `dev up`: record iot_schema and materialize tenant_roles and grafana_dashboards in the
    platform's instance, in a process of its own that runs beside the block (it takes a few seconds, mostly
    importing Dagster). After the block, wait for it and report; a failure is reported, not raised: the
    platform runs, and the scheduled runs materialize the same assets later. If the block fails, it is stopped."""
    log_path = log_dir / "first-materializations.log"
    process = spawn([sys.executable, "-m", FIRST_MATERIALIZATIONS_MODULE, "--applied", ",".join(applied)],
                    log_path, env=dagster_env(settings), cwd=REPO_ROOT)
    try:
        yield
    except BaseException:
        stop_group(process.pid)
        raise
    begin = time.monotonic()
    try:
        code = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_group(process.pid)
        progress(f"dagster: first materializations still running after {timeout_s:.0f} s, stopped; see {log_path}")
        return
    if code != 0:
        progress(f"dagster: first materializations failed (exit {code}); see {log_path}")
    else:
        progress(f"dagster: iot_schema, tenant_roles and grafana_dashboards materialized "
                 f"(waited {time.monotonic() - begin:.1f} s for them)")


def graphql(url: str, query: str, variables: dict | None = None, timeout_s: float = 10.0) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def graphql_ready(url: str) -> bool:
    try:
        return "version" in graphql(url, "{ version }", timeout_s=3).get("data", {})
    except (OSError, ValueError):
        return False

"""The Dagster webserver and daemon of the local platform.

Both get ``DAGSTER_HOME`` under the platform's home (with the repository's ``dagster.yaml``) and the
platform settings as ``IOT_*`` variables, so the services they launch use the same endpoints.
The daemon's process group also holds the code server and the run workers it starts, so stopping
that group stops the supervised bridge and consumer too.
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.request
from pathlib import Path

from iot_platform.settings import Settings
from iot_platform.stack.ports import ensure_port_free
from iot_platform.stack.process import StackError, spawn, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS_MODULE = "iot_platform.orchestration.definitions"


def dagster_home(settings: Settings) -> Path:
    home = settings.home / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    source = REPO_ROOT / "dagster.yaml"
    if not source.exists():
        raise StackError(f"{source} is missing: run from a checkout of the repository")
    shutil.copyfile(source, home / "dagster.yaml")
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


def start_daemon(settings: Settings, log_dir: Path) -> int:
    process = spawn(
        [_bin("dagster-daemon"), "run", *_workspace_args()],
        log_dir / "dagster-daemon.log",
        env=dagster_env(settings),
        cwd=REPO_ROOT,
    )
    return process.pid


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

"""The project's dagster.yaml holds no storage (so `dg check defs` / `dg dev` in the project root need no
variable); `dev up` installs it with PostgreSQL storage read from the IOT_PG_* variables."""

from __future__ import annotations

from pathlib import Path

import yaml

from iot_platform.settings import Settings
from iot_platform.stack.dagster_processes import INSTANCE_CONFIG, REPO_ROOT, dagster_home


def test_project_instance_config_needs_no_variable() -> None:
    assert INSTANCE_CONFIG == REPO_ROOT / "dagster.yaml" and (REPO_ROOT / "pyproject.toml").is_file()
    config = yaml.safe_load(INSTANCE_CONFIG.read_text())
    assert "storage" not in config and "{env:" not in INSTANCE_CONFIG.read_text()
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_dev_up_installs_it_with_postgres_storage(tmp_path: Path) -> None:
    """DAGSTER_HOME of the platform: the project's limits plus PostgreSQL storage from IOT_PG_* variables."""
    home = dagster_home(Settings(home=tmp_path))
    installed = yaml.safe_load((home / "dagster.yaml").read_text())
    assert installed["run_coordinator"] == yaml.safe_load(INSTANCE_CONFIG.read_text())["run_coordinator"]
    database = installed["storage"]["postgres"]["postgres_db"]
    assert database["username"] == {"env": "IOT_PG_USER"} and database["db_name"] == {"env": "IOT_PG_DAGSTER_DATABASE"}
    assert database["scheme"] == "postgresql+psycopg2"

"""The platform's Dagster instance config stays out of the project root, where `dg check defs` and `dg dev`
(without DAGSTER_HOME) would load it and fail on its IOT_PG_* variables; `dev up` installs it from the package."""

from __future__ import annotations

from pathlib import Path

import yaml

from iot_platform.settings import Settings
from iot_platform.stack.dagster_processes import INSTANCE_CONFIG, REPO_ROOT, dagster_home


def test_no_instance_config_in_the_project_root() -> None:
    assert (REPO_ROOT / "pyproject.toml").is_file()  # the root is where dg runs
    assert not (REPO_ROOT / "dagster.yaml").exists() and not (REPO_ROOT / "dagster.yml").exists()


def test_dev_up_installs_the_packaged_instance_config(tmp_path: Path) -> None:
    """DAGSTER_HOME of the platform gets the packaged file: PostgreSQL storage read from IOT_PG_* variables."""
    home = dagster_home(Settings(home=tmp_path))
    installed = (home / "dagster.yaml").read_text()
    assert installed == INSTANCE_CONFIG.read_text()
    database = yaml.safe_load(installed)["storage"]["postgres"]["postgres_db"]
    assert database["username"] == {"env": "IOT_PG_USER"} and database["db_name"] == {"env": "IOT_PG_DAGSTER_DATABASE"}

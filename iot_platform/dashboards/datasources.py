"""Grafana data sources of the platform: the provisioning file and the HTTP API payloads.

The provisioning file holds no secret and no address: Grafana substitutes ``${VAR}`` references
from its environment when it reads provisioning files, and ``deploy/compose.yaml`` sets those
variables (``IOT_GRAFANA_PG_ADDRESS``, ``IOT_GRAFANA_PG_DATABASE``, ``IOT_GRAFANA_PG_USER``,
``IOT_GRAFANA_PG_PASSWORD``). The HTTP payloads (:func:`datasource_payload`) carry concrete values
and are only ever sent to Grafana, never written to disk. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from iot_platform.dashboards.render import DATASOURCE_TYPE, DATASOURCE_UID

DATASOURCE_NAME = "IoT PostgreSQL"
POSTGRES_VERSION = 1500  # Grafana's encoding of 15.0: enables the features of PostgreSQL 15
ENV_ADDRESS = "IOT_GRAFANA_PG_ADDRESS"
ENV_DATABASE = "IOT_GRAFANA_PG_DATABASE"
ENV_USER = "IOT_GRAFANA_PG_USER"
ENV_PASSWORD = "IOT_GRAFANA_PG_PASSWORD"
ENV_SSLMODE = "IOT_GRAFANA_PG_SSLMODE"


def _json_data(database: str, sslmode: str) -> dict[str, Any]:
    return {
        "database": database,
        "sslmode": sslmode,
        "postgresVersion": POSTGRES_VERSION,
        "timescaledb": False,
        "maxOpenConns": 10,
        "maxIdleConns": 2,
        "connMaxLifetime": 14400,
    }


def provisioning_document() -> dict[str, Any]:
    """``datasources/*.yaml``: the analyst data source, every value that varies from the environment."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": DATASOURCE_NAME,
                "uid": DATASOURCE_UID,
                "type": DATASOURCE_TYPE,
                "access": "proxy",
                "url": f"${{{ENV_ADDRESS}}}",
                "user": f"${{{ENV_USER}}}",
                "isDefault": True,
                "editable": False,
                "jsonData": _json_data(f"${{{ENV_DATABASE}}}", f"${{{ENV_SSLMODE}}}"),
                "secureJsonData": {"password": f"${{{ENV_PASSWORD}}}"},
            }
        ],
    }


def dashboard_provider_document(container_path: str) -> dict[str, Any]:
    """``dashboards/*.yaml``: load the dashboard JSON files found at ``container_path``."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "iot-platform",
                "orgId": 1,
                "folder": "IoT platform",
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {"path": container_path, "foldersFromFilesStructure": False},
            }
        ],
    }


def datasource_payload(*, address: str, database: str, user: str, password: str, sslmode: str = "disable") -> dict[str, Any]:
    """Body of Grafana's data source API for the platform data source, logging in as ``user``."""
    return {
        "name": DATASOURCE_NAME,
        "uid": DATASOURCE_UID,
        "type": DATASOURCE_TYPE,
        "access": "proxy",
        "url": address,
        "user": user,
        "isDefault": True,
        "jsonData": _json_data(database, sslmode),
        "secureJsonData": {"password": password},
    }

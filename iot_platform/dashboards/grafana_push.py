"""Pushing data sources and dashboards through Grafana's HTTP API (grafana-client), idempotently.

Guarantee: every call is an upsert keyed on a stable name or uid (organisation by name, data
source by uid, dashboard by uid with ``overwrite``), so re-running converges to the same state and
never duplicates anything. Every HTTP call has the ``grafana_timeout_s`` timeout; errors raise
(grafana-client's exceptions), nothing is retried here: the Dagster asset's retry policy re-runs
the whole, idempotent push.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlsplit

from iot_platform.settings import Settings

MAIN_ORG_ID = 1


class GrafanaSession(Protocol):
    """The three operations the platform needs from Grafana."""

    def ensure_org(self, name: str) -> int: ...

    def upsert_datasource(self, org_id: int, payload: dict[str, Any]) -> None: ...

    def upsert_dashboard(self, org_id: int, model: dict[str, Any], folder_title: str | None = None) -> None: ...


class GrafanaHttp:
    """:class:`GrafanaSession` over Grafana's HTTP API with basic auth (the admin user)."""

    def __init__(self, url: str, user: str, password: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        self._options = dict(auth=(user, password), host=parts.hostname or "localhost", port=parts.port,
                             protocol=parts.scheme or "http", url_path_prefix=parts.path.strip("/"), timeout=timeout_s)
        self._user = user
        self._apis: dict[int | None, Any] = {}

    def _api(self, org_id: int | None = None) -> Any:
        from grafana_client import GrafanaApi  # imported here: only pushing needs the HTTP stack

        if org_id not in self._apis:
            self._apis[org_id] = GrafanaApi(organization_id=org_id, **self._options)
        return self._apis[org_id]

    def ensure_org(self, name: str) -> int:
        from grafana_client.client import GrafanaClientError

        api = self._api()
        try:
            org_id = int(api.organization.find_organization(name)["id"])
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            org_id = int(api.organization.create_organization({"name": name})["orgId"])
        try:  # the admin acts inside the organisation through X-Grafana-Org-Id: it must be a member
            api.organizations.organization_user_add(org_id, {"loginOrEmail": self._user, "role": "Admin"})
        except GrafanaClientError as exc:
            if exc.status_code != 409:  # 409: already a member
                raise
        return org_id

    def upsert_datasource(self, org_id: int, payload: dict[str, Any]) -> None:
        from grafana_client.client import GrafanaClientError

        api = self._api(org_id)
        try:
            api.datasource.get_datasource_by_uid(payload["uid"])
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            api.datasource.create_datasource(payload)
            return
        api.datasource.update_datasource_by_uid(payload["uid"], payload)

    def upsert_dashboard(self, org_id: int, model: dict[str, Any], folder_title: str | None = None) -> None:
        api = self._api(org_id)
        body: dict[str, Any] = {"dashboard": {**model, "id": None}, "overwrite": True,
                                "message": "iot-platform provisioning"}
        if folder_title:
            body["folderUid"] = self._ensure_folder(api, folder_title)
        api.dashboard.update_dashboard(body)

    @staticmethod
    def _ensure_folder(api: Any, title: str) -> str:
        uid = "iot-platform"
        from grafana_client.client import GrafanaClientError

        try:
            api.folder.get_folder(uid)
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            api.folder.create_folder(title, uid=uid)
        return uid


def session_from_settings(settings: Settings) -> GrafanaSession:
    if not settings.grafana_url:
        raise ValueError("IOT_GRAFANA_URL is not set")
    return GrafanaHttp(settings.grafana_url, settings.grafana_user, settings.grafana_password.get_secret_value(),
                       settings.grafana_timeout_s)


def grafana_pg_address(settings: Settings) -> str:
    """host:port of PostgreSQL as Grafana's server sees it."""
    return settings.grafana_pg_address or f"{settings.pg_host}:{settings.pg_port}"

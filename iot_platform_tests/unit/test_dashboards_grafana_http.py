"""GrafanaHttp against an in-process fake of Grafana's HTTP API on loopback: the real grafana-client
requests, paths and org header, and idempotent upserts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from iot_platform.dashboards.grafana_push import GrafanaHttp
from iot_platform.dashboards.provision import DASHBOARDS, push_tenant_org, push_to_grafana
from iot_platform.settings import Settings


class FakeGrafanaState:
    def __init__(self) -> None:
        self.orgs: dict[str, int] = {"Main Org.": 1}
        self.members: set[tuple[int, str]] = {(1, "admin")}
        self.datasources: dict[tuple[int, str], dict[str, Any]] = {}
        self.folders: set[tuple[int, str]] = set()
        self.dashboards: dict[tuple[int, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, int]] = []


def _handler(state: FakeGrafanaState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            org = int(self.headers.get("X-Grafana-Org-Id") or 1)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            path = self.path.split("?")[0].removeprefix("/api")
            state.requests.append((method, path, org))
            parts = path.strip("/").split("/")
            if method == "GET" and parts[:2] == ["orgs", "name"]:
                name = parts[2].replace("%20", " ")
                return self._reply(200, {"id": state.orgs[name]}) if name in state.orgs else self._reply(404, {"message": "not found"})
            if method == "POST" and parts == ["orgs"]:
                state.orgs[body["name"]] = len(state.orgs) + 1
                state.members.add((state.orgs[body["name"]], "admin"))
                return self._reply(200, {"orgId": state.orgs[body["name"]]})
            if method == "POST" and parts[0] == "orgs" and parts[2:] == ["users"]:
                key = (int(parts[1]), body["loginOrEmail"])
                if key in state.members:
                    return self._reply(409, {"message": "User is already member of this organization"})
                state.members.add(key)
                return self._reply(200, {"message": "added"})
            if (org, "admin") not in state.members:
                return self._reply(403, {"message": "not a member"})
            if parts[:2] == ["datasources", "uid"]:
                key = (org, parts[2])
                if method == "GET":
                    return self._reply(200, state.datasources[key]) if key in state.datasources else self._reply(404, {"message": "nf"})
                if method == "PUT" and key in state.datasources:
                    state.datasources[key] = body
                    return self._reply(200, {"message": "updated"})
            if method == "POST" and parts == ["datasources"]:
                if (org, body["uid"]) in state.datasources:
                    return self._reply(409, {"message": "exists"})
                state.datasources[(org, body["uid"])] = body
                return self._reply(200, {"message": "created"})
            if parts[0] == "folders":
                if method == "GET":
                    return self._reply(200, {"uid": parts[1]}) if (org, parts[1]) in state.folders else self._reply(404, {"message": "nf"})
                state.folders.add((org, body["uid"]))
                return self._reply(200, {"uid": body["uid"]})
            if method == "POST" and parts == ["dashboards", "db"]:
                assert body["overwrite"] is True and body["dashboard"]["id"] is None
                state.dashboards[(org, body["dashboard"]["uid"])] = body
                return self._reply(200, {"status": "success"})
            return self._reply(404, {"message": f"no route {method} {path}"})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

    return Handler


@pytest.fixture
def fake_grafana() -> Iterator[tuple[str, FakeGrafanaState]]:
    state = FakeGrafanaState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_push_through_grafana_client_is_idempotent(fake_grafana: tuple[str, FakeGrafanaState]) -> None:
    """Two pushes plus a tenant organisation, twice: one data source per org (created, then updated),
    each dashboard once per org, tenant calls carry the tenant org's header."""
    url, state = fake_grafana
    settings = Settings(grafana_url=url, grafana_password=SecretStr("admin"), tenant_password_key=SecretStr("k"),
                        grafana_timeout_s=5)
    for _ in range(2):
        push_to_grafana(settings)
        org = push_tenant_org(settings, GrafanaHttp(url, "admin", "admin", 5), "acme", "tenant_acme", "pw")
    assert org == 2 and state.orgs == {"Main Org.": 1, "Tenant acme": 2}
    assert set(state.datasources) == {(1, "iot-postgres"), (2, "iot-postgres")}
    assert state.datasources[(2, "iot-postgres")]["user"] == "tenant_acme"
    assert set(state.dashboards) == {(1, d.uid) for d in DASHBOARDS.values()} | {(2, "iot-tenant-telemetry")}
    assert ("PUT", "/datasources/uid/iot-postgres", 2) in state.requests

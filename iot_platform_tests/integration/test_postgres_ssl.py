"""PostgreSQL over TLS: `IOT_PG_SSLMODE=verify-full` with our CA connects encrypted; a foreign CA is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from iot_platform.settings import Settings
from iot_platform.stack.certs import server_certificate
from iot_platform.stack.databases import ensure_platform_role_and_databases
from iot_platform.stack.ports import free_port
from iot_platform.stack.postgres import PostgresServer
from iot_platform.storage.db import connect

pytestmark = pytest.mark.integration


@pytest.fixture
def ssl_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path / "pg", free_port(), tls=server_certificate(tmp_path / "tls", "postgres"))
    try:
        yield server.start()
    finally:
        server.destroy()


def test_verify_full_connects_encrypted_and_a_foreign_ca_is_refused(ssl_postgres: PostgresServer, tmp_path: Path) -> None:
    assert ssl_postgres.tls is not None
    settings = Settings(home=tmp_path / "home", pg_host="127.0.0.1", pg_port=ssl_postgres.port, pg_sslmode="verify-full",
                        pg_sslrootcert=ssl_postgres.tls.ca, pg_connect_timeout_s=5)
    ensure_platform_role_and_databases(ssl_postgres.admin_dsn, settings)
    for host in ("127.0.0.1", "localhost"):  # both are in the certificate's SANs
        conn = connect(settings.model_copy(update={"pg_host": host}))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                encrypted, version = cur.fetchone()
        finally:
            conn.close()
        assert encrypted and version.startswith("TLS")
    foreign = server_certificate(tmp_path / "other-ca", "x").ca
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        connect(settings.model_copy(update={"pg_sslrootcert": foreign}))
    assert "sslmode=verify-full" in settings.pg_dsn()

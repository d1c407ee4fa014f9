"""Roles and databases of the platform on a cluster we administer (local stack and tests)."""

from __future__ import annotations

import psycopg2
from psycopg2 import sql

from iot_platform.settings import Settings


def ensure_platform_role_and_databases(admin_dsn: str, settings: Settings, *databases: str) -> None:
    """The platform's login role (not a superuser: row-level security must apply to it) and its
    databases, created when missing. Idempotent."""
    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (settings.pg_user,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                sql.SQL("{} ROLE {} LOGIN CREATEROLE PASSWORD %s").format(sql.SQL(verb), sql.Identifier(settings.pg_user)),
                (settings.pg_password.get_secret_value(),),
            )
            for database in databases or (settings.pg_database, settings.pg_dagster_database):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cur.fetchone() is None:
                    cur.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(database), sql.Identifier(settings.pg_user)
                        )
                    )
    finally:
        conn.close()


def drop_database(admin_dsn: str, database: str) -> None:
    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    finally:
        conn.close()

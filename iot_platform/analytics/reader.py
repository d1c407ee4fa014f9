"""`Reader`: raw telemetry and live rollups as pandas DataFrames, read under row-level security.

Guarantee: a Reader is a login of its own as a tenant role or the analyst role, never the
platform's user, so PostgreSQL's row-level security decides which rows it returns: a tenant's
frames hold only that tenant's rows, whatever the call asks for. The login is checked when the
Reader opens: a role that may write ``iot.messages``, bypasses row-level security or is a
superuser (the platform's ``iot`` user, the ingest role) is refused. The session is read-only,
in UTC, with the platform's connect and statement timeouts; every value is a bound parameter.
Every read needs a time range and stops at ``limit`` rows (a :class:`TruncatedResultWarning` says so).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import pandas as pd
import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from pydantic import SecretStr

from iot_platform.analytics.frames import (
    DEFAULT_LIMIT,
    FIELD_ROLLUP_COLUMNS,
    MESSAGE_COLUMNS,
    RAW_PAYLOAD_COLUMNS,
    ROLLUP_COLUMNS,
    Column,
    FieldType,
    check_limit,
    field_columns,
    hours_overlapping,
    one_or_many,
    to_frame,
    utc_window,
)
from iot_platform.settings import Settings
from iot_platform.storage.db import connect
from iot_platform.storage.tenant_identity import derive_password, role_name_for


class ReaderLoginError(RuntimeError):
    """The Reader cannot log in safely; the message names what to change."""


class TruncatedResultWarning(UserWarning):
    """A read returned ``limit`` rows and more matched: narrow the range or raise the limit."""


# Who logged in, as the server sees it: session_user cannot be changed by SQL the session runs.
_LOGIN_CHECK = """
SELECT r.rolsuper, r.rolbypassrls,
       has_table_privilege(session_user, 'iot.messages', 'INSERT, UPDATE, DELETE, TRUNCATE'),
       pg_has_role(session_user, 'iot_tenant_reader', 'MEMBER') OR pg_has_role(session_user, 'iot_analyst', 'MEMBER')
FROM pg_roles r WHERE r.rolname = session_user
"""

# Each column of MESSAGE_COLUMNS, as read from iot.messages m.
_MESSAGE_VALUES = {c.name: sql.SQL("m.{}").format(sql.Identifier(c.name)) for c in MESSAGE_COLUMNS}
_MESSAGE_VALUES["payload_bytes"] = sql.SQL("octet_length(m.payload)")

# A payload field as the type asked for; a value of another JSON type is NULL. "float" is the
# numeric rule of the rollups (a JSON number that float8 can hold).
_FIELD_VALUE = {
    "float": "iot.rollup_numeric({value})",
    "int": "CASE WHEN jsonb_typeof({value}) = 'number' AND ({value})::numeric = trunc(({value})::numeric)"
           " AND abs(({value})::numeric) <= 9223372036854775807 THEN ({value})::numeric::bigint END",
    "string": "CASE WHEN jsonb_typeof({value}) = 'string' THEN {value} #>> '{{}}' END",
    "bool": "CASE WHEN jsonb_typeof({value}) = 'boolean' THEN ({value})::boolean END",
}


class Reader:
    """A read-only login to the platform database; use as a context manager (or call :meth:`close`)."""

    def __init__(self, conn: psycopg2.extensions.connection, role: str) -> None:
        self._conn = conn
        self.role = role

    # -- logging in -------------------------------------------------------------------------------
    @classmethod
    def for_tenant(cls, tenant_id: str, settings: Settings | None = None) -> "Reader":
        """Log in as ``tenant_id``'s role, its password derived from ``IOT_TENANT_PASSWORD_KEY``."""
        settings = settings or Settings()
        role = role_name_for(tenant_id, settings.tenant_role_prefix)
        return cls.login(role, _derived_password(settings, role), settings)

    @classmethod
    def for_analyst(cls, settings: Settings | None = None) -> "Reader":
        """Log in as the analyst role (every tenant), its password derived from ``IOT_TENANT_PASSWORD_KEY``."""
        settings = settings or Settings()
        return cls.login(settings.analyst_role, _derived_password(settings, settings.analyst_role), settings)

    @classmethod
    def login(cls, role: str, password: str, settings: Settings | None = None) -> "Reader":
        """Log in as ``role`` with ``password`` (e.g. from `iot-platform tenants password`) at IOT_PG_HOST:IOT_PG_PORT."""
        settings = (settings or Settings()).model_copy(update={"pg_user": role, "pg_password": SecretStr(password)})
        try:
            conn = connect(settings, autocommit=True)
        except psycopg2.OperationalError as exc:
            raise ReaderLoginError(f"cannot log in as {role!r} at {settings.pg_host}:{settings.pg_port}/"
                                   f"{settings.pg_database}: {str(exc).strip()} (check IOT_PG_HOST, IOT_PG_PORT, "
                                   "the role's password and IOT_TENANT_PASSWORD_KEY)") from None
        try:
            _refuse_unsafe_login(conn, role)
            conn.set_session(readonly=True)
            with conn.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'; SET jit = off")  # jit: see migration 060
        except BaseException:
            conn.close()
            raise
        return cls(conn, role)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- reads ------------------------------------------------------------------------------------
    def messages(
        self,
        since: datetime,
        until: datetime,
        *,
        tenant: str | Sequence[str] | None = None,
        project: str | Sequence[str] | None = None,
        device: str | Sequence[str] | None = None,
        fields: Mapping[str, FieldType] | None = None,
        raw: bool = False,
        limit: int = DEFAULT_LIMIT,
    ) -> pd.DataFrame:
        """Raw rows of ``iot.messages`` received in ``[since, until)``, oldest first.

        ``fields`` adds one column per top-level payload field, typed as asked (``{"temperature":
        "float", "status": "string"}``); a value of another JSON type, or a missing field, is NA.
        ``raw`` adds ``payload`` (the exact bytes) and ``payload_json`` (parsed, or None).
        """
        start, end = utc_window(since, until)
        expanded = field_columns(fields)
        columns = MESSAGE_COLUMNS + (RAW_PAYLOAD_COLUMNS if raw else ()) + expanded
        values = [_MESSAGE_VALUES[c.name] for c in MESSAGE_COLUMNS]
        if raw:
            values += [sql.SQL("m.payload"), sql.SQL("m.payload_json")]
        params: dict[str, Any] = {"since": start, "until": end}
        for index, (name, kind) in enumerate((fields or {}).items()):
            params[f"field{index}"] = name
            value = sql.SQL("(m.payload_json -> {})").format(sql.Placeholder(f"field{index}"))
            values.append(sql.SQL(_FIELD_VALUE[kind]).format(value=value))
        filters = [sql.SQL("m.received_at >= %(since)s AND m.received_at < %(until)s")]
        filters += self._any_of(params, tenant=tenant, project=project, device=device)
        query = sql.SQL("SELECT {} FROM iot.messages m WHERE {} ORDER BY m.received_at, m.kafka_partition, m.kafka_offset").format(
            sql.SQL(", ").join(values), sql.SQL(" AND ").join(filters))
        return self._frame(query, params, columns, limit, what="messages")

    def rollups(
        self,
        since: datetime,
        until: datetime,
        *,
        tenant: str | Sequence[str] | None = None,
        project: str | Sequence[str] | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> pd.DataFrame:
        """Hourly counts of ``iot.rollup_hourly_live`` for every hour overlapping ``[since, until)``,
        the current hour included (aggregated from raw rows when it is read)."""
        first, end = hours_overlapping(since, until)
        params: dict[str, Any] = {"first": first, "until": end}
        filters = [sql.SQL("hour >= %(first)s AND hour < %(until)s"), *self._any_of(params, tenant=tenant, project=project)]
        query = sql.SQL("SELECT {} FROM iot.rollup_hourly_live WHERE {} ORDER BY hour, tenant_id, project_id").format(
            sql.SQL(", ").join(sql.Identifier(c.name) for c in ROLLUP_COLUMNS), sql.SQL(" AND ").join(filters))
        return self._frame(query, params, ROLLUP_COLUMNS, limit, what="rollups")

    def field_rollups(
        self,
        since: datetime,
        until: datetime,
        *,
        fields: str | Sequence[str] | None = None,
        tenant: str | Sequence[str] | None = None,
        project: str | Sequence[str] | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> pd.DataFrame:
        """Hourly count/min/max/avg/sum of numeric payload fields (``iot.rollup_hourly_fields_live``)
        for every hour overlapping ``[since, until)``, the current hour included."""
        first, end = hours_overlapping(since, until)
        params: dict[str, Any] = {"first": first, "until": end}
        filters = [sql.SQL("hour >= %(first)s AND hour < %(until)s"),
                   *self._any_of(params, tenant=tenant, project=project, field=fields)]
        query = sql.SQL("SELECT {} FROM iot.rollup_hourly_fields_live WHERE {} ORDER BY hour, tenant_id, project_id, field").format(
            sql.SQL(", ").join(sql.Identifier(c.name) for c in FIELD_ROLLUP_COLUMNS), sql.SQL(" AND ").join(filters))
        return self._frame(query, params, FIELD_ROLLUP_COLUMNS, limit, what="field rollups")

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _any_of(params: dict[str, Any], **filters: str | Sequence[str] | None) -> list[sql.Composable]:
        column = {"tenant": "tenant_id", "project": "project_id", "device": "device_id", "field": "field"}
        clauses: list[sql.Composable] = []
        for name, value in filters.items():
            values = one_or_many(name, value)
            if values is not None:
                params[name] = values
                clauses.append(sql.SQL("{} = ANY({})").format(sql.Identifier(column[name]), sql.Placeholder(name)))
        return clauses

    def _frame(self, query: sql.Composable, params: dict[str, Any], columns: Sequence[Column], limit: int,
               *, what: str) -> pd.DataFrame:
        params["limit"] = check_limit(limit) + 1  # one more tells whether rows were left out
        with self._conn.cursor() as cur:
            cur.execute(query + sql.SQL(" LIMIT %(limit)s"), params)
            rows = cur.fetchall()
        frame = to_frame(rows[:limit], columns)
        frame.attrs["truncated"] = len(rows) > limit
        if frame.attrs["truncated"]:
            warnings.warn(f"{what}: the first {limit:,} rows only; narrow the time range or raise limit",
                          TruncatedResultWarning, stacklevel=3)
        return frame


def _derived_password(settings: Settings, role: str) -> str:
    if settings.tenant_password_key is None:
        raise ReaderLoginError(f"IOT_TENANT_PASSWORD_KEY is not set, so the password of {role!r} cannot be derived: "
                               "set it, or use Reader.login(role, password)")
    return derive_password(settings.tenant_password_key.get_secret_value(), role)


def _refuse_unsafe_login(conn: psycopg2.extensions.connection, role: str) -> None:
    with conn.cursor() as cur:
        cur.execute(_LOGIN_CHECK)
        superuser, bypass, writes, reader = cur.fetchone()
    if superuser or bypass or writes:
        raise ReaderLoginError(f"role {role!r} can write iot.messages or bypass row-level security: log in as a tenant "
                               "role (Reader.for_tenant) or the analyst role (Reader.for_analyst), which only read")
    if not reader:
        raise ReaderLoginError(f"role {role!r} is neither a tenant role nor the analyst role: run `iot-platform tenants "
                               "sync`, or log in as one of those roles")

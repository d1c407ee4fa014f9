"""PostgreSQL connections with timeouts, and the line between infrastructure and data errors.

Every connection the platform opens comes from :func:`connect`: it carries ``connect_timeout``,
a session ``statement_timeout`` and TCP keepalives, so no call can hang on a dead server.
:func:`is_infrastructure_error` tells "the database is unavailable, retry later" apart from
"this data is bad"; :func:`retry_infrastructure` retries the former with the platform's retry
policy (:data:`DATABASE_BACKOFF`, :mod:`iot_platform.core.retry`) and lets the latter propagate at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from iot_platform.core.retry import Backoff, retry
from iot_platform.errors import InvalidConfiguration, PlatformError, Unreachable, first_line
from iot_platform.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATE classes that mean the server, not the data, is the problem: connection exceptions (08),
# insufficient resources (53), lock not available under lock_timeout (55), operator intervention
# incl. admin shutdown (57), system errors (58), and the transaction rollbacks (40: serialization
# failure, deadlock) that succeed on retry.
_INFRA_SQLSTATE_CLASSES = ("08", "40", "53", "55", "57", "58", "XX")
# A schema not migrated yet (undefined table or schema) is retried too: it heals once migrations run.
_NOT_READY_SQLSTATES = ("42P01", "3F000")
# libpq's words for a connection refused over its settings rather than for want of a server.
_REFUSED_LOGIN = ("authentication failed", "no pg_hba.conf entry", "role \"")
_TLS = ("ssl", "certificate")
# Waits between attempts against an unavailable database: 0.25-0.5 s at first, then up to 5-10 s.
DATABASE_BACKOFF = Backoff(initial_s=0.5, maximum_s=10.0)


def connect(settings: Settings, database: str | None = None, *, autocommit: bool = False) -> psycopg2.extensions.connection:
    """A new connection to ``database`` (default ``settings.pg_database``) with timeouts set and
    TLS as ``IOT_PG_SSLMODE`` / ``IOT_PG_SSLROOTCERT`` ask (verify-full checks the CA and host name).

    ``statement_timeout`` comes from settings; keepalives detect a server that vanished without
    closing the socket (a stopped VM, a cut network) within about 30 s instead of hours.
    """
    conn = psycopg2.connect(
        host=settings.pg_host,
        port=settings.pg_port,
        user=settings.pg_user,
        password=settings.pg_password.get_secret_value(),
        dbname=database or settings.pg_database,
        connect_timeout=settings.pg_connect_timeout_s,
        options=f"-c statement_timeout={int(settings.pg_statement_timeout_ms)}",
        application_name="iot-platform",
        sslmode=settings.pg_sslmode,
        **({"sslrootcert": str(settings.pg_sslrootcert)} if settings.pg_sslrootcert else {}),
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=4,
    )
    conn.autocommit = autocommit
    return conn


def is_infrastructure_error(exc: BaseException) -> bool:
    """True when ``exc`` means "database unavailable or overloaded": retry, never dead-letter."""
    if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return True
    if isinstance(exc, psycopg2.errors.QueryCanceled):  # statement_timeout: the server is too slow
        return True
    if isinstance(exc, psycopg2.Error):
        code = exc.pgcode or ""
        return code[:2] in _INFRA_SQLSTATE_CLASSES or code in _NOT_READY_SQLSTATES
    return isinstance(exc, (ConnectionError, TimeoutError))


def retry_infrastructure(
    operation: Callable[[], T],
    *,
    description: str,
    should_stop: Callable[[], bool] = lambda: False,
    policy: Backoff = DATABASE_BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``operation`` until it succeeds, retrying only infrastructure errors with ``policy``'s backoff.

    Data errors propagate on the first attempt. When ``should_stop()`` turns true between attempts
    the last infrastructure error is raised, so a stopping service never spins forever.
    """

    def log_retry(exc: Exception, attempt: int, delay: float) -> None:
        log.warning(
            "database unavailable, retrying",
            extra={"operation": description, "attempt": attempt, "retry_in_s": round(delay, 2), "error": str(exc).strip()[:300]},
        )

    return retry(operation, policy=policy, retryable=is_infrastructure_error, should_stop=should_stop, on_retry=log_retry, sleep=sleep)


def database_failure(exc: BaseException, settings: Settings) -> PlatformError | None:
    """The one line a person can act on for a PostgreSQL error, or None when it is not an expected one (a bug).

    Refused logins, TLS and a missing database name their settings (retrying cannot help); a server
    that does not answer or is unavailable is :class:`Unreachable`; a database without the platform's
    schema says to migrate.
    """
    if not isinstance(exc, psycopg2.Error):
        return None
    where = f"PostgreSQL at {settings.pg_host}:{settings.pg_port}"
    text = first_line(exc)
    if isinstance(exc, psycopg2.OperationalError) and exc.pgcode is None:  # libpq could not open or keep the session
        lowered = text.lower()
        if any(words in lowered for words in _REFUSED_LOGIN):
            return InvalidConfiguration(f"{where} refused user {settings.pg_user!r}: {text} (IOT_PG_USER, IOT_PG_PASSWORD)")
        if "database" in lowered and "does not exist" in lowered:
            return InvalidConfiguration(f"{where} has no database {settings.pg_database!r} (IOT_PG_DATABASE; `iot-platform dev up` creates it)")
        if any(words in lowered for words in _TLS):
            return InvalidConfiguration(f"TLS to {where} failed: {text} (IOT_PG_SSLMODE, IOT_PG_SSLROOTCERT)")
        return Unreachable.service("PostgreSQL", f"{settings.pg_host}:{settings.pg_port}", "IOT_PG_HOST, IOT_PG_PORT", text)
    if isinstance(exc, (psycopg2.errors.UndefinedTable, psycopg2.errors.InvalidSchemaName)):
        return PlatformError(f"{where}: database {settings.pg_database!r} lacks the platform's schema ({text}): run `iot-platform migrate`")
    if isinstance(exc, psycopg2.errors.InsufficientPrivilege):
        return InvalidConfiguration(f"{where}: user {settings.pg_user!r} may not do this: {text} (IOT_PG_USER)")
    if is_infrastructure_error(exc):
        return Unreachable(f"{where} is unavailable: {text} (try again later)")
    return None

"""PostgreSQL connections with timeouts, and the line between infrastructure and data errors.

Every connection the platform opens comes from :func:`connect`: it carries ``connect_timeout``,
a session ``statement_timeout`` and TCP keepalives, so no call can hang on a dead server.
:func:`is_infrastructure_error` tells "the database is unavailable, retry later" apart from
"this data is bad"; :func:`retry_infrastructure` retries the former with jittered exponential
backoff and lets the latter propagate at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions

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


def backoff_delays(initial_s: float = 0.5, maximum_s: float = 10.0) -> Iterator[float]:
    """Endless jittered exponential backoff: uniform(initial/2, min(maximum, initial * 2**n))."""
    ceiling = initial_s
    while True:
        yield random.uniform(initial_s / 2, ceiling)
        ceiling = min(maximum_s, ceiling * 2)


def retry_infrastructure(
    operation: Callable[[], T],
    *,
    description: str,
    should_stop: Callable[[], bool] = lambda: False,
    initial_s: float = 0.5,
    maximum_s: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``operation`` until it succeeds, retrying only infrastructure errors with jittered backoff.

    Data errors propagate on the first attempt. When ``should_stop()`` turns true between attempts
    the last infrastructure error is raised, so a stopping service never spins forever.
    """
    attempt = 0
    for delay in backoff_delays(initial_s, maximum_s):
        attempt += 1
        try:
            return operation()
        except Exception as exc:  # noqa: BLE001 - classified just below
            if not is_infrastructure_error(exc) or should_stop():
                raise
            log.warning(
                "database unavailable, retrying",
                extra={"operation": description, "attempt": attempt, "retry_in_s": round(delay, 2), "error": str(exc).strip()[:300]},
            )
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


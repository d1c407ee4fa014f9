"""Which exceptions escaping a command are failures a person can act on, and the one line each becomes.

:class:`iot_platform.errors.PlatformError` and its kinds say so themselves. Library errors are
translated here with the settings that name the endpoint: PostgreSQL's by
:func:`iot_platform.storage.db.database_failure`, Kafka's below. Anything else is a bug and keeps
its traceback. A library is consulted only when a command imported it, so `iot-platform bridge`
imports no database driver to fail.
"""

from __future__ import annotations

import sys

from iot_platform.access.kafka_credentials import authentication_message, is_authentication_failure
from iot_platform.errors import InvalidConfiguration, PlatformError, Unreachable
from iot_platform.settings import Settings

# librdkafka's local error codes for a cluster that did not answer (KafkaError._TRANSPORT, ...).
_KAFKA_UNREACHABLE = frozenset({"_TRANSPORT", "_TIMED_OUT", "_ALL_BROKERS_DOWN", "_RESOLVE", "_MSG_TIMED_OUT", "REQUEST_TIMED_OUT"})
_KAFKA_TLS = frozenset({"_SSL", "_CRYPT"})


def expected_failure(exc: BaseException, settings: Settings | None) -> PlatformError | None:
    """``exc`` as a :class:`PlatformError` when it is an expected failure, else None."""
    if isinstance(exc, PlatformError):
        return exc
    if settings is None:
        return None
    if "psycopg2" in sys.modules:
        from iot_platform.storage.db import database_failure

        if (failure := database_failure(exc, settings)) is not None:
            return failure
    if "confluent_kafka" in sys.modules:
        return kafka_failure(exc, settings)
    return None


def kafka_failure(exc: BaseException, settings: Settings) -> PlatformError | None:
    from confluent_kafka import KafkaError, KafkaException

    if not isinstance(exc, KafkaException) or not exc.args or not isinstance(exc.args[0], KafkaError):
        return None
    error: KafkaError = exc.args[0]
    if is_authentication_failure(error.code()):
        return InvalidConfiguration(authentication_message(error.str()))
    if error.name() in _KAFKA_TLS:
        return InvalidConfiguration(
            f"TLS to Kafka at {settings.kafka_bootstrap} failed: {error.str()} (IOT_KAFKA_SECURITY_PROTOCOL, IOT_KAFKA_SSL_CA_FILE)")
    if error.name() in _KAFKA_UNREACHABLE:
        return Unreachable.service("Kafka", settings.kafka_bootstrap, "IOT_KAFKA_BOOTSTRAP", error.str())
    return None

"""Kafka refusing our credentials is a misconfiguration, not an outage (pure).

librdkafka reports a failed SASL handshake as a non-fatal error (``_AUTHENTICATION``) and retries
forever; the services treat it as fatal instead and exit non-zero naming the settings to fix.
"""

from __future__ import annotations

AUTHENTICATION_FAILED = -169  # KafkaError._AUTHENTICATION (librdkafka RD_KAFKA_RESP_ERR__AUTHENTICATION)
SETTINGS_HINT = "check IOT_KAFKA_SASL_USERNAME / IOT_KAFKA_SASL_PASSWORD (and IOT_KAFKA_SECURITY_PROTOCOL, IOT_KAFKA_SASL_MECHANISM)"


def is_authentication_failure(code: int) -> bool:
    return code == AUTHENTICATION_FAILED


def authentication_message(detail: str) -> str:
    return f"Kafka refused the credentials: {SETTINGS_HINT} ({detail})"

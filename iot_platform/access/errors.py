"""The expected failures of the access commands, each printed as one line (no traceback)."""

from __future__ import annotations

import psycopg2
import psycopg2.errors

from iot_platform.access.connection import MqttSetupError
from iot_platform.access.dynsec import BrokerUnavailable, DynsecError
from iot_platform.access.names import InvalidId
from iot_platform.access.operations import AccessError

EXPECTED = (AccessError, BrokerUnavailable, DynsecError, InvalidId, MqttSetupError, psycopg2.Error)


def one_line(exc: BaseException) -> str:
    if isinstance(exc, psycopg2.errors.UndefinedTable):
        return "the registry tables do not exist: run `iot-platform migrate`"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

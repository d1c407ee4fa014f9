"""A client of Mosquitto's dynamic-security API (``$CONTROL/dynamic-security/v1``) over paho.

Each request is one PUBLISH of a batch of commands (QoS 1) answered by one message on the response
topic; the answers are matched by ``correlationData``. Every wait is bounded by
``IOT_DYNSEC_TIMEOUT_S``. Commands in a batch are not atomic: each succeeds or fails on its own, and
:meth:`DynsecClient.execute` raises on the first failed one (the callers order their writes so that a
failure leaves nothing half-done, see :mod:`iot_platform.access.operations`).
"""

from __future__ import annotations

import json
import queue
import ssl
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt

from iot_platform.access.connection import MqttCredentials, MqttSetupError, admin_credentials, configure
from iot_platform.access.dynsec_json import parse_state
from iot_platform.access.state import BrokerState
from iot_platform.errors import PlatformError, Unreachable
from iot_platform.settings import Settings

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
_BATCH = 200  # commands per request: keeps one request far below the broker's max_packet_size


class BrokerUnavailable(Unreachable):
    """The broker could not be reached or did not answer in time; the message names the setting (a refused
    admin login or a failed TLS handshake is an :class:`~iot_platform.access.connection.MqttSetupError`)."""


class DynsecError(PlatformError):
    """The plugin refused a command (``error`` is its text, e.g. 'Client already exists')."""

    def __init__(self, command: str, error: str) -> None:
        super().__init__(f"broker refused {command}: {error}")
        self.command, self.error = command, error


class DynsecClient:
    """One admin connection; use as a context manager."""

    def __init__(self, settings: Settings, credentials: MqttCredentials | None = None) -> None:
        self.settings = settings
        self.timeout_s = settings.dynsec_timeout_s
        self._credentials = credentials or admin_credentials(settings)
        self._responses: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._client: mqtt.Client | None = None

    def __enter__(self) -> "DynsecClient":
        connected, subscribed = threading.Event(), threading.Event()
        result: dict[str, Any] = {}
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"iot-admin-{uuid.uuid4().hex[:10]}", protocol=mqtt.MQTTv5)
        configure(client, self.settings, self._credentials)

        def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            result["rc"] = rc
            connected.set()

        client.on_connect = on_connect
        client.on_subscribe = lambda *_args: subscribed.set()
        client.on_message = lambda _c, _u, m: self._responses.put(json.loads(m.payload))
        where = f"{self.settings.mqtt_url} (IOT_MQTT_URL)"
        try:
            client.connect(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=30)
        except ssl.SSLError as exc:  # the broker answered, but not with a certificate our CA signed for its name
            raise MqttSetupError(f"TLS to the MQTT broker at {self.settings.mqtt_url} failed: {exc} (IOT_MQTT_CA_FILE, IOT_MQTT_URL)") from exc
        except OSError as exc:  # refused, unreachable
            raise BrokerUnavailable(f"cannot reach the MQTT broker at {where}: {exc}") from exc
        client.loop_start()
        self._client = client
        if not connected.wait(self.timeout_s):
            self.close()
            raise BrokerUnavailable(f"the MQTT broker at {where} did not answer within {self.timeout_s} s (IOT_DYNSEC_TIMEOUT_S)")
        if result["rc"].is_failure:
            self.close()
            raise MqttSetupError(
                f"the MQTT broker at {self.settings.mqtt_url} refused the admin client {self._credentials.username!r}: {result['rc']}"
                " (IOT_MQTT_ADMIN_USERNAME, IOT_MQTT_ADMIN_PASSWORD)"
            )
        client.subscribe(RESPONSE_TOPIC, qos=1)
        if not subscribed.wait(self.timeout_s):
            self.close()
            raise BrokerUnavailable(f"no SUBACK from the MQTT broker at {where} within {self.timeout_s} s")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def request(self, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send commands (in batches) and return the plugin's responses, in order; errors are not raised."""
        responses: list[dict[str, Any]] = []
        for start in range(0, len(commands), _BATCH):
            responses += self._request(list(commands[start : start + _BATCH]))
        return responses

    def _request(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        assert self._client is not None, "use DynsecClient as a context manager"
        correlation = uuid.uuid4().hex
        tagged = [dict(c, correlationData=f"{correlation}:{i}") for i, c in enumerate(commands)]
        self._client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
        try:
            while True:
                answer = self._responses.get(timeout=self.timeout_s)
                responses = answer.get("responses", [])
                if responses and str(responses[0].get("correlationData", "")).startswith(f"{correlation}:"):
                    return responses
        except queue.Empty:
            raise BrokerUnavailable(
                f"the broker's dynamic-security plugin did not answer within {self.timeout_s} s (IOT_DYNSEC_TIMEOUT_S);"
                " is the plugin loaded?"
            ) from None

    def execute(self, commands: Sequence[dict[str, Any]], *, tolerate: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        """Like :meth:`request`, raising DynsecError for the first failed command (unless its error is tolerated)."""
        responses = self.request(commands)
        for response in responses:
            error = response.get("error")
            if error and error not in tolerate:
                raise DynsecError(str(response.get("command")), str(error))
        return responses

    def read_state(self) -> BrokerState:
        """Every client, role and group the plugin holds."""
        clients, roles, groups = self.execute(
            [
                {"command": "listClients", "verbose": True},
                {"command": "listRoles", "verbose": True},
                {"command": "listGroups", "verbose": True},
            ]
        )
        return parse_state(clients["data"]["clients"], roles["data"]["roles"], groups["data"]["groups"])

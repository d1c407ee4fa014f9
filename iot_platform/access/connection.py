"""How every MQTT client of the platform connects: credentials, and TLS that verifies the broker.

With an ``mqtts://`` URL the client trusts only ``IOT_MQTT_CA_FILE`` (or the system's CAs when it is
unset) and checks the broker's host name against its certificate (paho's default; never disabled here).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from paho.mqtt.client import Client
from pydantic import SecretStr

from iot_platform.errors import InvalidConfiguration
from iot_platform.settings import Settings


@dataclass(frozen=True)
class MqttCredentials:
    username: str
    password: SecretStr
    client_id: str | None = None  # a client bound to one client id must connect with it


class MqttSetupError(InvalidConfiguration):
    """A setting the connection needs is missing or wrong; the message names it."""


def bridge_credentials(settings: Settings) -> MqttCredentials | None:
    """The bridge's credentials; None without a password (the service refuses to start then, see require_bridge_credentials)."""
    if not settings.mqtt_username or settings.mqtt_password is None:
        return None
    return MqttCredentials(settings.mqtt_username, settings.mqtt_password)


def require_bridge_credentials(settings: Settings) -> MqttCredentials:
    credentials = bridge_credentials(settings)
    if credentials is None:
        raise MqttSetupError("IOT_MQTT_USERNAME / IOT_MQTT_PASSWORD are not set: the broker admits no anonymous client (`dev up` writes the password to IOT_HOME/secrets/)")
    return credentials


def admin_credentials(settings: Settings) -> MqttCredentials:
    if settings.mqtt_admin_password is None:
        raise MqttSetupError("IOT_MQTT_ADMIN_PASSWORD is not set; `dev up` writes it to IOT_HOME/secrets/")
    return MqttCredentials(settings.mqtt_admin_username, settings.mqtt_admin_password)


def configure(client: Client, settings: Settings, credentials: MqttCredentials | None) -> None:
    """Credentials and, for mqtts://, TLS with the configured CA (host name verified)."""
    if credentials is not None:
        client.username_pw_set(credentials.username, credentials.password.get_secret_value())
    if settings.mqtt_tls:
        ca = settings.mqtt_ca_file
        if ca is not None and not ca.is_file():
            raise MqttSetupError(f"IOT_MQTT_CA_FILE {ca} does not exist")
        client.tls_set(ca_certs=str(ca) if ca else None, cert_reqs=ssl.CERT_REQUIRED)

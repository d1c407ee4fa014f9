"""The platform's Dagster resources: the PostgreSQL database, and the rest of the settings, both typed.

:class:`PostgresResource` is the platform database every asset, check and sensor that touches it
asks for, so the UI shows (and the launchpad can change) where it is. :class:`PlatformSettings`
carries every other setting: one optional field per :class:`~iot_platform.settings.Settings`
field, with its name, description and a Dagster config type, generated from that one settings
object so the two cannot drift. Unset fields take the process's ``IOT_*`` environment (or the
setting's default) when the resource is used.

:func:`platform_resources` builds both from the ``IOT_*`` environment for the code location:
values are shown in the UI, secrets only as ``dg.EnvVar`` references (or masked, when a secret
takes its default). Tests hand explicit settings
in through the same function (``platform_resources(settings)``); the same values then reach the
service subprocesses. Nothing is required: ``dg check defs`` and ``dg dev`` load with no variable set.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field, SecretStr, create_model
from pydantic_settings import EnvSettingsSource

from iot_platform.settings import Settings

# Settings field -> PostgresResource field.
DATABASE_FIELDS = {
    "pg_host": "host", "pg_port": "port", "pg_user": "user", "pg_password": "password", "pg_database": "database",
    "pg_sslmode": "sslmode", "pg_sslrootcert": "sslrootcert", "pg_connect_timeout_s": "connect_timeout_s",
    "pg_statement_timeout_ms": "statement_timeout_ms",
}
_DEFAULTS = Settings.model_fields
# How dagster 1.13 marks a pythonic config field secret: the UI shows "****" for a value set in code
# (read in dagster._config.pythonic_config.conversion_utils; a unit test checks it still holds).
SECRET = {"dagster__is_secret": True}


def _env_var(name: str) -> str:
    return f"IOT_{name.upper()}"


class PostgresResource(dg.ConfigurableResource):
    """The platform database (schema ``iot``); every connection has the connect and statement timeouts below."""

    host: str = Field(default=_DEFAULTS["pg_host"].default, description="PostgreSQL host (IOT_PG_HOST).")
    port: int = Field(default=_DEFAULTS["pg_port"].default, description="PostgreSQL port (IOT_PG_PORT).")
    user: str = Field(default=_DEFAULTS["pg_user"].default, description="The platform's role (IOT_PG_USER).")
    password: str = Field(description="Its password; configure it as dg.EnvVar('IOT_PG_PASSWORD').", json_schema_extra=SECRET)
    database: str = Field(default=_DEFAULTS["pg_database"].default, description="Database of the telemetry (IOT_PG_DATABASE).")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(
        default=_DEFAULTS["pg_sslmode"].default, description="libpq sslmode (IOT_PG_SSLMODE).")
    sslrootcert: str | None = Field(default=None, description="CA certificate (PEM) for verify-ca / verify-full (IOT_PG_SSLROOTCERT).")
    connect_timeout_s: int = Field(default=_DEFAULTS["pg_connect_timeout_s"].default, gt=0,
                                   description="Connect timeout in seconds (IOT_PG_CONNECT_TIMEOUT_S).")
    statement_timeout_ms: int = Field(default=_DEFAULTS["pg_statement_timeout_ms"].default, gt=0,
                                      description="statement_timeout of every session (IOT_PG_STATEMENT_TIMEOUT_MS).")

    def settings_values(self) -> dict[str, Any]:
        """This database as ``pg_*`` values of :class:`Settings`."""
        return {setting: getattr(self, field) for setting, field in DATABASE_FIELDS.items()}

    def child_env(self) -> dict[str, str]:
        """This database as ``IOT_PG_*`` variables, for a service subprocess."""
        return {_env_var(setting): str(value) for setting, value in self.settings_values().items() if value is not None}


def _is_secret(name: str) -> bool:
    annotation = Settings.model_fields[name].annotation
    return SecretStr in (annotation, *typing.get_args(annotation))


def _config_type(annotation: Any) -> type:
    """The Dagster config type of a Settings annotation: str, int, float or bool (paths, secrets and choices as str)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    (base,) = [a for a in typing.get_args(annotation) if a is not type(None)] if union else [annotation]
    return base if base in (str, int, float, bool) else str


_SettingsFields = create_model(  # type: ignore[call-overload]
    "_SettingsFields",
    __base__=dg.ConfigurableResource,
    **{
        name: (_config_type(field.annotation) | None,
               Field(default=None, description=field.description, json_schema_extra=SECRET if _is_secret(name) else None))
        for name, field in Settings.model_fields.items() if name not in DATABASE_FIELDS
    },
)


class PlatformSettings(_SettingsFields):  # type: ignore[misc, valid-type]
    """Every setting but the database's (one optional field per ``IOT_*`` setting, unset: the environment)."""

    def explicit_values(self) -> dict[str, Any]:
        return {name: value for name, value in self.model_dump().items() if value is not None and name in Settings.model_fields}

    def get(self, postgres: PostgresResource | None = None) -> Settings:
        """The settings, with the database of ``postgres`` when given (else the environment's)."""
        return Settings(**self.explicit_values(), **(postgres.settings_values() if postgres else {}))

    def child_env(self) -> dict[str, str]:
        """Extra environment of a service subprocess (which also inherits this process's IOT_* variables).

        ``IOT_EXIT_WITH_PARENT`` makes the service stop when its run worker dies, so a SIGKILLed
        worker never leaves an orphan beside the replacement run the watchdog starts.
        """
        env = {_env_var(name): str(value).lower() if isinstance(value, bool) else str(value)
               for name, value in self.explicit_values().items()}
        return {**env, "IOT_EXIT_WITH_PARENT": "true"}


def _config_value(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value) if isinstance(value, Path) else value


def platform_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    """``platform`` and ``postgres`` for a code location (``settings`` None) or a test (explicit settings).

    From the environment, only the variables that are set become configuration (defaults that are
    computed per process, such as the bridge id, stay computed), and secrets are ``dg.EnvVar``
    references: the UI shows the variable's name, never its value.
    """
    if settings is not None:
        values = {name: _config_value(value) for name, value in settings if value is not None}
        return {
            "platform": PlatformSettings(**{k: v for k, v in values.items() if k not in DATABASE_FIELDS}),
            "postgres": PostgresResource(**{DATABASE_FIELDS[k]: v for k, v in values.items() if k in DATABASE_FIELDS}),
        }
    environment, parsed = EnvSettingsSource(Settings)(), Settings()
    configured: dict[str, Any] = {}
    for name in environment:
        configured[name] = dg.EnvVar(_env_var(name)) if _is_secret(name) else _config_value(getattr(parsed, name))
    database = {DATABASE_FIELDS[k]: _config_value(getattr(parsed, k)) for k in DATABASE_FIELDS if getattr(parsed, k) is not None}
    database |= {DATABASE_FIELDS[k]: v for k, v in configured.items() if k in DATABASE_FIELDS}
    return {
        "platform": PlatformSettings(**{k: v for k, v in configured.items() if k not in DATABASE_FIELDS}),
        "postgres": PostgresResource(**database),
    }

"""The platform's settings as a Dagster resource.

In production the Dagster processes inherit every ``IOT_*`` variable from `iot-platform dev up`
(or the deployment), and :class:`PlatformSettings` with no configuration reads them through the one
:class:`~iot_platform.settings.Settings` object. Tests hand explicit settings in with
:meth:`PlatformSettings.from_settings`; the same values then reach the service subprocesses.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from iot_platform.settings import Settings


class PlatformSettings(dg.ConfigurableResource):
    """Settings from the process environment, overridden by ``overrides`` (IOT_* name -> value)."""

    overrides: dict[str, str] = Field(default_factory=dict, description="IOT_* overrides; empty in production.")

    @classmethod
    def from_settings(cls, settings: Settings) -> "PlatformSettings":
        return cls(overrides=settings.as_env())

    def get(self) -> Settings:
        overrides = {name[len("IOT_"):].lower(): value for name, value in self.overrides.items() if name.startswith("IOT_")}
        return Settings(**overrides)  # type: ignore[arg-type]

    def child_env(self) -> dict[str, str]:
        """Extra environment of a service subprocess (which also inherits this process's IOT_* variables).

        ``IOT_EXIT_WITH_PARENT`` makes the service stop when its run worker dies, so a SIGKILLed
        worker never leaves an orphan beside the replacement run the watchdog starts.
        """
        return {**self.overrides, "IOT_EXIT_WITH_PARENT": "true"}

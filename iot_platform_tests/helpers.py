"""Small helpers shared by the tests."""

from __future__ import annotations

import os

from iot_platform.settings import Settings


def mqtt_topic(settings: Settings, tenant: str, project: str, *rest: str) -> str:
    """A topic that matches this test's grammar (which lives under a per-test first level)."""
    prefix = settings.mqtt_topic_grammar.split("{tenant_id}")[0]
    return "/".join([prefix.rstrip("/"), tenant, project, *rest])


def service_env(settings: Settings) -> dict[str, str]:
    """Environment for running `iot-platform bridge|consumer` as a subprocess with these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
    env.update(settings.as_env())
    return env

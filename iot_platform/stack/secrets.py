"""Platform credentials of the local platform, generated once into ``IOT_HOME/secrets/``.

The directory is 0700 and each file 0600. `dev up` hands the values to its children through the
environment (``IOT_MQTT_PASSWORD``, ``IOT_MQTT_ADMIN_PASSWORD``); a command run by hand finds them
here when the setting is unset (:data:`iot_platform.settings.SECRET_FILES`). A value set in the
environment wins and is never written here.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from iot_platform.settings import SECRET_FILES, Settings


def with_platform_secrets(settings: Settings) -> Settings:
    """``settings`` with every unset platform secret filled from (or generated into) IOT_HOME/secrets/."""
    directory = settings.home / "secrets"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    update: dict[str, object] = {}
    for file_name, name in SECRET_FILES.items():
        if getattr(settings, name) is not None:
            continue
        path = directory / file_name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(24) + "\n")
        update[name] = SecretStr(Path(path).read_text().strip())
    return settings.model_copy(update=update) if update else settings

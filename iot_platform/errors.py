"""The failures a person can act on, by kind; each message is one line naming what to change.

A command that raises one of these ends with that line on stderr and the kind's exit code, no
traceback (``iot-platform --debug`` shows it): see ``iot_platform/cli.py``. Anything else that
escapes a command is a bug and keeps its traceback. The kinds tell a supervisor what to do:
retrying cannot fix an :class:`InvalidConfiguration`, an :class:`Unreachable` service may come back.
"""

from __future__ import annotations


class PlatformError(Exception):
    """An expected failure (refused change, missing program, a step that could not be done): exit 1."""

    exit_code = 1


class InvalidConfiguration(PlatformError):
    """A setting or argument that can never work, or a missing one: fix it (exit 2)."""

    exit_code = 2


class Unreachable(PlatformError):
    """A server did not answer (or is shutting down): it may come back, so try again later (exit 3)."""

    exit_code = 3

    @classmethod
    def service(cls, what: str, endpoint: str, settings: str, cause: object = None) -> Unreachable:
        """``cannot reach <what> at <endpoint> (<settings>): <first line of cause>``."""
        detail = first_line(cause) if cause is not None else ""
        return cls(f"cannot reach {what} at {endpoint} ({settings})" + (f": {detail}" if detail else ""))


def first_line(error: object) -> str:
    """The first non-empty line of ``str(error)`` (libraries add hints on further lines), else its type's name."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__

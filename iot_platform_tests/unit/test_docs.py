"""Documentation that must not drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

from iot_platform.cli import COMMANDS
from iot_platform.settings import settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_is_current() -> None:
    """The README's settings table equals the one generated from Settings (regenerate with
    `python -m iot_platform.settings`)."""
    text = README.read_text()
    match = re.search(r"<!-- settings-table:start -->\n(.*?)<!-- settings-table:end -->", text, re.S)
    assert match, "README lost its settings-table markers"
    assert match.group(1) == settings_table()


def test_readme_names_the_two_commands_and_every_cli_command() -> None:
    text = README.read_text()
    assert "make run" in text and "make test" in text
    for name in COMMANDS:
        assert f"iot-platform {name}" in text, f"README does not mention `iot-platform {name}`"

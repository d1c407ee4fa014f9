"""deploy/install-system-deps.sh on a machine that lacks packages, with the commands it runs stubbed:
nothing is installed and no process is touched."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "install-system-deps.sh"


def _stub(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _run(tmp_path: Path, *, uid: int) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The script with only stubs on PATH: java, mvn, mosquitto_pub... are all missing."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    calls = tmp_path / "apt-get.calls"
    _stub(stubs, "id", f"echo {uid}")
    _stub(stubs, "apt-get", f'echo "$*" >> {calls}')
    _stub(stubs, "pgrep", "exit 1")  # no broker running, before or after
    for tool in ("tr", "ls"):
        (stubs / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    result = subprocess.run(["/bin/bash", str(SCRIPT)], env={"PATH": str(stubs)}, capture_output=True, text=True, timeout=30)
    return result, calls


def test_as_root_with_no_broker_running_it_installs_what_is_missing(tmp_path: Path) -> None:
    """`pgrep` exits 1 when no broker runs; under `set -o pipefail` that once ended the script at
    once, silently and with status 1, so a fresh machine never got its packages."""
    result, calls = _run(tmp_path, uid=0)
    assert result.returncode == 0, result.stderr
    assert "installing: " in result.stdout and "maven" in result.stdout
    assert calls.read_text().splitlines()[-1].startswith("install -y -qq ")
    assert "maven" in calls.read_text() and "mosquitto-clients" in calls.read_text()


def test_without_root_it_names_the_packages_and_installs_nothing(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, uid=1000)
    assert result.returncode == 1
    assert "sudo apt-get install" in result.stderr and "maven" in result.stderr
    assert not calls.exists()

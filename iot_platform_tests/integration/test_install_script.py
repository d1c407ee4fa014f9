"""deploy/install-system-deps.sh leaves alone what it did not start (it once killed every system broker)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from iot_platform.stack.process import pid_alive

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "install-system-deps.sh"


@pytest.mark.skipif(os.geteuid() != 0, reason="the script acts on other users' processes only as root")
def test_install_script_never_stops_a_broker_it_did_not_start() -> None:
    """A process named mosquitto, run by the 'mosquitto' account like Debian's system broker, is still
    alive after the script ran as root (the old script pkill'ed it on every `make run` and `make test`)."""
    try:
        account = pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("no 'mosquitto' account on this machine")
    shared = Path(tempfile.mkdtemp(prefix="iot-fake-broker-"))  # pytest's tmp_path is private to root
    os.chmod(shared, 0o755)
    fake_broker = shared / "mosquitto"  # its process name is what pgrep/pkill -x match
    shutil.copy("/bin/sleep", fake_broker)

    def as_mosquitto() -> None:
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)

    system_broker = subprocess.Popen([str(fake_broker), "120"], preexec_fn=as_mosquitto)
    try:
        assert subprocess.run(["pgrep", "-x", "-u", "mosquitto", "mosquitto"], capture_output=True).returncode == 0
        result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        assert system_broker.poll() is None and pid_alive(system_broker.pid), "the script stopped a broker it did not start"
    finally:
        system_broker.kill()
        system_broker.wait(10)
        shutil.rmtree(shared, ignore_errors=True)

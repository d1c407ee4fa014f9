"""The per-identity instance lock: exclusive, names its holder, released with its holder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iot_platform.observability.instance_lock import AlreadyRunning, exclusive, identity_key, lock_path, service_instance


@pytest.mark.parametrize(
    ("identity", "key"),
    [("iot-platform-bridge", "iot-platform-bridge"), ("bridge-0", "bridge-0"), ("a/b", "a%2Fb"), ("a b", "a%20b"),
     (".", "%2E"), ("..", "%2E%2E"), ("x.y_z~", "x.y_z~"), ("é", "%C3%A9")],
)
def test_identity_key_is_a_safe_file_name_part(identity: str, key: str) -> None:
    assert identity_key(identity) == key


def test_distinct_identities_never_share_a_lock_file(tmp_path: Path) -> None:
    identities = ["a/b", "a%2Fb", "a_b", "a.b", "A/B", "bridge-1", "bridge-10"]
    paths = {lock_path(tmp_path, "bridge", i) for i in identities}
    assert len(paths) == len(identities)
    assert all(p.parent == tmp_path / "run" / "locks" for p in paths)


def test_a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go(tmp_path: Path) -> None:
    """flock conflicts between two opens of the file, even in one process; closing releases it."""
    with service_instance(tmp_path, "bridge", "client-1", "IOT_MQTT_CLIENT_ID"):
        with pytest.raises(AlreadyRunning) as refused:
            with service_instance(tmp_path, "bridge", "client-1", "IOT_MQTT_CLIENT_ID"):
                pass
        assert refused.value.holder_pid == os.getpid()
        assert f"pid {os.getpid()}" in str(refused.value) and "IOT_MQTT_CLIENT_ID=client-1" in str(refused.value)
        with service_instance(tmp_path, "bridge", "client-2", "IOT_MQTT_CLIENT_ID"):
            pass  # another identity is independent
    with service_instance(tmp_path, "bridge", "client-1", "IOT_MQTT_CLIENT_ID"):
        pass  # released when the first holder left


def test_a_stale_lock_file_blocks_nobody(tmp_path: Path) -> None:
    path = tmp_path / "stale.lock"
    path.write_text("999999\n")
    with exclusive(path, "x"):
        assert path.read_text() == f"{os.getpid()}\n"

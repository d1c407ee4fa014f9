"""The files replicas leave under IOT_HOME (one pid file per replica, the counts `dev up` records), and
`consumer --replica N`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from iot_platform import cli
from iot_platform.consumer import cli as consumer_cli

from iot_platform.observability.pidfile import live_replica_pids, pidfile, replica_pidfile_name
from iot_platform.observability.replica_counts import desired_replicas, read_replica_counts, record_replica_counts, replica_counts_path
from iot_platform.settings import Settings


def test_replica_pid_files_keep_the_old_name_for_replica_0_and_skip_the_dead(tmp_path: Path) -> None:
    """bridge.pid is replica 0, bridge-2.pid replica 2; a stale file and a foreign name are not replicas."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert (replica_pidfile_name("bridge", 0), replica_pidfile_name("bridge", 2)) == ("bridge", "bridge-2")
    with pidfile(tmp_path, "bridge"), pidfile(tmp_path, replica_pidfile_name("bridge", 2)):
        (tmp_path / "run" / "bridge-3.pid").write_text(f"{dead.pid}\n")
        (tmp_path / "run" / "bridge-x.pid").write_text(f"{os.getpid()}\n")
        (tmp_path / "run" / "consumer-1.pid").write_text(f"{os.getpid()}\n")
        assert live_replica_pids(tmp_path, "bridge") == {0: os.getpid(), 2: os.getpid()}
    assert live_replica_pids(tmp_path, "bridge") == {} and live_replica_pids(tmp_path, "consumer") == {1: os.getpid()}


def test_recorded_counts_win_over_the_settings_and_report_what_changed(tmp_path: Path) -> None:
    """The watchdog follows the last `dev up`; without a file, the settings. Recording says what changed."""
    settings = Settings(home=tmp_path, bridge_replicas=2, consumer_replicas=1)
    assert desired_replicas(settings) == {"bridge": 2, "consumer": 1}
    assert record_replica_counts(tmp_path, {"bridge": 2, "consumer": 1}) == {"bridge": (None, 2), "consumer": (None, 1)}
    assert record_replica_counts(tmp_path, {"bridge": 2, "consumer": 3}) == {"consumer": (1, 3)}
    assert desired_replicas(settings) == {"bridge": 2, "consumer": 3}
    assert [p.name for p in replica_counts_path(tmp_path).parent.iterdir()] == ["replicas.json"], "no temporary file left"


def test_an_unreadable_counts_file_falls_back_to_the_settings(tmp_path: Path) -> None:
    path = replica_counts_path(tmp_path)
    path.parent.mkdir(parents=True)
    for text in ("{", "[1, 2]", '{"bridge": 0, "consumer": true}'):
        path.write_text(text)
        assert read_replica_counts(tmp_path) == {}
        assert desired_replicas(Settings(home=tmp_path, consumer_replicas=2)) == {"bridge": 1, "consumer": 2}


def test_consumer_replica_flag_sets_the_replica_and_rejects_a_negative_index(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`consumer --replica 2` runs as IOT_REPLICA_INDEX=2 whatever the environment says; -1 exits 2 before anything starts."""
    started: list[int] = []
    monkeypatch.setattr(consumer_cli, "run_as_only_instance", lambda service, settings, body: started.append(settings.replica_index) or 0)
    monkeypatch.setenv("IOT_HOME", str(tmp_path))
    monkeypatch.setenv("IOT_CONSUMER_REPLICAS", "3")
    monkeypatch.setenv("IOT_REPLICA_INDEX", "1")
    assert cli.main(["consumer", "--replica", "2"]) == 0 and started == [2]
    assert cli.main(["consumer"]) == 0 and started == [2, 1]
    assert cli.main(["consumer", "--replica", "-1"]) == 2 and started == [2, 1]

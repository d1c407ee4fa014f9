"""Consumer replicas: which replica may run, its static group member, its pid file and lock identity."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from iot_platform.consumer.cli import replica_problem
from iot_platform.observability.pidfile import replica_pidfile_name
from iot_platform.consumer.kafka_client import kafka_config
from iot_platform.observability.identity import service_identity
from iot_platform.settings import Settings


def _settings(index: int, replicas: int) -> Settings:
    return Settings(replica_index=index, consumer_replicas=replicas, kafka_consumer_group="writers")


@pytest.mark.parametrize(("index", "replicas"), [(0, 1), (1, 2), (2, 3)])
def test_each_index_below_replicas_is_its_own_static_member(index: int, replicas: int) -> None:
    settings = _settings(index, replicas)
    assert replica_problem(settings) is None
    config = kafka_config(settings)
    assert (config["group.id"], config["group.instance.id"]) == ("writers", f"writers-{index}")
    # Fetches wait for a megabyte or 25 ms (docs/design.md §11): a few large fetches, not one per produce request.
    assert (config["fetch.min.bytes"], config["fetch.wait.max.ms"]) == (1_048_576, 25)
    assert service_identity("consumer", settings) == f"writers-{index}"
    assert replica_pidfile_name("consumer", index) == ("consumer" if index == 0 else f"consumer-{index}")


@pytest.mark.parametrize(("index", "replicas"), [(1, 1), (3, 3), (7, 2)])
def test_an_index_at_or_above_replicas_is_refused_naming_the_settings(index: int, replicas: int) -> None:
    problem = replica_problem(_settings(index, replicas))
    assert problem is not None and f"replica {index}" in problem and f"IOT_CONSUMER_REPLICAS={replicas}" in problem


def test_cli_refuses_a_replica_outside_the_group_in_one_line(tmp_path: Path) -> None:
    """`consumer --replica 2` with 2 replicas exits 2 before connecting anywhere: one line, no traceback."""
    env = Settings(home=tmp_path, consumer_replicas=2).child_env()
    done = subprocess.run([sys.executable, "-m", "iot_platform.cli", "consumer", "--replica", "2"], env=env,
                          capture_output=True, text=True, timeout=60)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, output
    assert len(output.splitlines()) == 1 and "IOT_CONSUMER_REPLICAS=2" in output and "Traceback" not in output, output

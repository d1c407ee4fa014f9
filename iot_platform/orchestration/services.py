"""The bridge and the consumer as never-ending Dagster runs, one run per replica; bridge drains as runs too.

Guarantee: a service job's run lives exactly as long as its service process. The op starts
`python -m iot_platform.cli bridge|consumer` through Pipes with ``forward_termination``: terminating
the run from the UI sends the service SIGINT, and it flushes, commits and exits. The service gets
``IOT_EXIT_WITH_PARENT=true``, so if the run worker itself is SIGKILLed the service stops too
instead of running on as an orphan beside the replacement run the watchdog starts.

Which replica a run is comes from its tags, and becomes the service's ``IOT_REPLICA_INDEX``:

- ``iot/replica`` (``bridge-0``, ``consumer-2``) on a serving run: the run queue allows one active
  run per value (``dagster.yaml``), so an identity never serves twice; a run launched by hand is
  replica 0. With ``iot/undrain`` the op first clears the identity's drain marks
  (`iot-platform bridge --undrain`): a replica launched again after its drain serves again.
- ``iot/drain`` (``bridge-2``) on a run of ``mqtt_kafka_bridge_drain``: `iot-platform bridge
  --drain` asks that replica, running beside it, to hand its MQTT session over (or does it itself
  when none runs) and ends when the session has; the queue allows one drain per identity.

``iot/service`` names the service, for filtering runs in the UI. The run records its worker's pid
and host as tags, which lets :mod:`.watchdog` recognise a run whose worker died.
"""

# No `from __future__ import annotations`: Dagster checks the op's `context` annotation at run time.
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from iot_platform.observability.replica_counts import desired_replicas
from iot_platform.orchestration.resources import PlatformSettings, PostgresResource

SERVICE_TAG = "iot/service"
REPLICA_TAG = "iot/replica"
DRAIN_TAG = "iot/drain"
UNDRAIN_TAG = "iot/undrain"
WORKER_PID_TAG = "iot/worker_pid"
WORKER_HOST_TAG = "iot/worker_host"
UNDRAIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Service:
    name: str  # the `iot-platform` subcommand and the pid file name
    job_name: str
    description: str
    drain_job_name: str | None = None  # scaling down goes through a drain run of this job


BRIDGE = Service("bridge", "mqtt_kafka_bridge_service", "MQTT -> Kafka bridge (at-least-once, acks after Kafka delivery).",
                 "mqtt_kafka_bridge_drain")
CONSUMER = Service(
    "consumer", "kafka_postgres_consumer_service", "Kafka -> PostgreSQL consumer (exactly-once effect via stored offsets)."
)
SERVICES = (BRIDGE, CONSUMER)


def replica_tag(service: Service, index: int) -> str:
    return f"{service.name}-{index}"


def replica_of(service: Service, tags: Mapping[str, str]) -> int:
    """The replica index a run's tags name (serving runs from before replicas, without the tag, are replica 0)."""
    key = DRAIN_TAG if DRAIN_TAG in tags else REPLICA_TAG
    value = tags.get(key, replica_tag(service, 0))
    prefix = f"{service.name}-"
    index = value[len(prefix):] if value.startswith(prefix) else ""
    if not index.isdigit():
        raise ValueError(f"run tag {key}={value!r} is not {prefix}<index>")
    return int(index)


def is_drain(tags: Mapping[str, str]) -> bool:
    return DRAIN_TAG in tags


def run_tags(service: Service, index: int, *, drain: bool = False, undrain: bool = False) -> dict[str, str]:
    """The tags of a run of replica ``index``: serving (after a drain: ``undrain``), or its drain."""
    identity = {DRAIN_TAG if drain else REPLICA_TAG: replica_tag(service, index)}
    return {SERVICE_TAG: service.name, **identity, **({UNDRAIN_TAG: "true"} if undrain and not drain else {})}


def job_name(service: Service, *, drain: bool) -> str:
    if drain and service.drain_job_name is None:
        raise ValueError(f"the {service.name} has no drain")
    return service.drain_job_name if drain and service.drain_job_name else service.job_name


def service_command(service: Service, *args: str) -> list[str]:
    return [sys.executable, "-m", "iot_platform.cli", service.name, *args]


def _run_replica(context: dg.OpExecutionContext, service: Service, env: dict[str, str], pipes: dg.PipesSubprocessClient,
                 *, drain: bool, replicas: int) -> None:
    # in_process_executor: this op runs in the run worker itself, so this pid is the worker's.
    context.instance.add_run_tags(context.run_id, {WORKER_PID_TAG: str(os.getpid()), WORKER_HOST_TAG: socket.gethostname()})
    tags = context.run.tags
    if drain and DRAIN_TAG not in tags:
        raise dg.Failure(f"a drain run needs the tag {DRAIN_TAG}={service.name}-<replica index>")
    index = replica_of(service, tags)
    # The count the watchdog keeps (a later `dev up` may have changed it) is the replica's too: the bridge
    # subscribes to the shared form only when there are several; a replica being drained counts itself.
    env = {**env, "IOT_REPLICA_INDEX": str(index), f"IOT_{service.name.upper()}_REPLICAS": str(max(replicas, index + 1))}
    if tags.get(UNDRAIN_TAG) == "true":
        undrain = subprocess.run(service_command(service, "--undrain"), env={**os.environ, **env}, capture_output=True,
                                 text=True, timeout=UNDRAIN_TIMEOUT_S)
        context.log.info(f"{service.name} replica {index}: drain marks cleared (exit {undrain.returncode}) {undrain.stderr[-500:]}")
        if undrain.returncode != 0:
            raise dg.Failure(f"`iot-platform {service.name} --undrain` exited {undrain.returncode}")
    command = service_command(service, *(["--drain"] if drain else []))
    context.log.info(f"{'draining' if drain else 'starting'} {service.name} replica {index}: {' '.join(command)}")
    pipes.run(context=context, command=command, env=env)


def _service_job(service: Service, *, drain: bool = False) -> dg.JobDefinition:
    name = job_name(service, drain=drain)

    @dg.op(name=f"{'drain' if drain else 'run'}_{service.name}", description=service.description)
    def run_service(context: dg.OpExecutionContext, platform: PlatformSettings, postgres: PostgresResource,
                    pipes: dg.PipesSubprocessClient) -> None:
        replicas = desired_replicas(platform.get(postgres))[service.name]
        _run_replica(context, service, {**platform.child_env(), **postgres.child_env()}, pipes, drain=drain, replicas=replicas)

    description = (f"Drains one {service.name} replica (tag {DRAIN_TAG}): hands its MQTT session over, then ends; "
                   "requested by service_watchdog when IOT_BRIDGE_REPLICAS is lowered." if drain else
                   f"{service.description} One run per replica (tag {REPLICA_TAG}), never ends; "
                   "supervised by the service_watchdog sensor.")

    @dg.job(name=name, description=description, executor_def=dg.in_process_executor,
            tags={SERVICE_TAG: service.name} if drain else run_tags(service, 0))
    def service_job() -> None:
        run_service()

    return service_job


SERVICE_JOBS = {service.name: _service_job(service) for service in SERVICES}
DRAIN_JOBS = {service.name: _service_job(service, drain=True) for service in SERVICES if service.drain_job_name}

# Generous: the bridge waits for its last Kafka deliveries before it exits on SIGINT.
pipes_client = dg.PipesSubprocessClient(forward_termination=True, termination_timeout_seconds=60)

"""The bridge and the consumer as never-ending Dagster runs.

Guarantee: a service job's run lives exactly as long as its service process. The op starts
`python -m iot_platform.cli bridge|consumer` through Pipes with ``forward_termination``: terminating
the run from the UI sends the service SIGINT, and it flushes, commits and exits. The service gets
``IOT_EXIT_WITH_PARENT=true``, so if the run worker itself is SIGKILLed the service stops too
instead of running on as an orphan beside the replacement run. The run records its worker's pid
and host as tags, which lets :mod:`.watchdog` recognise a run whose worker died. The tag
``iot/service`` carries the run queue's limit of one run per service (``dagster.yaml``).
"""

import os
import socket
import sys
from dataclasses import dataclass

import dagster as dg

from iot_platform.orchestration.resources import PlatformSettings, PostgresResource

SERVICE_TAG = "iot/service"
WORKER_PID_TAG = "iot/worker_pid"
WORKER_HOST_TAG = "iot/worker_host"


@dataclass(frozen=True)
class Service:
    name: str  # the `iot-platform` subcommand and the pid file name
    job_name: str
    description: str


BRIDGE = Service("bridge", "mqtt_kafka_bridge_service", "MQTT -> Kafka bridge (at-least-once, acks after Kafka delivery).")
CONSUMER = Service(
    "consumer", "kafka_postgres_consumer_service", "Kafka -> PostgreSQL consumer (exactly-once effect via stored offsets)."
)
SERVICES = (BRIDGE, CONSUMER)


def service_command(service: Service) -> list[str]:
    return [sys.executable, "-m", "iot_platform.cli", service.name]


def _service_job(service: Service) -> dg.JobDefinition:
    @dg.op(name=f"run_{service.name}", description=service.description)
    def run_service(context: dg.OpExecutionContext, platform: PlatformSettings, postgres: PostgresResource,
                    pipes: dg.PipesSubprocessClient) -> None:
        # in_process_executor: this op runs in the run worker itself, so this pid is the worker's.
        context.instance.add_run_tags(context.run_id, {WORKER_PID_TAG: str(os.getpid()), WORKER_HOST_TAG: socket.gethostname()})
        context.log.info(f"starting {service.name}: {' '.join(service_command(service))}")
        pipes.run(context=context, command=service_command(service), env={**platform.child_env(), **postgres.child_env()})

    @dg.job(
        name=service.job_name,
        description=f"{service.description} Never ends; supervised by the service_watchdog sensor.",
        executor_def=dg.in_process_executor,
        tags={SERVICE_TAG: service.name},
    )
    def service_job() -> None:
        run_service()

    return service_job


bridge_service_job = _service_job(BRIDGE)
consumer_service_job = _service_job(CONSUMER)
SERVICE_JOBS = {BRIDGE.name: bridge_service_job, CONSUMER.name: consumer_service_job}

# Generous: the bridge waits for its last Kafka deliveries before it exits on SIGINT.
pipes_client = dg.PipesSubprocessClient(forward_termination=True, termination_timeout_seconds=60)

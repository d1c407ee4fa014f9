"""`iot-platform simulate`: publish a simulated fleet's telemetry until a count, a duration or Ctrl-C.

Prints a JSON summary on stdout at the end (sent and acked per category, unacked, rate); with
``--summary FILE`` it also writes each device's last seq there, for `iot-platform verify --expect FILE`.
Exits 1 when some messages were never acked by the broker. The fleet publishes through registered
gateway devices, one per (tenant, project), with their own credentials (registered or rotated at
start, :mod:`iot_platform.access.gateways`); that needs the registry and the broker's admin client.
A gateway's ACL is its project, so the broker refuses a topic outside the grammar or with an invalid
id before the bridge sees it: ``--bad-fraction`` therefore sends oversize payloads only (the tests
reach the bridge's other dead-letter paths with a namespace-wide test publisher).
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import sys
import threading

from iot_platform.access.connection import MqttCredentials
from iot_platform.core.arguments import number
from iot_platform.devices.fleet import OVERSIZE, Fleet, FleetSpec
from iot_platform.devices.simulate import DEMO_FLEET, MAX_OUTSTANDING, SimulationResult, new_run_id, simulate, write_summary
from iot_platform.errors import InvalidConfiguration, Unreachable
from iot_platform.observability.logging import configure_json_logging
from iot_platform.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenants", type=number(int, minimum=1), default=2, help="Tenants (default 2).")
    parser.add_argument("--projects", type=number(int, minimum=1), default=2, help="Projects per tenant (default 2).")
    parser.add_argument("--devices", type=number(int, minimum=1), default=5, help="Devices per project (default 5).")
    parser.add_argument("--rate", type=number(float, minimum=0.0, meaning=" (0: as fast as possible)"), default=100.0,
                        help="Messages per second for the whole fleet; 0 = as fast as possible.")
    parser.add_argument("--duration", type=number(float, minimum=0.001), default=None, help="Stop after this many seconds.")
    parser.add_argument("--count", type=number(int, minimum=1), default=None, help="Stop after this many messages.")
    parser.add_argument("--bad-fraction", type=number(float, minimum=0.0, maximum=1.0), default=0.0, help="Fraction of deliberately bad messages (0..1).")
    parser.add_argument("--tenant-prefix", default="tenant", help="Tenant ids are PREFIX00, PREFIX01, ... (default 'tenant').")
    parser.add_argument("--seed", type=int, default=0, help="Seed of readings and of bad-message choice.")
    parser.add_argument("--run-id", default=None, help="Run id in every msg_id (default: random).")
    parser.add_argument("--max-in-flight", type=number(int, minimum=1, maximum=MAX_OUTSTANDING), default=20_000,
                        help=f"Published but unacked messages, at most ({MAX_OUTSTANDING:,} at most: paho stalls beyond).")
    parser.add_argument("--summary", default=None, metavar="FILE", help="Write the run summary (with per-device last seq) here.")
    parser.add_argument("--demo", action="store_true", help="The `make run` demo fleet: 2 x 2 x 5 devices at 20 msg/s until stopped.")
    parser.add_argument("--quiet", action="store_true", help="No live progress line on stderr.")


def run(args: argparse.Namespace, settings: Settings) -> int:
    configure_json_logging()
    if args.demo:
        args.tenants, args.projects, args.devices, args.rate = (
            DEMO_FLEET["tenants"], DEMO_FLEET["projects"], DEMO_FLEET["devices"], DEMO_FLEET["rate"])
    spec = FleetSpec(
        tenants=args.tenants,
        projects=args.projects,
        devices=args.devices,
        topic_grammar=settings.mqtt_topic_grammar,
        run_id=args.run_id or new_run_id(),
        bad_fraction=args.bad_fraction,
        max_payload_bytes=settings.max_payload_bytes,
        seed=args.seed,
        tenant_prefix=args.tenant_prefix,
        bad_categories=(OVERSIZE,),  # the only bad input a gateway's ACL lets through
    )
    from iot_platform.access.gateways import gateway_credentials

    gateways = gateway_credentials(settings, Fleet(spec).projects)  # the registry and the broker's admin client
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _s, _f: stop.set())
    try:
        result = _simulate(settings, spec, gateways, args, stop)
    except ssl.SSLError as exc:
        raise InvalidConfiguration(f"TLS to the MQTT broker at {settings.mqtt_url} failed: {exc} (IOT_MQTT_CA_FILE, IOT_MQTT_URL)") from exc
    except (ConnectionError, OSError) as exc:  # refused, unreachable, or no CONNACK in time
        raise Unreachable.service("the MQTT broker", settings.mqtt_url, "IOT_MQTT_URL, IOT_MQTT_CA_FILE", exc) from exc
    if args.summary:
        write_summary(result, args.summary)
    summary = result.to_json()
    del summary["devices"]
    print(json.dumps(summary))
    return 1 if result.unacked or sum(result.refused.values()) else 0


def _simulate(
    settings: Settings, spec: FleetSpec, gateways: dict[tuple[str, str], MqttCredentials], args: argparse.Namespace, stop: threading.Event
) -> SimulationResult:
    return simulate(
        settings,
        spec,
        credentials_for=lambda tenant, project: gateways[(tenant, project)],
        rate=args.rate or None,
        duration_s=args.duration,
        count=args.count,
        max_outstanding=args.max_in_flight,
        stop=stop,
        progress=sys.stderr if sys.stderr.isatty() and not args.quiet else None,
    )

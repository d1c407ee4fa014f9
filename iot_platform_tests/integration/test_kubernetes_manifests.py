"""deploy/kubernetes cannot run here (no cluster, no Docker): its files are validated instead.

- Every manifest against a published schema: core kinds against kubernetes-validate's strict schemas,
  Strimzi and CloudNativePG resources against their CRDs' openAPIV3Schema (fetched from Maven Central
  and the Go module proxy, see iot_platform_tests/kubernetes_schemas). Unknown fields are errors.
- The Dagster Helm values: no registry ships the chart's values.schema.json, so its Kubernetes-typed
  fields are checked against the Kubernetes definitions the chart's schema itself refers to, the
  instance it renders against dagster's and dagster-k8s's own config schemas, and the fields
  docs/deploy.md relies on one by one.
- Consistency with the code: IOT_* variables are settings, topics and broker limits equal the
  settings' and the local stack's, the tag concurrency limits equal dagster.yaml's.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from iot_platform.cli import COMMANDS
from iot_platform.dashboards.provision import CONTAINER_PROVISIONING
from iot_platform.settings import Settings
from iot_platform.stack.mosquitto import MosquittoConfig, render_config
from iot_platform.stack.kafka_topics import topic_specs
from iot_platform_tests.kubernetes_schemas import (
    core_definition_validator,
    core_kind_errors,
    custom_resource_errors,
    is_core_kind,
)

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes" / "manifests"
DAGSTER_VALUES = ROOT / "deploy" / "kubernetes" / "helm" / "dagster-values.yaml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
IMAGE = "iot-platform:0.1.0"
NAMESPACE = "iot"

# IOT_* variables the manifests set before the code reads them. Each name here must NOT yet be a
# setting (test_pending_variables_are_not_settings_yet goes red once it is: then delete it here).
PENDING_SETTINGS: set[str] = set()


def _documents() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, document) for path in sorted(MANIFESTS.glob("*.yaml"))
            for document in yaml.safe_load_all(path.read_text()) if document]


DOCUMENTS = _documents()


def _id(item: tuple[str, dict[str, Any]]) -> str:
    return f"{item[0]}:{item[1]['kind']}/{item[1]['metadata']['name']}"


def _find(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for _, d in DOCUMENTS if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _values() -> dict[str, Any]:
    return yaml.safe_load(DAGSTER_VALUES.read_text())


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for _, document in DOCUMENTS:
        if document["kind"] in {"StatefulSet", "Deployment"}:
            yield document["metadata"]["name"], document["spec"]["template"]["spec"]


def _platform_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    """Containers running our image in the manifests, plus the Dagster code location (as a container)."""
    for name, spec in _pod_specs():
        for container in spec["containers"]:
            if container["image"] == IMAGE:
                yield name, container
    (deployment,) = _values()["dagster-user-deployments"]["deployments"]
    yield "dagster code location", {"env": deployment["env"], "envFrom": [{"configMapRef": c} for c in deployment["envConfigMaps"]],
                                    "volumeMounts": deployment["volumeMounts"]}


def _config_map_data(name: str) -> dict[str, str]:
    return _find("ConfigMap", name)["data"]


def _environment(container: dict[str, Any]) -> dict[str, Any]:
    """Variable -> value or valueFrom, ConfigMaps of envFrom first (explicit env wins, as in Kubernetes)."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env.update(_config_map_data(source["configMapRef"]["name"]))
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value", variable.get("valueFrom"))
    return env


# --- published schemas -------------------------------------------------------------------------


def test_every_manifest_is_namespaced_and_of_a_kind_we_validate() -> None:
    """Each object names its namespace (`iot`) and is a core kind or a Strimzi / CloudNativePG resource."""
    assert len(DOCUMENTS) >= 20
    groups = {d["apiVersion"].rpartition("/")[0] for _, d in DOCUMENTS}
    assert groups == {"", "apps", "policy", "kafka.strimzi.io", "postgresql.cnpg.io"}, groups
    for source, document in DOCUMENTS:
        if document["kind"] != "Namespace":
            assert document["metadata"].get("namespace") == NAMESPACE, _id((source, document))


@pytest.mark.parametrize("item", [i for i in DOCUMENTS if is_core_kind(i[1])], ids=_id)
def test_core_kind_matches_the_kubernetes_schema(item: tuple[str, dict[str, Any]]) -> None:
    assert core_kind_errors(item[1]) == []


@pytest.mark.parametrize("item", [i for i in DOCUMENTS if not is_core_kind(i[1])], ids=_id)
def test_custom_resource_matches_its_crd_schema(item: tuple[str, dict[str, Any]]) -> None:
    assert custom_resource_errors(item[1]) == []


def test_validation_rejects_typos_and_wrong_types() -> None:
    """Positive control for the two tests above: the validators do find the mistakes a person makes."""
    topic = copy.deepcopy(_find("KafkaTopic", "iot-messages"))
    topic["spec"]["partitons"] = 6
    assert any("partitons" in e for e in custom_resource_errors(topic))
    cluster = copy.deepcopy(_find("Cluster", "iot-pg"))
    cluster["spec"]["instances"] = "3"
    assert any("instances" in e for e in custom_resource_errors(cluster))
    bridge = copy.deepcopy(_find("StatefulSet", "iot-bridge"))
    bridge["spec"]["template"]["spec"]["containers"][0]["envFrm"] = []
    assert any("envFrm" in e for e in core_kind_errors(bridge))


# --- Kafka ---------------------------------------------------------------------------------------


def test_topics_match_the_settings_and_survive_a_broker() -> None:
    """Topic names, partitions and configs are those of settings.py / stack/kafka_topics.py for three brokers
    (the cluster the manifests run); RF 3, min ISR 2."""
    settings = Settings(kafka_brokers=3)
    for spec in topic_specs(settings):
        topic = _find("KafkaTopic", spec.name)["spec"]
        assert (topic["topicName"], topic["partitions"], topic["replicas"]) == (spec.name, spec.partitions, spec.replication_factor)
        # YAML reads `false` as a bool; Kafka's config value is the string "false".
        as_kafka = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in topic["config"].items()}
        assert {k: v for k, v in as_kafka.items() if k in spec.configs} == spec.configs
        assert topic["replicas"] == 3 and topic["config"]["min.insync.replicas"] == 2
        assert topic["config"]["unclean.leader.election.enable"] is False
    assert {d["spec"]["topicName"] for _, d in DOCUMENTS if d["kind"] == "KafkaTopic"} == {s.name for s in topic_specs(settings)}
    kafka = _find("Kafka", "iot")["spec"]["kafka"]
    assert kafka["config"]["min.insync.replicas"] == 2 and kafka["config"]["unclean.leader.election.enable"] is False
    brokers = [d["spec"] for _, d in DOCUMENTS if d["kind"] == "KafkaNodePool" and "broker" in d["spec"]["roles"]]
    assert sum(b["replicas"] for b in brokers) == 3
    assert [listener["authentication"]["type"] for listener in kafka["listeners"]] == ["scram-sha-512"]
    assert all(listener["tls"] for listener in kafka["listeners"])


def _acls(user: str) -> set[tuple[str, str, str]]:
    acls = _find("KafkaUser", user)["spec"]["authorization"]["acls"]
    return {(a["resource"]["type"], a["resource"]["name"], op) for a in acls for op in a["operations"]}


def test_kafka_users_have_only_what_their_component_needs() -> None:
    """Bridge: write both topics. Consumer: read both topics and its group. Dagster/toolbox: describe only."""
    settings = Settings()
    topics = (settings.kafka_topic, settings.kafka_dlq_topic)
    assert _acls("iot-bridge") == {("topic", t, op) for t in topics for op in ("Write", "Describe")}
    assert _acls("iot-consumer") == {("topic", t, op) for t in topics for op in ("Read", "Describe")} | {
        ("group", settings.kafka_consumer_group, "Read"), ("group", settings.kafka_consumer_group, "Describe")}
    assert _acls("iot-dagster") == {("topic", t, "Describe") for t in topics}


def test_each_component_logs_in_as_its_kafka_user() -> None:
    """IOT_KAFKA_SASL_USERNAME is a KafkaUser, and the password is that user's Secret (named like it)."""
    users = {d["metadata"]["name"] for _, d in DOCUMENTS if d["kind"] == "KafkaUser"}
    expected = {"iot-bridge": "iot-bridge", "iot-consumer": "iot-consumer", "iot-toolbox": "iot-dagster",
                "dagster code location": "iot-dagster"}
    seen = {}
    for name, container in _platform_containers():
        env = _environment(container)
        seen[name] = env["IOT_KAFKA_SASL_USERNAME"]
        assert env["IOT_KAFKA_SASL_PASSWORD"]["secretKeyRef"] == {"name": seen[name], "key": "password"}, name
    assert seen == expected and set(seen.values()) <= users


# --- settings and identities ----------------------------------------------------------------------


def test_every_iot_variable_is_a_setting_or_pending() -> None:
    """Every IOT_* variable given to our image is a field of Settings, or listed in PENDING_SETTINGS."""
    known = {f"IOT_{name.upper()}" for name in Settings.model_fields}
    given = {v for _, c in _platform_containers() for v in _environment(c) if v.startswith("IOT_")}
    given |= set(_config_map_data("iot-replicas"))
    assert given - known - PENDING_SETTINGS == set()
    assert PENDING_SETTINGS <= given, "a pending variable no manifest uses any more: remove it from the list"


def test_pending_variables_are_not_settings_yet() -> None:
    """Goes red when issue 11/14 add one of these settings: then shrink PENDING_SETTINGS."""
    known = {f"IOT_{name.upper()}" for name in Settings.model_fields}
    assert PENDING_SETTINGS & known == set()


def test_settings_config_map_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared ConfigMap parses as Settings, with the public names and sizes of the defaults."""
    for name, value in _config_map_data("iot-platform-settings").items():
        if name not in PENDING_SETTINGS:
            monkeypatch.setenv(name, value)
    settings = Settings()
    for field in ("kafka_topic", "kafka_dlq_topic", "kafka_partitions", "kafka_retention_ms", "kafka_compression",
                  "kafka_consumer_group", "pg_database", "pg_dagster_database", "mqtt_client_id"):
        assert getattr(settings, field) == Settings.model_fields[field].default, field
    assert settings.mqtt_url.startswith("mqtts://") and settings.kafka_bootstrap.endswith(":9093")
    assert settings.pg_host == f"{_find('Cluster', 'iot-pg')['metadata']['name']}-rw"


def test_replicas_have_stable_identities() -> None:
    """StatefulSets whose replica count is iot-replicas' and whose index comes from the pod-index label."""
    counts = _config_map_data("iot-replicas")
    for name, variable in (("iot-bridge", "IOT_BRIDGE_REPLICAS"), ("iot-consumer", "IOT_CONSUMER_REPLICAS")):
        statefulset = _find("StatefulSet", name)
        assert statefulset["spec"]["replicas"] == int(counts[variable]), name
        (container,) = statefulset["spec"]["template"]["spec"]["containers"]
        env = _environment(container)
        assert env["IOT_REPLICA_INDEX"] == {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}
        assert env[variable] == counts[variable] and env["IOT_MQTT_SHARE_GROUP"] == counts["IOT_MQTT_SHARE_GROUP"]
        assert statefulset["spec"]["serviceName"] == name and _find("Service", name)["spec"]["clusterIP"] == "None"
    assert int(counts["IOT_CONSUMER_REPLICAS"]) <= Settings().kafka_partitions


def test_services_stop_gracefully_and_are_probed_on_their_metrics_port() -> None:
    """Grace period above the bridge's shutdown timeout; probes on IOT_*_METRICS_PORT; PDBs select the pods."""
    settings_map = _config_map_data("iot-platform-settings")
    for name, command, port_variable in (("iot-bridge", "bridge", "IOT_BRIDGE_METRICS_PORT"),
                                         ("iot-consumer", "consumer", "IOT_CONSUMER_METRICS_PORT")):
        pod = _find("StatefulSet", name)["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert container["command"] == ["iot-platform", command] and command in COMMANDS
        env = _environment(container)
        shutdown_s = float(env.get("IOT_BRIDGE_SHUTDOWN_TIMEOUT_S", Settings().bridge_shutdown_timeout_s))
        assert pod["spec"]["terminationGracePeriodSeconds"] > shutdown_s
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == int(settings_map[port_variable])
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] == "metrics", (name, probe)
        budget = _find("PodDisruptionBudget", name)["spec"]
        assert budget["maxUnavailable"] == 1 and budget["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_every_container_has_resources_and_drops_privileges() -> None:
    """Requests and a memory limit everywhere; no privilege escalation, no capabilities, non-root pods."""
    for name, spec in _pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in spec.get("initContainers", []) + spec["containers"]:
            assert container["resources"]["requests"] and "memory" in container["resources"]["limits"], name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name


SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$", re.I)


def test_secrets_only_by_reference() -> None:
    """No Secret object, no literal value for a secret-looking variable, no password in the Helm values."""
    assert not [d for _, d in DOCUMENTS if d["kind"] == "Secret"]
    containers = [c for _, spec in _pod_specs() for c in spec.get("initContainers", []) + spec["containers"]]
    containers += [c for _, c in _platform_containers()]
    for container in containers:
        for variable in container.get("env", []):
            if SECRET_NAME.search(variable["name"]):
                assert "secretKeyRef" in variable.get("valueFrom", {}), variable["name"]
    assert "postgresqlPassword" not in _values()["postgresql"] and _values()["generatePostgresqlPasswordSecret"] is False
    for _, document in DOCUMENTS:
        if document["kind"] == "ConfigMap":
            assert not [k for k in document["data"] if SECRET_NAME.search(k)], document["metadata"]["name"]


def _secret_names(node: Any) -> Iterator[str]:
    """Secret names referenced anywhere below ``node``: volumes, env, CNPG role and bootstrap secrets."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "secretName":
                yield value
            elif key in {"secretKeyRef", "passwordSecret", "secret"} and isinstance(value, dict) and "name" in value:
                yield value["name"]
            else:
                yield from _secret_names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _secret_names(item)


def _referenced_secrets() -> set[str]:
    values = _values()
    return set(_secret_names([d for _, d in DOCUMENTS])) | set(_secret_names(values)) | {values["global"]["postgresqlSecretName"]}


def test_every_secret_and_config_map_a_pod_needs_is_created_or_documented() -> None:
    """Secrets come from the operators or from docs/deploy.md's commands; ConfigMaps from the manifests or the docs."""
    generated = {"iot-bridge", "iot-consumer", "iot-dagster", "iot-cluster-ca-cert", "iot-pg-ca"}  # Strimzi, CNPG
    doc = DEPLOY_DOC.read_text()
    created_by_docs = set(re.findall(r"kubectl create secret \w+ ([\w-]+)", doc))
    assert _referenced_secrets() - generated - created_by_docs == set()
    assert generated <= _referenced_secrets()
    config_maps = {d["metadata"]["name"] for _, d in DOCUMENTS if d["kind"] == "ConfigMap"}
    config_maps |= set(re.findall(r"kubectl create configmap ([\w-]+)", doc))
    for name, spec in _pod_specs():
        used = {v["configMap"]["name"] for v in spec.get("volumes", []) if "configMap" in v}
        used |= {s["configMapRef"]["name"] for c in spec["containers"] for s in c.get("envFrom", [])}
        assert used <= config_maps, name


def test_pods_mount_every_file_their_settings_name() -> None:
    """IOT_*_CA_FILE / SSLROOTCERT paths are inside a mounted volume of each platform container."""
    settings_map = _config_map_data("iot-platform-settings")
    files = [settings_map[k] for k in ("IOT_MQTT_CA_FILE", "IOT_KAFKA_SSL_CA_FILE", "IOT_PG_SSLROOTCERT")]
    needs = {"iot-bridge": files[:2], "iot-consumer": files[1:], "iot-toolbox": files, "dagster code location": files}
    for name, container in _platform_containers():
        mounts = [m["mountPath"] for m in container["volumeMounts"]]
        for path in needs[name]:
            assert any(path.startswith(m + "/") for m in mounts), (name, path)
        assert any(m == settings_map["IOT_HOME"] for m in mounts), name


# --- Mosquitto -----------------------------------------------------------------------------------


def _mosquitto_options(text: str) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            options.setdefault(key, []).append(value)
    return options


def test_mosquitto_keeps_the_local_brokers_delivery_limits_with_auth_and_tls() -> None:
    """Queue, inflight, autosave and expiry as the local broker; no anonymous client; TLS 8883; dynsec on the volume."""
    conf = _mosquitto_options(_config_map_data("mosquitto-config")["mosquitto.conf"])
    local = _mosquitto_options(render_config(MosquittoConfig(plain_port=1883, data_dir=Path("/d"), log_path=Path("/l"), dynsec_plugin=Path("/p"))))
    for key in ("max_queued_messages", "max_queued_bytes", "max_inflight_messages", "max_inflight_bytes",
                "max_packet_size", "autosave_on_changes", "autosave_interval", "persistent_client_expiration",
                "persistence", "persistence_file"):
        assert conf[key] == local[key], key
    assert conf["allow_anonymous"] == local["allow_anonymous"] == ["false"]
    assert conf["listener"] == ["8883", "1883 127.0.0.1"]
    assert conf["plugin"] == ["/usr/lib/mosquitto_dynamic_security.so"]
    statefulset = _find("StatefulSet", "mosquitto")
    mounts = {m["name"]: m["mountPath"] for m in statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    data_dir = conf["persistence_location"][0].rstrip("/")
    assert mounts["data"] == data_dir and conf["plugin_opt_config_file"][0].startswith(data_dir + "/")
    assert [t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]] == ["data"]
    assert all(path.startswith(mounts["tls"] + "/") for path in conf["certfile"] + conf["keyfile"])
    init = statefulset["spec"]["template"]["spec"]["initContainers"][0]
    assert conf["plugin_opt_config_file"][0] in init["command"][-1]


# --- Grafana -------------------------------------------------------------------------------------


def test_grafana_mounts_the_generated_provisioning() -> None:
    """ConfigMaps of deploy/grafana mounted where the provider expects them; every ${VAR} of the data source set."""
    spec = _find("Deployment", "grafana")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["datasources"] == f"{CONTAINER_PROVISIONING}/datasources"
    assert mounts["dashboards"] == f"{CONTAINER_PROVISIONING}/dashboards"
    text = (ROOT / "deploy" / "grafana" / "datasources" / "iot-postgres.yaml").read_text()
    assert set(re.findall(r"\$\{(\w+)\}", text)) <= {v["name"] for v in container["env"]}
    for folder in ("datasources", "dashboards"):
        files = list((ROOT / "deploy" / "grafana" / folder).iterdir())
        assert all(re.fullmatch(r"[-._a-zA-Z0-9]+", f.name) for f in files)
        assert sum(f.stat().st_size for f in files) < 1_000_000  # a ConfigMap holds at most 1 MiB
        assert f"--from-file=deploy/grafana/{folder}" in DEPLOY_DOC.read_text()


# --- Dagster Helm values -----------------------------------------------------------------------


def _k8s_errors(definition: str, value: Any) -> list[str]:
    return [e.message for e in core_definition_validator(f"io.k8s.api.core.v1.{definition}").iter_errors(value)]


def test_dagster_values_kubernetes_fields_match_the_kubernetes_schemas() -> None:
    """The chart types these fields as Kubernetes definitions: validate them as such (strict)."""
    values = _values()
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    sections = [values["dagsterWebserver"], values["dagsterDaemon"], deployment, values["runLauncher"]["config"]["k8sRunLauncher"]]
    checked = 0
    for section in sections:
        for field, definition in (("resources", "ResourceRequirements"), ("volumes", "Volume"), ("volumeMounts", "VolumeMount"),
                                  ("env", "EnvVar"), ("envConfigMaps", "ConfigMapEnvSource"), ("envSecrets", "SecretEnvSource")):
            items = section.get(field)
            for item in ([items] if isinstance(items, dict) else items or []):
                assert _k8s_errors(definition, item) == [], (field, item)
                checked += 1
    assert checked >= 25
    assert _k8s_errors("VolumeMount", {"name": "x", "mountpath": "/x"})  # positive control


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _instance_from_values(values: dict[str, Any]) -> dict[str, Any]:
    """The instance (dagster.yaml) the chart renders from these values, for the parts we set."""
    pg = values["postgresql"]
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher_config = {_snake(k): v for k, v in launcher.items()}
    for key in ("env_config_maps", "env_secrets"):
        launcher_config[key] = [item["name"] for item in launcher_config[key]]
    launcher_config |= {"service_account_name": "dagster", "instance_config_map": "dagster-instance",
                        "postgres_password_secret": values["global"]["postgresqlSecretName"],
                        "dagster_home": "/opt/dagster/dagster_home"}
    return {
        "storage": {"postgres": {"postgres_db": {
            "username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
            "hostname": pg["postgresqlHost"], "db_name": pg["postgresqlDatabase"], "port": pg["service"]["port"],
            "params": pg["postgresqlParams"], "scheme": pg["postgresqlScheme"]}}},
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": {_snake(k): v for k, v in queued.items()}},
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher_config},
        "run_monitoring": {_snake(k): v for k, v in values["dagsterDaemon"]["runMonitoring"].items()},
        "telemetry": values["telemetry"],
    }


def test_dagster_instance_from_values_is_valid_for_dagster_and_equals_dagster_yaml() -> None:
    """The rendered instance passes dagster's and dagster-k8s's config schemas, and its queue, run
    monitoring and telemetry are dagster.yaml's (tag concurrency limits included)."""
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config_schema
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_k8s import K8sRunLauncher

    instance = _instance_from_values(_values())
    for schema, config in ((dagster_instance_config_schema(), instance),
                           (QueuedRunCoordinator.config_type(), instance["run_coordinator"]["config"]),
                           (K8sRunLauncher.config_type(), instance["run_launcher"]["config"])):
        result = validate_config(schema, config)
        assert result.success, [e.message for e in result.errors]
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert instance["run_coordinator"]["config"] == local["run_coordinator"]["config"]
    assert instance["run_monitoring"] == local["run_monitoring"]
    assert instance["telemetry"] == local["telemetry"] == {"enabled": False}
    from iot_platform.stack.dagster_processes import STORAGE_CONFIG

    local_storage = yaml.safe_load(STORAGE_CONFIG)["storage"]  # what dev up adds to dagster.yaml
    assert instance["storage"]["postgres"]["postgres_db"]["scheme"] == local_storage["postgres"]["postgres_db"]["scheme"]
    broken = copy.deepcopy(instance["run_launcher"]["config"]) | {"load_in_cluster_config": True}
    assert not validate_config(K8sRunLauncher.config_type(), broken).success  # positive control


def test_dagster_values_fields_the_deployment_relies_on() -> None:
    """Storage on the CNPG `dagster` database over verify-full, our image everywhere, the code location
    module of pyproject.toml, runs inheriting its config, and the service watchdog switched off."""
    values = _values()
    pg = values["postgresql"]
    database = _find("Database", "iot-pg-dagster")["spec"]
    roles = {r["name"] for r in _find("Cluster", "iot-pg")["spec"]["managed"]["roles"]}
    assert pg["enabled"] is False and pg["postgresqlHost"] == _config_map_data("iot-platform-settings")["IOT_PG_HOST"]
    assert pg["postgresqlDatabase"] == database["name"] and pg["postgresqlUsername"] == database["owner"] in roles
    assert pg["postgresqlParams"]["sslmode"] == "verify-full"
    for component in ("dagsterWebserver", "dagsterDaemon"):
        section = values[component]
        assert f"{section['image']['repository']}:{section['image']['tag']}" == IMAGE
        mounts = [m["mountPath"] for m in section["volumeMounts"]]
        assert any(pg["postgresqlParams"]["sslrootcert"].startswith(m + "/") for m in mounts), component
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"] and deployment["includeConfigInLaunchedRuns"]["enabled"]
    assert f"{deployment['image']['repository']}:{deployment['image']['tag']}" == IMAGE
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert deployment["dagsterApiGrpcArgs"] == ["-m", pyproject["tool"]["dg"]["project"]["code_location_target_module"]]
    assert {"name": "IOT_DAGSTER_SUPERVISES_SERVICES", "value": "false"} in deployment["env"]


def test_toolbox_and_code_location_share_one_environment() -> None:
    """`kubectl exec` into the toolbox runs commands exactly as Dagster's runs do."""
    containers = dict(_platform_containers())
    toolbox, location = _environment(containers["iot-toolbox"]), _environment(containers["dagster code location"])
    location.pop("IOT_DAGSTER_SUPERVISES_SERVICES")
    assert toolbox == location


# --- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_copies_existing_paths_and_installs_the_cli() -> None:
    """Every COPY source exists, the install uses the constraints and an existing extra, the user
    matches the pods' uid, and the commands the manifests run are console scripts of the package."""
    text = (ROOT / "Dockerfile").read_text()
    copies = re.findall(r"^COPY (.+) \S+$", text, re.M)
    assert copies
    for sources in copies:
        for source in sources.split():
            assert (ROOT / source).exists(), source
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (extra,) = re.findall(r'pip install -c constraints\.txt "\.\[(\w+)\]"', text)
    assert "dagster-k8s==0.29.27" in pyproject["project"]["optional-dependencies"][extra]
    assert "iot-platform" in pyproject["project"]["scripts"]
    python = re.search(r"^FROM python:(\d+)\.(\d+)", text, re.M)
    assert python and (int(python.group(1)), int(python.group(2))) >= (3, 11)
    assert re.search(r"^USER 10001$", text, re.M)
    uids = {spec["securityContext"]["runAsUser"] for name, spec in _pod_specs()
            if spec["containers"][0]["image"] == IMAGE}
    assert uids == {10001}
    assert f"IOT_HOME={_config_map_data('iot-platform-settings')['IOT_HOME']}" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {s for sources in copies for s in sources.split()} & set(ignored)


def test_deploy_doc_applies_every_manifest() -> None:
    """docs/deploy.md names every manifest file and the values file, and nothing that does not exist."""
    doc = DEPLOY_DOC.read_text()
    for path in sorted(MANIFESTS.glob("*.yaml")) + [DAGSTER_VALUES]:
        assert str(path.relative_to(ROOT)) in doc, path.name
    for mentioned in re.findall(r"deploy/kubernetes/[\w/.-]+\.yaml", doc):
        assert (ROOT / mentioned).exists(), mentioned

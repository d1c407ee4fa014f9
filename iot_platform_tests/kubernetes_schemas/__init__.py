"""Published schemas for the manifests under deploy/kubernetes, fetched from package registries.

- Core kinds (StatefulSet, ConfigMap, ...): the JSON schemas that PyPI's ``kubernetes-validate`` ships
  (pinned in the ``test`` extra), in their strict form: an unknown field is an error, as it is for
  ``kubectl apply`` with its default strict field validation.
- Strimzi ``Kafka``, ``KafkaNodePool``, ``KafkaTopic``, ``KafkaUser``: Strimzi publishes no CRD file to a
  registry, but Maven Central serves the two artifacts Strimzi's own build generates them from
  (``io.strimzi:api`` and ``io.strimzi:crd-generator``, see ``strimzi/pom.xml``). We resolve them, check
  their SHA-256 and run the generator with the arguments of Strimzi's build. It needs Java 21 or later.
- CloudNativePG ``Cluster`` and ``Database``: the Go module ``github.com/cloudnative-pg/cloudnative-pg``
  (a real Go module) ships ``config/crd/bases/*.yaml``; ``go mod download`` fetches it, verifies it
  against the Go checksum database, and we compare its ``h1:`` hash with the pin below.

Everything lands once in ``~/.cache/iot-platform/kubernetes-schemas`` (``XDG_CACHE_HOME`` honoured);
later runs read the cache. ``python -m iot_platform_tests.kubernetes_schemas`` warms it (``make deps``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
KUBERNETES_VERSION = "1.33.0"  # the oldest Kubernetes docs/deploy.md supports

STRIMZI_VERSION = "1.2.0"
STRIMZI_JAR_SHA256 = {
    f"api-{STRIMZI_VERSION}.jar": "566961ae5e5646a001ae91312beda5cba3a5d467e740e205e1b761754335fe4e",
    f"crd-generator-{STRIMZI_VERSION}.jar": "76bb2430e702a1e6a24c071d26c865d5e9572cbc630d176d3b912033ae23ed00",
}
STRIMZI_MODELS = {
    "Kafka": "io.strimzi.api.kafka.model.kafka.Kafka",
    "KafkaNodePool": "io.strimzi.api.kafka.model.nodepool.KafkaNodePool",
    "KafkaTopic": "io.strimzi.api.kafka.model.topic.KafkaTopic",
    "KafkaUser": "io.strimzi.api.kafka.model.user.KafkaUser",
}
# The arguments of the generate-crd-co-install-v1 execution in io.strimzi:api's pom.
STRIMZI_GENERATOR_ARGS = [
    "--label", "app:strimzi", "--label", "strimzi.io/crd-install:true", "--target-kube", "1.16+",
    "--crd-api-version", "v1", "--api-versions", "v1", "--storage-version", "v1",
]
MIN_JAVA = 21  # the generator's class files are Java 21

CNPG_MODULE = "github.com/cloudnative-pg/cloudnative-pg"
CNPG_VERSION = "v1.30.0"
CNPG_H1 = "h1:fnhVq44xXx97MNiuvJsPrX1vSjYbgdyBK5MSGfdHdp0="
CNPG_CRDS = {
    "Cluster": "config/crd/bases/postgresql.cnpg.io_clusters.yaml",
    "Database": "config/crd/bases/postgresql.cnpg.io_databases.yaml",
}
TIMEOUT_S = 600


class SchemaUnavailable(RuntimeError):
    """A schema could not be fetched or generated here; the message names what to install or fix."""


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "iot-platform" / "kubernetes-schemas"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(command: list[str], what: str, **kwargs: Any) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False, **kwargs)
    except FileNotFoundError as exc:
        raise SchemaUnavailable(f"{what}: {command[0]} is not installed") from exc
    if done.returncode != 0:
        raise SchemaUnavailable(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}")
    return done.stdout


def _publish(build: Path, target: Path) -> Path:
    """Move a finished build directory into place (atomic, so a half-written cache never exists)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        build.rename(target)
    except OSError:  # another process published it first
        shutil.rmtree(build, ignore_errors=True)
    return target


def java_version(java: Path) -> int | None:
    try:
        done = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return None
    match = re.search(r'version "(\d+)', done.stderr + done.stdout)
    return int(match.group(1)) if match else None


def find_java(minimum: int = MIN_JAVA) -> Path:
    """A java binary of at least ``minimum``: JAVA_HOME, then the JDKs under /usr/lib/jvm, then PATH."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    candidates += sorted(Path("/usr/lib/jvm").glob("*/bin/java"), reverse=True)
    if shutil.which("java"):
        candidates.append(Path(shutil.which("java")))  # type: ignore[arg-type]
    for java in candidates:
        version = java_version(java)
        if version is not None and version >= minimum:
            return java
    raise SchemaUnavailable(
        f"Strimzi's CRD generator needs Java {minimum}+; none found (JAVA_HOME, /usr/lib/jvm, PATH): "
        f"install one and set JAVA_HOME"
    )


def strimzi_crd_dir() -> Path:
    """Directory with one generated CRD YAML per Strimzi kind (generated on first use)."""
    target = cache_dir() / f"strimzi-{STRIMZI_VERSION}"
    if all((target / f"{kind}.yaml").exists() for kind in STRIMZI_MODELS):
        return target
    pom = HERE / "strimzi" / "pom.xml"
    with tempfile.TemporaryDirectory() as tmp:
        classpath_file = Path(tmp) / "classpath.txt"
        _run(["mvn", "-B", "-q", "-f", str(pom), "dependency:build-classpath", f"-Dmdep.outputFile={classpath_file}"],
             "resolving the Strimzi artifacts with Maven")
        jars = [Path(p) for p in classpath_file.read_text().strip().split(os.pathsep) if p]
    by_name = {jar.name: jar for jar in jars}
    for name, expected in STRIMZI_JAR_SHA256.items():
        if name not in by_name:
            raise SchemaUnavailable(f"Maven did not resolve {name} (got {sorted(by_name)})")
        actual = _sha256(by_name[name])
        if actual != expected:
            raise SchemaUnavailable(f"{by_name[name]} has SHA-256 {actual}, pinned {expected}")
    build = Path(tempfile.mkdtemp(prefix="strimzi-", dir=_ensure(cache_dir())))
    outputs = [f"{model}={build / f'{kind}.yaml'}" for kind, model in STRIMZI_MODELS.items()]
    _run([str(find_java()), "-cp", os.pathsep.join(str(j) for j in jars), "io.strimzi.crdgenerator.CrdGenerator",
          *STRIMZI_GENERATOR_ARGS, "--yaml", *outputs], "running Strimzi's CRD generator")
    (build / "SOURCE.json").write_text(json.dumps({"maven": STRIMZI_JAR_SHA256, "args": STRIMZI_GENERATOR_ARGS}, indent=2))
    return _publish(build, target)


def cnpg_crd_dir() -> Path:
    """Directory with CloudNativePG's CRD YAMLs, taken from its Go module zip (downloaded on first use)."""
    target = cache_dir() / f"cloudnative-pg-{CNPG_VERSION}"
    if all((target / f"{kind}.yaml").exists() for kind in CNPG_CRDS):
        return target
    with tempfile.TemporaryDirectory() as tmp:  # outside any Go module: a plain download
        out = _run(["go", "mod", "download", "-json", f"{CNPG_MODULE}@{CNPG_VERSION}"],
                   "downloading the CloudNativePG Go module", cwd=tmp, env={**os.environ, "GOFLAGS": "-mod=mod"})
    info = json.loads(out)
    if info.get("Error"):
        raise SchemaUnavailable(f"go mod download: {info['Error']}")
    if info.get("Sum") != CNPG_H1:
        raise SchemaUnavailable(f"{CNPG_MODULE}@{CNPG_VERSION} has {info.get('Sum')}, pinned {CNPG_H1}")
    build = Path(tempfile.mkdtemp(prefix="cnpg-", dir=_ensure(cache_dir())))
    with zipfile.ZipFile(info["Zip"]) as archive:
        for kind, member in CNPG_CRDS.items():
            (build / f"{kind}.yaml").write_bytes(archive.read(f"{CNPG_MODULE}@{CNPG_VERSION}/{member}"))
    (build / "SOURCE.json").write_text(json.dumps({"go_module": f"{CNPG_MODULE}@{CNPG_VERSION}", "sum": CNPG_H1}, indent=2))
    return _publish(build, target)


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class CrdVersion:
    group: str
    kind: str
    version: str
    schema: dict[str, Any]  # openAPIV3Schema

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


def read_crd(path: Path) -> list[CrdVersion]:
    document = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 0.8 MB of YAML
    assert document["kind"] == "CustomResourceDefinition", path
    spec = document["spec"]
    return [CrdVersion(spec["group"], spec["names"]["kind"], v["name"], v["schema"]["openAPIV3Schema"])
            for v in spec["versions"] if v.get("served", True)]


@cache
def crd_schemas() -> dict[tuple[str, str], CrdVersion]:
    """(apiVersion, kind) -> the CRD's schema, for every Strimzi and CloudNativePG kind we use."""
    found: dict[tuple[str, str], CrdVersion] = {}
    for directory, kinds in ((strimzi_crd_dir(), STRIMZI_MODELS), (cnpg_crd_dir(), CNPG_CRDS)):
        for kind in kinds:
            for crd in read_crd(directory / f"{kind}.yaml"):
                found[(crd.api_version, crd.kind)] = crd
    return found


def structural_json_schema(node: Any) -> Any:
    """A CRD openAPIV3Schema as a JSON schema that rejects unknown fields.

    The API server prunes (or, with kubectl's default strict field validation, rejects) a field a
    structural schema does not declare, unless ``x-kubernetes-preserve-unknown-fields`` is set; JSON
    Schema allows it unless ``additionalProperties`` is false. ``nullable`` becomes a null type.
    CEL rules (``x-kubernetes-validations``) are not evaluated here.
    """
    if isinstance(node, list):
        return [structural_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: structural_json_schema(value) for key, value in node.items()}
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        converted["additionalProperties"] = False
    if node.get("nullable") and isinstance(node.get("type"), str):
        converted["type"] = [node["type"], "null"]
    return converted


def _strict_dir() -> Path:
    import importlib_resources

    root = importlib_resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"
    return Path(str(root))


@cache
def _core_definitions() -> dict[str, Any]:
    return json.loads((_strict_dir() / "_definitions.json").read_text())


@cache
def core_definition_validator(name: str) -> Any:
    """A validator for one Kubernetes definition (e.g. ``io.k8s.api.core.v1.Volume``), strict."""
    import jsonschema
    from referencing import Registry, Resource

    definitions = _core_definitions()
    registry = Resource.from_contents(definitions) @ Registry()
    return jsonschema.Draft202012Validator({"$ref": f"{definitions['$id']}#/$defs/{name}"}, registry=registry)


def core_kind_errors(document: dict[str, Any]) -> list[str]:
    """Errors of a core-kind object against kubernetes-validate's strict schema ([] when valid)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"]
    return []


def is_core_kind(document: dict[str, Any]) -> bool:
    return (document["apiVersion"], document["kind"]) not in crd_schemas()


def custom_resource_errors(document: dict[str, Any]) -> list[str]:
    """Errors of a Strimzi or CloudNativePG object against its CRD's schema ([] when valid)."""
    import jsonschema

    crd = crd_schemas()[(document["apiVersion"], document["kind"])]
    validator = jsonschema.Draft7Validator(structural_json_schema(crd.schema))
    errors = [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    meta = core_definition_validator("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
    errors += [f"metadata.{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
               for e in meta.iter_errors(document.get("metadata", {}))]
    return errors


def main() -> int:
    """Fetch and generate everything once (``make deps``), printing where it went."""
    for name, directory in (("strimzi", strimzi_crd_dir()), ("cloudnative-pg", cnpg_crd_dir())):
        print(f"{name}: {directory}")
    return 0

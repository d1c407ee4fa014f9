# The platform's image: the `iot_platform` package and the `iot-platform` CLI, with the same pinned
# versions as the test suite (constraints.txt), plus dagster-k8s for the Dagster Helm chart's
# K8sRunLauncher. One image serves the bridge, the consumer, the toolbox, the Dagster code location,
# its runs, the Dagster webserver and the daemon (deploy/kubernetes/, docs/deploy.md):
#
#   docker build -t <registry>/iot-platform:0.1.0 .
#
# Python 3.11: the version the test suite runs on (requires-python >= 3.11).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/iot-platform
# Dependencies first, so a code change does not reinstall them. The wheels of psycopg2-binary,
# confluent-kafka and grpcio carry their C libraries: no compiler in the image.
COPY pyproject.toml constraints.txt README.md ./
COPY iot_platform ./iot_platform
RUN pip install -c constraints.txt ".[k8s]" \
    && iot-platform --help >/dev/null \
    && python -c "import iot_platform.orchestration.definitions, dagster_k8s, dagster_postgres"

# Read by `dagster-webserver`/`dagster-daemon` from the working directory when run by hand; under
# the Helm chart the instance comes from its ConfigMap in DAGSTER_HOME.
COPY dagster.yaml workspace.yaml ./

# A non-root user (the manifests run every pod as uid 10001 with a read-only root filesystem):
# DAGSTER_HOME must be writable for the webserver's and daemon's local files.
RUN groupadd --gid 10001 iot \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent iot \
    && mkdir -p /opt/dagster/dagster_home /var/run/iot \
    && chown 10001:10001 /opt/dagster/dagster_home /var/run/iot
ENV DAGSTER_HOME=/opt/dagster/dagster_home \
    IOT_HOME=/var/run/iot
USER 10001

CMD ["iot-platform", "--help"]

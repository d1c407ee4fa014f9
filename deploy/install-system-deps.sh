#!/usr/bin/env bash
# Installs what the platform needs from the machine: Mosquitto (Debian; its package ships the
# dynamic-security plugin) and its command-line clients (the README's device example), a JDK and Maven (for the
# Kafka jars, resolved into ~/.m2 from deploy/kafka/pom.xml), PostgreSQL server binaries.
# As root it installs missing Debian packages; otherwise it says, in one line, what to install.
set -euo pipefail

missing=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null || missing+=(mosquitto-clients)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing system packages; install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
# A package install may start a system-wide broker on 1883; the platform runs its own.
if [ "$(id -u)" -eq 0 ] && pgrep -x mosquitto -u mosquitto >/dev/null 2>&1; then
  pkill -x -u mosquitto mosquitto || true
fi

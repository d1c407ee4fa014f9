#!/usr/bin/env bash
# Installs what the platform needs from the machine: Mosquitto (Debian; its package ships the
# dynamic-security plugin) and its command-line clients (the README's device example), a JDK and Maven (for the
# Kafka jars, resolved into ~/.m2 from deploy/kafka/pom.xml), PostgreSQL server binaries.
# As root it installs missing Debian packages; otherwise it says, in one line, what to install.
#
# It never stops a process it did not start. Installing Debian's mosquitto package may start a
# system-wide broker on port 1883; only a broker that this very install started is stopped again
# (the platform runs its own). A broker that was already running is left alone: if it holds the
# platform's port, `iot-platform dev up` fails and names the setting to change (IOT_MQTT_URL).
set -euo pipefail

missing=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null || missing+=(mosquitto-clients)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    # pgrep exits 1 when no broker runs; under pipefail that would end the script here.
    brokers_before=" $( (pgrep -x mosquitto || true) | tr '\n' ' ') "
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    for pid in $(pgrep -x mosquitto || true); do
      case "$brokers_before" in
        *" $pid "*) ;;  # running before this install: not ours to stop
        *) echo "stopping the broker the mosquitto package started (pid $pid)"; kill "$pid" || true ;;
      esac
    done
  else
    echo "missing system packages; install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

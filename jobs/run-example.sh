#!/usr/bin/env bash
# Run the example job (jobs/page_activity.yaml) end to end on embedded defaults: no servers.
# Sets up .venv on first use, generates 50,000 sample click events, runs the job on a local
# Flink mini-cluster and prints the materialized per-minute view as a table.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m== %s\033[0m\n' "$*"; }

if ! command -v javac >/dev/null 2>&1; then
  say "installing a JDK for Flink and Headrace's JVM functions (apt)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jdk-headless >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "${PYTHON:-python3}" -m venv .venv
fi
if ! .venv/bin/python -c 'import pyflink, headrace.jobs' >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.installed-example ]; then
  say "installing headrace into .venv (first time: ~2 min)"
  .venv/bin/pip install --quiet --disable-pip-version-check -e . 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import pyflink, headrace.jobs'
  touch .venv/.installed-example
fi

say "generating sample events"
.venv/bin/headrace generate --events "${EVENTS:-50000}" --out .headrace/local/clicks.jsonl
say "running jobs/page_activity.yaml (profile: local)"
.venv/bin/headrace run jobs/page_activity.yaml --limit "${LIMIT:-24}"

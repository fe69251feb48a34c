#!/bin/sh
# Container entrypoint. `serve` (the default command) runs the start sequence:
#   1. migrations under a PostgreSQL advisory lock (skip with MIGRATE_ON_START=false, e.g.
#      when a Helm hook Job or a release phase already ran them),
#   2. collectstatic when COLLECTSTATIC_ON_START=true (the image collects at build time),
#   3. `python manage.py serve`: gunicorn with $WEB_CONCURRENCY uvicorn workers on $HOST:$PORT.
# `scheduler` runs the background process every deployment needs beside the API: scheduled
# changes and rollout steps, webhook deliveries and exposure counts (`run_scheduler`), after
# the same locked migration, so it never starts on an old schema.
# Any other command runs as given, e.g. `python manage.py createsuperuser`.
set -eu

PYTHON="${PYTHON:-python}"
cd "$(dirname "$0")/.."

if [ "$#" -eq 0 ] || [ "$1" = "serve" ]; then
  # Workers share metrics through files here; a fresh directory per start when unset.
  if [ -z "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    PROMETHEUS_MULTIPROC_DIR="$(mktemp -d "${TMPDIR:-/tmp}/flags-metrics.XXXXXX")"
    export PROMETHEUS_MULTIPROC_DIR
  fi
  if [ "${MIGRATE_ON_START:-true}" = "true" ]; then
    "$PYTHON" manage.py migrate_locked --no-input
  fi
  if [ "${COLLECTSTATIC_ON_START:-false}" = "true" ]; then
    "$PYTHON" manage.py collectstatic --no-input --verbosity 0
  fi
  exec "$PYTHON" manage.py serve
fi

if [ "$1" = "scheduler" ]; then
  shift
  if [ "${MIGRATE_ON_START:-true}" = "true" ]; then
    "$PYTHON" manage.py migrate_locked --no-input
  fi
  exec "$PYTHON" manage.py run_scheduler "$@"
fi

exec "$@"

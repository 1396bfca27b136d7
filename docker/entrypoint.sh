#!/bin/sh
# Start the SAM 2.1 backend under gunicorn. The image's CMD runs this, and so does scripts/check_runtime.sh, so the
# command checked outside Docker is the command the container runs.
#
# Settings (environment): PORT (default 9090), THREADS (gunicorn threads, default 8), WORKERS (must be 1: tracking
# sessions live in this one process's memory). Everything else (MODEL_DIR, OV_THREADS, ...) is read by _wsgi.py.
set -eu
cd "$(dirname "$0")/.."   # the folder holding _wsgi.py and backend/ (/app in the image, the repo root outside it)
PORT=${PORT:-9090}
THREADS=${THREADS:-8}
if [ "${WORKERS:-1}" != "1" ]; then
  echo "entrypoint: WORKERS=${WORKERS} is not supported; sessions live in process memory, so run one worker" \
       "(scale with THREADS, or run more containers behind a sticky router)" >&2
  exit 2
fi
# --timeout 0: a long video propagation must not get the worker killed; PREDICT_TIME_BUDGET_S bounds requests instead.
exec gunicorn --bind "0.0.0.0:${PORT}" --workers 1 --threads "${THREADS}" --timeout 0 --graceful-timeout 30 \
  _wsgi:app

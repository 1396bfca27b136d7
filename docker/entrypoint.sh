#!/bin/sh
# Start the SAM 2.1 backend under gunicorn. The image's CMD runs this, and so does scripts/check_runtime.sh, so the
# command checked outside Docker is the command the container runs.
#
# Settings (environment): PORT (default 9090), THREADS (gunicorn threads, default 8), WORKERS (must be 1: tracking
# sessions live in this one process's memory), HEALTH_PORT (default 9091: a /health process of its own that
# answers while all THREADS are busy; 0 turns it off). Everything else (MODEL_DIR, OV_THREADS, ...) is read by _wsgi.py.
set -eu
cd "$(dirname "$0")/.."   # the folder holding _wsgi.py and backend/ (/app in the image, the repo root outside it)
PORT=${PORT:-9090}
THREADS=${THREADS:-8}
export HEALTH_PORT="${HEALTH_PORT:-9091}"
if [ "${WORKERS:-1}" != "1" ]; then
  echo "entrypoint: WORKERS=${WORKERS} is not supported; sessions live in process memory, so run one worker" \
       "(scale with THREADS, or run more containers behind a sticky router)" >&2
  exit 2
fi
# Timeouts (no request may hold a thread forever, and nothing here kills a healthy long propagation):
# --timeout 60: with the gthread worker this is the worker's heartbeat, sent by its main loop, not by request threads;
#   a long /predict never trips it (PREDICT_TIME_BUDGET_S bounds requests, and propagation runs on job threads). Only
#   a wedged process (main loop silent for 60 s) is replaced. `--timeout 0` turned even that off.
# --graceful-timeout 30: on stop/restart, requests get 30 s to finish (LS gives /predict 100 s; the job's result is
#   rebuilt from LS after a restart anyway).
# --keep-alive 5: an idle keep-alive connection releases its slot after 5 s.
# --limit-request-line/-fields/-field_size: gunicorn's defaults, spelled out: headers are small and bounded; bodies
#   are capped by MAX_BODY_MB in the app.
# --worker-class: gthread plus a deadline on request headers (HEADER_TIMEOUT_S, default 10 s): gthread alone lets a
#   client dripping its headers hold a thread forever (backend/serving/gworker.py).
exec gunicorn --bind "0.0.0.0:${PORT}" --workers 1 --threads "${THREADS}" \
  --worker-class backend.serving.gworker.HeaderDeadlineWorker --timeout 60 --graceful-timeout 30 \
  --keep-alive 5 --limit-request-line 8190 --limit-request-fields 100 --limit-request-field_size 8190 _wsgi:app

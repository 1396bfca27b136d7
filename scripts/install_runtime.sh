#!/usr/bin/env bash
# Install the serving runtime (requirements.txt: OpenVINO, Flask, gunicorn, ...; no torch) into the Python
# environment of $PIP (default: pip).
# The ONE install step for serving: docker/Dockerfile's runtime stage runs it, and scripts/check_runtime.sh runs it
# in a brand-new venv, so a green check proves the image's install step.
set -euo pipefail
PIP=${PIP:-pip}
here=$(cd "$(dirname "$0")/.." && pwd)
$PIP install --no-cache-dir -r "$here/requirements.txt"

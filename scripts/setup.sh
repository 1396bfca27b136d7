#!/usr/bin/env bash
# Create .venv with everything: serving runtime, export tools (torch + sam2) and test tools.
# Safe to re-run: it only reinstalls when a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] >= (3, 10), "Python 3.10+ is required"' \
  || { echo "setup: Python 3.10 or newer is required (set PYTHON=...)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-export.txt requirements-dev.txt scripts/install_runtime.sh scripts/install_export_deps.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip wheel setuptools
  PIP=".venv/bin/pip" bash scripts/install_runtime.sh   # the serving runtime, exactly as the Docker image installs it
  .venv/bin/pip install -q -r requirements-dev.txt
  PIP=.venv/bin/pip bash scripts/install_export_deps.sh
  # sam2 declares torchvision, which the video predictor never imports (and PyPI's build clashes with CPU torch)
  if ! out=$(.venv/bin/pip check 2>&1); then
    bad=$(echo "$out" | grep -v '^sam2 .* requires torchvision' || true)
    [ -z "$bad" ] || { echo "$bad" >&2; exit 1; }
  fi
  echo "$want" > "$stamp"
fi
echo "setup: .venv ready ($(.venv/bin/python --version))"

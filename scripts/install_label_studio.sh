#!/usr/bin/env bash
# Install Label Studio into .ls-venv (repo root) for the end-to-end tests (tests/e2e). Kept apart from .venv because
# LS pins its own numpy/opencv/Django stack. Safe to re-run: pip runs only when .ls-venv/bin/label-studio is missing
# or the installed version is not $LS_VERSION.
set -euo pipefail
cd "$(dirname "$0")/.."
LS_VERSION=${LS_VERSION:-1.23.2}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || { echo "install_label_studio: $PY not found (set PYTHON=...; LS needs Python 3.10+)" >&2; exit 1; }
[ -x .ls-venv/bin/python ] || "$PY" -m venv .ls-venv
installed() {
  [ -x .ls-venv/bin/label-studio ] || return 0
  .ls-venv/bin/python -c 'import importlib.metadata as m; print(m.version("label-studio"))' 2>/dev/null || true
}
if [ "$(installed)" != "$LS_VERSION" ]; then
  .ls-venv/bin/pip install -q --upgrade pip
  .ls-venv/bin/pip install -q "label-studio==$LS_VERSION"
fi
v=$(installed)
[ "$v" = "$LS_VERSION" ] || { echo "install_label_studio: expected label-studio $LS_VERSION, found '${v:-none}'" >&2; exit 1; }
echo "label-studio $v in .ls-venv"

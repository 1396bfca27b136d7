#!/usr/bin/env bash
# Install the export requirements (torch + sam2) into the Python environment of $PIP (default: pip).
# Used by scripts/setup.sh and by the export stage of docker/Dockerfile, so both install exactly the same way.
set -euo pipefail
PIP=${PIP:-pip}
here=$(cd "$(dirname "$0")/.." && pwd)
$PIP install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple} -r "$here/requirements-export.txt"
SAM2_BUILD_CUDA=0 $PIP install -q --no-build-isolation --no-deps sam2==1.1.0

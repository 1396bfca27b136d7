#!/usr/bin/env bash
# Deploy the SAM 2.1 tracker as a nuclio function for CVAT's serverless stack (CPU image).
#
#   serverless/sam2-tracker/deploy.sh MODEL_DIR [extra nuctl deploy arguments]
#
# MODEL_DIR: a folder made by `python -m model_export --out DIR` (it goes into the image as /opt/nuclio/model).
# Stages main.py, function.yaml, requirements.txt, the backend packages the function needs and the model into a
# temporary folder, then runs `nuctl deploy` on it the way CVAT's serverless/deploy_cpu.sh does.
# STAGE_ONLY=DIR: stage into DIR and stop (no nuctl; used by the tests).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
model="${1:?usage: deploy.sh MODEL_DIR [nuctl args] (MODEL_DIR from python -m model_export --out DIR)}"
shift
if [ ! -f "$model/manifest.json" ]; then
    echo "deploy.sh: $model holds no manifest.json; export a model first: python -m model_export --out DIR" >&2
    exit 2
fi

if [ -n "${STAGE_ONLY:-}" ]; then
    stage="$STAGE_ONLY"
    mkdir -p "$stage"
else
    stage="$(mktemp -d)"
    trap 'rm -rf "$stage"' EXIT
fi

cp "$here/main.py" "$here/function.yaml" "$stage/"
cp "$root/requirements.txt" "$stage/requirements.txt"
mkdir -p "$stage/backend"
cp "$root/backend/__init__.py" "$root/backend/settings.py" "$stage/backend/"
cp -r "$root/backend/engine" "$root/backend/serving" "$root/backend/cvat" "$stage/backend/"
rm -rf "$stage/model" && cp -r "$model" "$stage/model"
find "$stage" -name __pycache__ -prune -exec rm -rf {} +

if [ -n "${STAGE_ONLY:-}" ]; then
    echo "staged in $stage"
    exit 0
fi

nuctl create project cvat --platform local 2>/dev/null || true
nuctl deploy --project-name cvat --path "$stage" --file "$stage/function.yaml" --platform local \
    --platform-config '{"attributes": {"network": "cvat_cvat"}}' "$@"
nuctl get function --platform local

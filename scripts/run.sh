#!/usr/bin/env bash
# Set up, export a SAM 2.1 model and serve the Label Studio ML backend on http://0.0.0.0:${PORT:-9090}.
#   bash scripts/run.sh                 downloads the official sam2.1_hiera_tiny checkpoint (sha256-checked), exports it
#   bash scripts/run.sh --random-init   offline: random weights (for trying the plumbing; masks are meaningless)
# MODEL (sam2.1_hiera_tiny|small|base_plus|large), PRECISION (bf16|f32|int8-weights) and IMAGE_SIZE pick the export;
# every service setting (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, BASIC_AUTH_USER, ...) is read from the environment,
# see README.md. An existing export in models/ is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MODEL=${MODEL:-sam2.1_hiera_tiny}
PRECISION=${PRECISION_EXPORT:-bf16}
IMAGE_SIZE=${IMAGE_SIZE:-1024}
source_args=(--download)
suffix=""
if [ "${1:-}" = "--random-init" ]; then
  source_args=(--random-init --seed 0)
  suffix="-random"
fi
out=${MODEL_DIR:-models/${MODEL}-${PRECISION}-${IMAGE_SIZE}${suffix}}
if [ ! -f "$out/manifest.json" ]; then
  .venv/bin/python -m model_export --model "$MODEL" "${source_args[@]}" --precision "$PRECISION" \
    --image-size "$IMAGE_SIZE" --out "$out" --checkpoint-dir checkpoints
fi
export MODEL_DIR="$out"
PATH="$PWD/.venv/bin:$PATH" exec sh docker/entrypoint.sh   # the same start command as the Docker image

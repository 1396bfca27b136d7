#!/usr/bin/env bash
# The EdgeTAM export environment: a separate venv (default .venv-edgetam) because EdgeTAM's PyPI fork
# (edgetam-dimos) installs a module named `sam2` too and cannot share .venv with sam2 1.1.0.
# Used only by `python -m model_export --model edgetam`; serving never needs it.
#
# What it holds and why (see model_export/edgetam.py for the timm/torchvision note):
#   torch 2.13.0 CPU   pip takes the local CPU wheel where one exists; elsewhere set
#                      TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu to avoid the CUDA build.
#   edgetam-dimos      --no-deps: it declares torchvision>=0.18.1, which its video predictor never imports.
#   timm               RepViT-M1 (EdgeTAM's image encoder). timm imports torchvision's Python code at import time.
#   torchvision 0.28   pairs with torch 2.13; --no-deps so it cannot pull another torch. PyPI's x86 wheel links
#                      CUDA libtorch, so its C++ ops do not load against the CPU torch; model_export/edgetam.py
#                      declares the two op schemas its import needs and never calls a torchvision op.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
VENV=${EDGETAM_VENV:-$here/.venv-edgetam}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp=$VENV/.requirements.sha256
want=$(cat "$here/requirements-edgetam-export.txt" "$0" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "EdgeTAM export venv up to date: $VENV"
  exit 0
fi
PIP="$VENV/bin/pip"
$PIP install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple} torch==2.13.0
$PIP install -q -r "$here/requirements-edgetam-export.txt"
$PIP install -q --no-deps edgetam-dimos==1.0.1 timm==1.0.31 torchvision==0.28.0
(cd "$here" && "$VENV/bin/python" -c "import model_export.edgetam as e; print(e.check_environment())")
echo "$want" > "$stamp"

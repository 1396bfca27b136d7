#!/usr/bin/env bash
# The test command (README, .ci/run): installs everything the tests need, then runs them all.
#   .venv (runtime + export + test tools), Label Studio 1.23.2 in .ls-venv, Debian chromium + playwright-core,
#   the Docker files' checks (compose config, hadolint, shellcheck) and the runtime install + health check in a
#   brand-new venv, exactly as the image does it; the images built and run in a Docker engine, with the compose stack
#   and a real Label Studio container (scripts/docker_ci.sh; SKIP_DOCKER=1 skips it, loudly); then pytest (unit,
#   parity, in-process app, real-LS and browser e2e, fault and load suites).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not e2e"` or `bash scripts/test.sh tests/test_app.py`.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p artifacts
start=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - start )) s)"; }
step setup; bash scripts/setup.sh
step label-studio; bash scripts/install_label_studio.sh
step ray-extra; .venv/bin/python -m pip install -q -r requirements-ray.txt   # tests/scale: Ray Serve replicas
step edgetam-venv; bash scripts/install_edgetam_export.sh  # .venv-edgetam: EdgeTAM export parity (tests/test_edgetam_export.py)
step browser; bash scripts/install_browser.sh
step docker-files; bash scripts/check_docker.sh 2>&1 | tee artifacts/check_docker.log
step runtime-venv
model=$(.venv/bin/python -c 'from tests import models; print(models.export_dir(128, "f32"))')  # cached test export
bash scripts/check_runtime.sh "$model" 2>&1 | tee artifacts/check_runtime.log
# ---- docker (scripts/docker_ci.sh): a failure here fails the run, after pytest has run too
step docker
set +e
bash scripts/docker_ci.sh 2>&1 | tee artifacts/docker_ci.log
docker_rc=${PIPESTATUS[0]}
set -e
# ----
step pytest
set +e
.venv/bin/python -m pytest "$@" 2>&1 | tee artifacts/pytest.log
rc=${PIPESTATUS[0]}
set -e
step "done (pytest exit $rc, docker exit $docker_rc)"
[ "$rc" != 0 ] || rc=$docker_rc
exit "$rc"

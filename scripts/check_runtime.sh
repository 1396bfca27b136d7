#!/usr/bin/env bash
# Check the serving runtime the way docker/Dockerfile's runtime stage builds and runs it, without Docker:
#   1. a brand-new venv gets `PIP=<venv>/bin/pip bash scripts/install_runtime.sh` (the image's install step);
#   2. torch (and sam2) must NOT be importable there: serving never needs PyTorch;
#   3. every system library that the compiled modules link to must come from a package of the slim base image
#      (the runtime stage installs no apt packages);
#   4. the Dockerfile's CMD (docker/entrypoint.sh -> gunicorn) starts with the runtime stage's ENV defaults and
#      MODEL_DIR=$1, and the Dockerfile's HEALTHCHECK command, run as written, passes within 120 s;
#      WORKERS=2 is refused.
# Usage: scripts/check_runtime.sh [MODEL_DIR]   (default: a random-init sam2.1_hiera_tiny, 256 px, f32, exported
#        into a temp folder with .venv's model_export)
# Exit 0 when everything passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
HEALTH_TIMEOUT_S=${HEALTH_TIMEOUT_S:-120}
# Packages of python:3.11-slim-bookworm that may provide linked libraries (debian:bookworm-slim + Python's runtime
# dependencies). Anything else would need an apt-get install in the runtime stage.
BASE_PACKAGES="libc6 libgcc-s1 libstdc++6 zlib1g libssl3 libffi8 libbz2-1.0 liblzma5 libuuid1 libsqlite3-0"

tmp=$(mktemp -d)
server_pid=
# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$server_pid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
failed=()
ok() { echo "PASS: $1"; }
bad() { echo "FAIL: $1" >&2; failed+=("$1"); }
finish() {
  if [ ${#failed[@]} -gt 0 ]; then
    echo "check_runtime: FAILED (${#failed[@]}):"; for f in "${failed[@]}"; do echo "  - $f"; done
    exit 1
  fi
  echo "check_runtime: OK"
  exit 0
}

# ---------------------------------------------------------------- 1. install into a brand-new venv
venv=$tmp/venv
echo "== new venv $venv ($("$PY" --version 2>&1)); PIP=$venv/bin/pip bash scripts/install_runtime.sh"
"$PY" -m venv "$venv" || { bad "creating the venv with $PY"; finish; }
t0=$(date +%s)
if PIP="$venv/bin/pip" bash scripts/install_runtime.sh > "$tmp/install.log" 2>&1; then
  ok "scripts/install_runtime.sh in a new venv ($(( $(date +%s) - t0 )) s, $(du -sm "$venv" | cut -f1) MB)"
else
  tail -30 "$tmp/install.log" >&2
  bad "scripts/install_runtime.sh"; finish
fi

# ---------------------------------------------------------------- 2. no torch at serving time
for mod in torch sam2; do
  if "$venv/bin/python" -c "import $mod" 2>/dev/null; then bad "'import $mod' works in the runtime venv"
  else ok "'import $mod' fails in the runtime venv"; fi
done
if "$venv/bin/python" -c "import openvino, cv2, numpy, flask, gunicorn, label_studio_sdk; print('   openvino', openvino.__version__, '| cv2', cv2.__version__, '| numpy', numpy.__version__)"; then
  ok "runtime imports (openvino, cv2, numpy, flask, gunicorn, label_studio_sdk)"
else
  bad "runtime imports"
fi

# ---------------------------------------------------------------- 3. system libraries the wheels link to
# GPU/NPU plugins are only loaded for those devices (they want libOpenCL etc.); the image serves on CPU.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
find "$site" -name '*.so*' -type f ! -name '*intel_gpu_plugin*' ! -name '*intel_npu_plugin*' > "$tmp/sofiles"
# A "not found" that is one of the wheels' own libraries (e.g. opencv_python_headless.libs/*) is fine: the loader
# finds it through the importing module's RPATH, which ldd on the library alone does not see.
bundled=" $(xargs -r -n1 basename < "$tmp/sofiles" | tr '\n' ' ') "
missing=() syslibs=()
while read -r so; do
  while read -r line; do
    case $line in
      *"=> not found"*) case $bundled in *" ${line%% *} "*) ;; *) missing+=("$(basename "$so"): ${line%% *}") ;; esac ;;
      *"=> /"*) lib=${line#*=> }; lib=${lib%% (*}
                case $lib in "$site"/*) ;; *) syslibs+=("$lib") ;; esac ;;
    esac
  done < <(ldd "$so" 2>/dev/null)
done < "$tmp/sofiles"
pkgs=$(printf '%s\n' "${syslibs[@]}" | sort -u | while read -r lib; do
  [ -n "$lib" ] || continue
  p=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null \
      || dpkg -S "${lib#/usr}" 2>/dev/null || dpkg -S "/usr$lib" 2>/dev/null)
  echo "${p%%:*}" | cut -d, -f1 | sed 's/:.*//'
  [ -n "$p" ] || echo "UNKNOWN($lib)"
done | sort -u | tr '\n' ' ')
echo "   $(wc -l < "$tmp/sofiles") shared objects; system packages they link to: $pkgs"
extra=()
for p in $pkgs; do
  case " $BASE_PACKAGES " in *" $p "*) ;; *) extra+=("$p") ;; esac
done
if [ ${#missing[@]} -gt 0 ]; then bad "unresolved libraries: ${missing[*]}"
elif [ ${#extra[@]} -gt 0 ]; then bad "libraries from packages not in the slim base image: ${extra[*]} (install them in the runtime stage)"
else ok "every linked system library comes from the slim base ($BASE_PACKAGES)"; fi

# ---------------------------------------------------------------- 4. the image's CMD and HEALTHCHECK
if [ ! -f _wsgi.py ]; then
  bad "_wsgi.py does not exist yet: cannot start the service"
  finish
fi

model=${1:-}
if [ -z "$model" ]; then
  model=$tmp/model
  echo "== exporting a random-init model (256 px, f32) to $model"
  if ! .venv/bin/python -m model_export --model sam2.1_hiera_tiny --random-init --seed 0 --image-size 256 \
       --precision f32 --out "$model" > "$tmp/export.log" 2>&1; then
    tail -20 "$tmp/export.log" >&2
    bad "exporting the test model (is .venv set up? bash scripts/setup.sh)"; finish
  fi
fi
[ -f "$model/manifest.json" ] || { bad "$model has no manifest.json"; finish; }
model=$(cd "$model" && pwd)

# The runtime stage's ENV, CMD and HEALTHCHECK, read from the Dockerfile (so this runs what the image runs).
"$venv/bin/python" - docker/Dockerfile "$tmp" <<'PYEOF' || { bad "reading docker/Dockerfile"; finish; }
import json, re, shlex, sys
from pathlib import Path
text = re.sub(r"\\\n", " ", Path(sys.argv[1]).read_text())
out = Path(sys.argv[2])
stage, env, cmd, hc = None, {}, None, None
for line in text.splitlines():
    line = line.strip()
    if re.match(r"FROM\s", line, re.I):
        stage = line.split()[-1] if re.search(r"\sAS\s", line, re.I) else None
    elif stage == "runtime" and line.startswith("ENV "):
        for kv in shlex.split(line[4:]):
            k, v = kv.split("=", 1)
            env[k] = v
    elif stage == "runtime" and line.startswith("CMD "):
        cmd = json.loads(line[4:])
    elif stage == "runtime" and line.startswith("HEALTHCHECK "):
        hc = json.loads(line[line.index(" CMD ") + 5:])
assert cmd and hc and env, "runtime stage has no CMD, HEALTHCHECK or ENV"
(out / "image.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
(out / "cmd.json").write_text(json.dumps(cmd))
(out / "healthcheck.json").write_text(json.dumps(hc))
PYEOF

port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$tmp/data"
# image ENV, with the container paths swapped for this machine's (/data/... -> $tmp/data/...)
run_env=()
while IFS= read -r kv; do
  case ${kv#*=} in /data|/data/*) kv="${kv%%=*}=$tmp${kv#*=}" ;; esac
  run_env+=("$kv")
done < "$tmp/image.env"
run_env+=("MODEL_DIR=$model" "PORT=$port" "PATH=$venv/bin:$PATH" "HOME=$tmp")
echo "   image ENV as used here: $(env -i "${run_env[@]}" env | grep -v -e '^PATH=' -e '^PIP_' -e '^PYTHON' | sort | tr '\n' ' ')"
# CMD as written, with the image's /app being this repo
mapfile -t cmd < <("$venv/bin/python" -c 'import json,sys; [print(a.replace("/app/", sys.argv[2] + "/", 1)) for a in json.load(open(sys.argv[1]))]' "$tmp/cmd.json" "$ROOT")
mapfile -t hc < <("$venv/bin/python" -c 'import json,sys; [print(a) for a in json.load(open(sys.argv[1]))]' "$tmp/healthcheck.json")

echo "== WORKERS=2 must be refused"
if env "${run_env[@]}" WORKERS=2 timeout 60 "${cmd[@]}" > "$tmp/workers2.log" 2>&1; then
  bad "WORKERS=2 started (exit 0)"
else
  rc=$?
  if [ "$rc" = 124 ]; then bad "WORKERS=2 was not refused (still running after 60 s)"
  else ok "WORKERS=2 refused (exit $rc: $(tail -1 "$tmp/workers2.log"))"; fi
fi

echo "== starting: ${cmd[*]}  (MODEL_DIR=$model PORT=$port)"
env "${run_env[@]}" "${cmd[@]}" > "$tmp/server.log" 2>&1 &
server_pid=$!
echo "== waiting up to ${HEALTH_TIMEOUT_S} s for the HEALTHCHECK command: ${hc[*]:0:2} ..."
t0=$(date +%s) healthy=
while [ $(( $(date +%s) - t0 )) -lt "$HEALTH_TIMEOUT_S" ]; do
  if ! kill -0 "$server_pid" 2>/dev/null; then echo "   server exited"; break; fi
  if env "${run_env[@]}" timeout 10 "${hc[@]}" >/dev/null 2>&1; then healthy=1; break; fi
  sleep 1
done
if [ -n "$healthy" ]; then
  ok "HEALTHCHECK passed after $(( $(date +%s) - t0 )) s"
  echo "   GET /health -> $(env "${run_env[@]}" python -c 'import os, urllib.request as u; print(u.urlopen("http://127.0.0.1:%s/health" % os.environ["PORT"], timeout=5).read().decode())')"
else
  echo "---- server log (last 40 lines)" >&2; tail -40 "$tmp/server.log" >&2
  bad "HEALTHCHECK did not pass within ${HEALTH_TIMEOUT_S} s"
fi

if kill -0 "$server_pid" 2>/dev/null; then
  kill -TERM "$server_pid"
  for _ in $(seq 1 70); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$server_pid" 2>/dev/null; then bad "server still running 35 s after SIGTERM (graceful timeout is 30 s)"
  else wait "$server_pid" 2>/dev/null; ok "server stopped on SIGTERM"; fi
fi
finish

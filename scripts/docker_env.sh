#!/usr/bin/env bash
# Write docker/.env for `docker compose -f docker/docker-compose.yml up`: docker/.env.example with a fresh random
# LABEL_STUDIO_PASSWORD and LABEL_STUDIO_USER_TOKEN (compose refuses to start without them). Never overwrites an
# existing docker/.env. Prints where the password is, not the password.
# Usage: bash scripts/docker_env.sh [ENV_FILE]   (default docker/.env)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docker/.env}
if [ -e "$out" ]; then
  echo "docker_env: $out exists; left unchanged (delete it first to make a new one)" >&2
  exit 1
fi
rand() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
password=$(rand 16) token=$(rand 20)  # 32 and 40 hex characters (a legacy LS token is 40)
umask 077
sed -e "s/^LABEL_STUDIO_PASSWORD=.*/LABEL_STUDIO_PASSWORD=$password/" \
    -e "s/^LABEL_STUDIO_USER_TOKEN=.*/LABEL_STUDIO_USER_TOKEN=$token/" docker/.env.example > "$out"
if ! grep -q "^LABEL_STUDIO_PASSWORD=$password\$" "$out" || ! grep -q "^LABEL_STUDIO_USER_TOKEN=$token\$" "$out"; then
  rm -f "$out"
  echo "docker_env: docker/.env.example lacks LABEL_STUDIO_PASSWORD= or LABEL_STUDIO_USER_TOKEN=" >&2
  exit 1
fi
echo "docker_env: wrote $out (mode 600); log in to Label Studio as $(sed -n 's/^LABEL_STUDIO_USERNAME=//p' "$out")" \
     "with the LABEL_STUDIO_PASSWORD in it"

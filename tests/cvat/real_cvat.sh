#!/usr/bin/env bash
# Run community CVAT's server from source on loopback and drive our tracker through it (a manual check, not CI).
#
#   bash tests/cvat/real_cvat.sh CVAT_SRC [WORK_DIR]
#
# CVAT_SRC: a checkout of CVAT release 2.73.0 (commit ac6e63b96bdd) with at least cvat/, utils/, manage.py.
# WORK_DIR [/tmp/cvat-real-check]: venv, PostgreSQL cluster, Redis data, logs.
# Needs: Python 3.12 (pyenv's 3.12 is used if present), Debian's postgresql 15 and redis-server,
# libldap2-dev libsasl2-dev libxmlsec1-dev pkg-config (for CVAT's python-ldap and xmlsec), root (PostgreSQL runs as
# the postgres user), and this repo's .venv (the 128 px random-init test model is exported if missing).
#
# What differs from a stock CVAT, and why (nothing in CVAT's code is changed):
# - datumaro: CVAT pins a cvat-ai/datumaro GitHub archive whose Rust extension needs crates.io; neither is reachable
#   here. PyPI's datumaro 1.13.12 is installed with --no-deps and given the `skeleton` annotation type CVAT's fork
#   has (a shim appended to the installed annotation.py). Dataset import/export may not work; the lambda path does.
# - OPA: no OPA build is reachable; an allow-all stand-in answers CVAT's policy queries.
# - settings: cvat.settings.development plus the stand-in's URL (development.py hard-codes OPA on :8181).
set -euo pipefail

src="$(cd "${1:?usage: real_cvat.sh CVAT_SRC [WORK_DIR]}" && pwd)"
work="${2:-/tmp/cvat-real-check}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
py312="${PYTHON312:-}"
if [ -z "$py312" ]; then
    for candidate in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
        if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
            py312="$candidate"
            break
        fi
    done
fi
[ -n "$py312" ] || { echo "real_cvat.sh: Python 3.12 not found; set PYTHON312=/path/to/python3.12" >&2; exit 2; }
mkdir -p "$work/run" && chown postgres "$work/run"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    su postgres -c "/usr/lib/postgresql/15/bin/pg_ctl -D $work/run/pg stop -m fast" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# ---- CVAT's Python dependencies (datumaro apart) ----
if [ ! -x "$work/venv/bin/python" ]; then
    "$py312" -m venv "$work/venv"
    "$work/venv/bin/pip" install -q --upgrade pip wheel setuptools
    sed 's#^datumaro @ .*#\# datumaro: installed from PyPI below#' "$src/cvat/requirements/base.txt" > "$work/base.txt"
    sed "s#^-r base.txt#-r $work/base.txt#" "$src/cvat/requirements/development.txt" > "$work/development.txt"
    sed -i "s#^-r ../../utils/#-r $src/utils/#" "$work/base.txt"
    "$work/venv/bin/pip" install -q -r "$work/development.txt"
    "$work/venv/bin/pip" install -q --no-deps datumaro==1.13.12
    ann="$("$work/venv/bin/python" -c 'import datumaro.components.annotation as a; print(a.__file__)')"
    "$work/venv/bin/python" - "$ann" <<'EOF'
import sys
p = sys.argv[1]
s = open(p).read()
if "skeleton = 12" not in s:
    s = s.replace("    tabular = 13\n", "    skeleton = 12  # shim: CVAT's datumaro fork has it\n    tabular = 13\n", 1)
    s += '''

@attrs(slots=True, order=False)
class Skeleton(Annotation):  # shim: CVAT's datumaro fork has it
    _type = AnnotationType.skeleton
    elements: List[Points] = field(factory=list)
    label: Optional[int] = field(converter=attr.converters.optional(int), default=None, kw_only=True)
'''
    open(p, "w").write(s)
EOF
fi

# ---- PostgreSQL, two Redis (in-memory and "on-disk"), the OPA stand-in ----
if [ ! -d "$work/run/pg" ]; then
    su postgres -c "/usr/lib/postgresql/15/bin/initdb -D $work/run/pg -A trust -U postgres" >/dev/null
fi
su postgres -c "/usr/lib/postgresql/15/bin/pg_ctl -D $work/run/pg -o '-p 55432 -k $work/run -c listen_addresses=127.0.0.1' -l $work/run/pg.log start" >/dev/null
sleep 2
psql -h 127.0.0.1 -p 55432 -U postgres -tc "select 1 from pg_roles where rolname='root'" | grep -q 1 ||
    psql -h 127.0.0.1 -p 55432 -U postgres -qc "create user root superuser password 'cvat'" -c "create database cvat owner root"
redis-server --port 56379 --bind 127.0.0.1 --save '' --dir "$work/run" >"$work/run/redis1.log" 2>&1 & pids+=($!)
redis-server --port 56666 --bind 127.0.0.1 --dir "$work/run" --dbfilename ondisk.rdb >"$work/run/redis2.log" 2>&1 & pids+=($!)
cat > "$work/run/opa_standin.py" <<'EOF'
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json

class Allow(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        result = ["&", {}, "org_filter_proof"] if self.path.endswith("/filter") else True
        body = json.dumps({"result": result}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", 58181), Allow).serve_forever()
EOF
"$work/venv/bin/python" "$work/run/opa_standin.py" & pids+=($!)
cat > "$work/run/cvat_local_settings.py" <<'EOF'
import os
from cvat.settings.development import *  # noqa: F401,F403
IAM_OPA_URL = os.environ["CVAT_OPA_URL"]
IAM_OPA_DATA_URL = f"{IAM_OPA_URL}/v1/data"
EOF

# ---- our service (basic auth) and CVAT pointed at it ----
model="$(cd "$repo" && .venv/bin/python -c 'from tests import models; print(models.export_dir(128, "f32"))')"
(cd "$repo" && MODEL_DIR="$model" PRECISION=f32 DATA_DIR="$work/run/sam2" BASIC_AUTH_USER=cvat BASIC_AUTH_PASS=s3cret \
    PORT=59090 exec .venv/bin/python _wsgi.py --host 127.0.0.1 >"$work/run/sam2.log" 2>&1) & pids+=($!)
export DJANGO_SETTINGS_MODULE=cvat_local_settings PYTHONPATH="$work/run"
export DJANGO_SECRET_KEY=local-check-only CVAT_ANALYTICS=0 ALLOWED_HOSTS=localhost,127.0.0.1
export CVAT_POSTGRES_HOST=127.0.0.1 CVAT_POSTGRES_PORT=55432 CVAT_POSTGRES_USER=root CVAT_POSTGRES_PASSWORD=cvat
export CVAT_REDIS_INMEM_HOST=127.0.0.1 CVAT_REDIS_INMEM_PORT=56379 CVAT_REDIS_ONDISK_HOST=127.0.0.1 CVAT_REDIS_ONDISK_PORT=56666
export CVAT_OPA_URL=http://127.0.0.1:58181 NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
export CVAT_NUCLIO_HOST='cvat:s3cret@127.0.0.1' CVAT_NUCLIO_PORT=59090 CVAT_NUCLIO_INVOKE_METHOD=dashboard
cd "$src"
"$work/venv/bin/python" manage.py migrate >"$work/run/migrate.log" 2>&1
DJANGO_SUPERUSER_USERNAME=admin DJANGO_SUPERUSER_PASSWORD=admin-pass-123 DJANGO_SUPERUSER_EMAIL=admin@example.org \
    "$work/venv/bin/python" manage.py createsuperuser --noinput >/dev/null 2>&1 || true
"$work/venv/bin/python" manage.py runserver 127.0.0.1:58080 --noreload >"$work/run/server.log" 2>&1 & pids+=($!)
"$work/venv/bin/python" manage.py rqworker -v 3 import annotation chunks export \
    --worker-class cvat.rqworker.DefaultWorker >"$work/run/worker.log" 2>&1 & pids+=($!)
for _ in $(seq 120); do
    curl -sf -u admin:admin-pass-123 http://127.0.0.1:58080/api/server/about >/dev/null && break
    sleep 2
done

cd "$repo"
.venv/bin/python -m tests.cvat.drive_real_cvat --cvat http://127.0.0.1:58080 --user admin --password admin-pass-123 \
    --video "${CLIPS_DIR:-/work/shared/clips}/cup.mp4" --frames 8 --model-dir "$model"

"""Start a real Label Studio (from .ls-venv) for end-to-end tests, and a thin REST wrapper used only by tests.

`start_label_studio(data_dir, media_root)` launches `label-studio start` on 127.0.0.1 in its own process group with a
pre-created admin user and a fixed legacy API token (`LS_TOKEN`, sent as `Authorization: Token <LS_TOKEN>`), local-files
serving rooted at `media_root`, and the SSRF/local-IP checks off so an ML backend on 127.0.0.1 can be connected
(see /work/shared/reference/label-studio-protocol.md §1 and §5). Times are seconds.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
LS_BIN = REPO / ".ls-venv" / "bin" / "label-studio"
LS_USER = "admin@example.com"
LS_PASSWORD = "admin12345"
LS_TOKEN = "5e2e0c1a9b8d7f6e5d4c3b2a1f0e9d8c7b6a5f40"  # legacy token: 40 hex chars
DB_NAME = "label_studio.sqlite3"
DB_TEMPLATE_DIR = REPO / ".cache" / "label-studio-db"  # migrated databases, one per LS version + user + token

FRAMES_CONFIG = (
    '<View><Image name="frames" valueList="$frames"/>'
    '<BrushLabels name="mask" toName="frames"><Label value="Car"/><Label value="Person"/></BrushLabels>'
    '<KeyPointLabels name="kp" toName="frames" smart="true"><Label value="Car"/><Label value="Person"/></KeyPointLabels>'
    '<RectangleLabels name="box" toName="frames" smart="true"><Label value="Car"/><Label value="Person"/>'
    '</RectangleLabels></View>'
)
VIDEO_CONFIG = (
    '<View><Labels name="videoLabels" toName="video"><Label value="Car"/><Label value="Person"/></Labels>'
    '<Video name="video" value="$video" framerate="25.0"/><VideoRectangle name="box" toName="video" smart="true"/>'
    '</View>'
)

# Inherited variables with these prefixes could point LS at another database or document root: never passed on.
_DROPPED_ENV_PREFIXES = ("LABEL_STUDIO_", "HEARTEX_", "DJANGO_", "POSTGRE_", "LOCAL_FILES_", "MYSQL_")


class LSApiError(RuntimeError):
    """Label Studio answered a request with a non-2xx status; the message holds the method, path, status and body."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind port 0, read it, close). Racy by nature but fine for tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ls_env(data_dir: Path, media_root: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment `label-studio start` runs with: `base` (default os.environ) minus LS/DB settings, plus ours.

    LABEL_STUDIO_BASE_DATA_DIR is set to `data_dir` too: LS creates its default data dir (~/.local/share/label-studio)
    at settings import, before `--data-dir` is applied, unless this is set.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith(_DROPPED_ENV_PREFIXES)}
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_USERNAME": LS_USER,
        "LABEL_STUDIO_PASSWORD": LS_PASSWORD,
        "LABEL_STUDIO_USER_TOKEN": LS_TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(media_root),
    })
    return env


@dataclass
class LabelStudioServer:
    """A running Label Studio. `url` has no trailing slash; `startup_s` is launch-to-ready wall time in seconds."""

    url: str
    token: str
    data_dir: Path
    media_root: Path
    log_path: Path
    proc: subprocess.Popen
    startup_s: float = 0.0
    api: LSApi = field(init=False)

    def __post_init__(self):
        self.api = LSApi(self.url, self.token)

    def log_tail(self, n_chars: int = 4000) -> str:
        """The last `n_chars` characters of the LS log (stdout + stderr), for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the whole process group, then SIGKILL it if it has not exited after `grace_s` seconds."""
        if self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # start_new_session=True: the child leads its own group, pgid == pid
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                logger.warning("Label Studio (pid %s) ignored %s for %.0f s", pgid, sig.name, wait_s)
        # the group leader may be gone while children linger: make sure nothing of ours survives
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_label_studio(data_dir: str | Path, media_root: str | Path, port: int | None = None, *,
                       timeout_s: float = 180.0, db_template: bool = False) -> LabelStudioServer:
    """Launch Label Studio on 127.0.0.1:`port` (a free port when None) and wait until the token is accepted.

    Readiness = `GET /api/current-user/whoami` with the legacy token answers 200, polled every 0.5 s for at most
    `timeout_s` seconds. A fresh data dir costs the SQLite migrations (80 s on 2 busy cores, 7 s for a restart).
    With `db_template=True` and no database in `data_dir` yet, a migrated database (admin user + LS_TOKEN, no
    projects) is copied in from DB_TEMPLATE_DIR, built there by one fresh start the first time.
    The log goes to `<data_dir>/label-studio.log`. Raises RuntimeError (with the log tail) if LS exits or is not
    ready in time.
    """
    if not LS_BIN.is_file():
        raise FileNotFoundError(f"{LS_BIN} is missing; run `bash scripts/install_label_studio.sh`.")
    data_dir, media_root = Path(data_dir), Path(media_root)
    data_dir.mkdir(parents=True, exist_ok=True)
    media_root.mkdir(parents=True, exist_ok=True)
    if db_template and not (data_dir / DB_NAME).exists():
        shutil.copyfile(_template_db(timeout_s), data_dir / DB_NAME)
    port = port or free_port()
    log_path = data_dir / "label-studio.log"
    cmd = [str(LS_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data_dir)]
    t0 = time.monotonic()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=ls_env(data_dir, media_root), cwd=data_dir, start_new_session=True)
    server = LabelStudioServer(url=f"http://127.0.0.1:{port}", token=LS_TOKEN, data_dir=data_dir,
                               media_root=media_root, log_path=log_path, proc=proc)
    logger.info("started Label Studio pid %s on port %s (log %s)", proc.pid, port, log_path)
    try:
        _wait_ready(server, deadline=t0 + timeout_s)
    except BaseException:
        server.stop()
        raise
    server.startup_s = time.monotonic() - t0
    logger.info("Label Studio ready after %.1f s", server.startup_s)
    return server


def create_pat(server: LabelStudioServer) -> str:
    """A personal access token (JWT refresh token) of the admin user, created through LS's own API (POST /api/token/,
    authenticated with the legacy token); cached on `server` because LS gives a user one live PAT at a time."""
    if getattr(server, "pat", None):
        return server.pat
    server.api.call("POST", "/api/jwt/settings", json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": True,
                                                       "api_token_ttl_days": 30})
    server.pat = server.api.call("POST", "/api/token/")["token"]
    return server.pat


def _ls_fingerprint() -> str:
    """Short hash of the installed LS version (its dist-info folder name), the admin user and the token."""
    dist = sorted(p.name for p in (REPO / ".ls-venv" / "lib").glob("python3*/site-packages/label_studio-*.dist-info"))
    return hashlib.sha256("|".join([*dist, LS_USER, LS_TOKEN]).encode()).hexdigest()[:16]


def _template_db(timeout_s: float) -> Path:
    """The migrated template database for this LS install, built by one fresh start + stop when missing."""
    target = DB_TEMPLATE_DIR / f"{_ls_fingerprint()}.sqlite3"
    if target.is_file():
        return target
    DB_TEMPLATE_DIR.mkdir(parents=True, exist_ok=True)
    build = DB_TEMPLATE_DIR / f"build-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    logger.info("building the Label Studio template database in %s (one-off, runs the migrations)", build)
    server = start_label_studio(build / "data", build / "media", timeout_s=timeout_s)
    server.stop()
    os.replace(build / "data" / DB_NAME, target)  # atomic: a concurrent builder just wins or loses the rename
    shutil.rmtree(build, ignore_errors=True)
    return target


def _wait_ready(server: LabelStudioServer, deadline: float) -> None:
    headers = {"Authorization": f"Token {server.token}"}
    last = "no answer yet"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"Label Studio exited with code {server.proc.returncode} before it was ready; "
                               f"log {server.log_path}:\n{server.log_tail()}")
        try:
            resp = requests.get(f"{server.url}/api/current-user/whoami", headers=headers, timeout=5)
            if resp.status_code == 200:
                return
            last = f"HTTP {resp.status_code}: {resp.text[:200]}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise RuntimeError(f"Label Studio was not ready within the timeout (last whoami: {last}); "
                       f"log {server.log_path}:\n{server.log_tail()}")


class LSApi:
    """Thin requests-based LS REST wrapper for tests. Every method raises LSApiError with LS's answer on non-2xx."""

    def __init__(self, url: str, token: str, timeout_s: float = 120.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    # -- raw -------------------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send `method` to `path` (relative to the LS URL, or absolute) and return the 2xx response."""
        url = path if path.startswith("http") else self.url + path
        resp = self.session.request(method, url, timeout=self.timeout_s, **kwargs)
        if not 200 <= resp.status_code < 300:
            raise LSApiError(f"{method} {path} -> HTTP {resp.status_code}: {resp.text[:2000]}")
        return resp

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Like `request`, returning the decoded JSON body (None when the body is empty)."""
        resp = self.request(method, path, **kwargs)
        return resp.json() if resp.content else None

    # -- projects and tasks ------------------------------------------------------------------------------------------
    def create_project(self, title: str, label_config: str) -> int:
        """POST /api/projects/ -> project id."""
        return self.call("POST", "/api/projects/", json={"title": title, "label_config": label_config})["id"]

    def import_tasks(self, project: int, data: list[dict]) -> list[int]:
        """POST /api/projects/{id}/import with one task per data dict -> the new task ids, in input order."""
        body = [{"data": d} for d in data]
        out = self.call("POST", f"/api/projects/{project}/import", params={"return_task_ids": "true"}, json=body)
        return out["task_ids"]

    def upload_file(self, project: int, path: str | Path) -> list[int]:
        """Multipart import of one media file (LS stores it under /data/upload/{project}/...) -> new task ids."""
        path = Path(path)
        with open(path, "rb") as fh:
            out = self.call("POST", f"/api/projects/{project}/import", params={"return_task_ids": "true"},
                            files={"file": (path.name, fh)})
        return out["task_ids"]

    def tasks(self, project: int) -> list[dict]:
        """GET /api/tasks/?project=ID -> all tasks of the project (one page of up to 1000), ordered by id."""
        out = self.call("GET", "/api/tasks/", params={"project": project, "page_size": 1000})
        return sorted(out["tasks"], key=lambda t: t["id"])

    def get_task(self, task_id: int) -> dict:
        """GET /api/tasks/{id}/ (note: LS may run the ML backend here when the task has no prediction yet)."""
        return self.call("GET", f"/api/tasks/{task_id}/")

    # -- storages ----------------------------------------------------------------------------------------------------
    def add_local_storage(self, project: int, path: str | Path, *, sync: bool = True, title: str = "e2e") -> int:
        """POST /api/storages/localfiles/ (use_blob_urls) and optionally sync it (every file becomes a task) -> id."""
        body = {"project": project, "path": str(path), "title": title, "use_blob_urls": True}
        storage_id = self.call("POST", "/api/storages/localfiles/", json=body)["id"]
        if sync:
            self.sync_local_storage(storage_id)
        return storage_id

    def sync_local_storage(self, storage_id: int) -> dict:
        """POST /api/storages/localfiles/{id}/sync -> the storage after sync."""
        return self.call("POST", f"/api/storages/localfiles/{storage_id}/sync")

    def local_storages(self, project: int) -> list[dict]:
        """GET /api/storages/localfiles/?project=ID."""
        return self.call("GET", "/api/storages/localfiles/", params={"project": project})

    # -- ML backend --------------------------------------------------------------------------------------------------
    def connect_ml(self, project: int, url: str, basic_auth: tuple[str, str] | None = None,
                   interactive: bool = True, title: str = "sam2-openvino") -> int:
        """POST /api/ml (LS calls the backend's /health and /setup now) -> ML backend id."""
        body: dict[str, Any] = {"url": url, "project": project, "title": title, "is_interactive": interactive}
        if basic_auth is not None:
            body.update(auth_method="BASIC_AUTH", basic_auth_user=basic_auth[0], basic_auth_pass=basic_auth[1])
        return self.call("POST", "/api/ml/", json=body)["id"]

    def interactive(self, ml_id: int, task_id: int, context_result: list[dict]) -> Any:
        """POST /api/ml/{id}/interactive-annotating {task, context: {result}} -> LS's JSON ({"data": ...} or errors)."""
        body = {"task": task_id, "context": {"result": context_result}}
        return self.call("POST", f"/api/ml/{ml_id}/interactive-annotating", json=body)

    def retrieve_predictions(self, project: int) -> Any:
        """Data Manager action retrieve_tasks_predictions over all tasks (batch /predict with context=null)."""
        return self.call("POST", "/api/dm/actions/", params={"id": "retrieve_tasks_predictions", "project": project},
                         json={"selectedItems": {"all": True, "excluded": []}})

    def predictions(self, task_id: int) -> list[dict]:
        """GET /api/predictions/?task=ID."""
        out = self.call("GET", "/api/predictions/", params={"task": task_id})
        return out.get("results", []) if isinstance(out, dict) else out

    # -- annotations and webhooks ------------------------------------------------------------------------------------
    def create_annotation(self, task_id: int, result: list[dict]) -> dict:
        """POST /api/tasks/{id}/annotations/ -> the annotation (fires ANNOTATION_CREATED to the ML webhook)."""
        return self.call("POST", f"/api/tasks/{task_id}/annotations/", json={"result": result})

    def update_annotation(self, annotation_id: int, result: list[dict]) -> dict:
        """PATCH /api/annotations/{id}/ -> the annotation (fires ANNOTATION_UPDATED)."""
        return self.call("PATCH", f"/api/annotations/{annotation_id}/", json={"result": result})

    def webhooks(self, project: int) -> list[dict]:
        """GET /api/webhooks/?project=ID -> the project's webhooks (LS adds one per connected ML backend)."""
        return self.call("GET", "/api/webhooks/", params={"project": project})

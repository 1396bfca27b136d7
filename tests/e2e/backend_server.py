"""Run the backend the way production does (docker/entrypoint.sh -> gunicorn _wsgi:app) for end-to-end tests."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.e2e.ls_server import free_port

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
AUTH = ("ls-user", "ls-secret")


@dataclass
class BackendServer:
    url: str
    log_path: Path
    proc: subprocess.Popen
    health_port: int | None = None  # the dedicated /health listener (HEALTH_PORT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, auth=AUTH, timeout=10)

    def kill(self) -> None:
        """kill -9 the whole process group (gunicorn master and worker): no shutdown code runs."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def start_backend(model_dir: Path, work: Path, *, ls_url: str, token: str, media_root: Path,
                  extra_env: dict[str, str] | None = None, timeout_s: float = 120.0, port: int | None = None,
                  require_ready: bool = True) -> BackendServer:
    """Start docker/entrypoint.sh (gunicorn) on 127.0.0.1:`port` (free port when None) and wait for /health: 200, or
    any answer when `require_ready` is False (e.g. to watch a backend whose model cannot load)."""
    port = port or free_port()
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "PORT": str(port), "THREADS": "8",
           "MODEL_DIR": str(model_dir), "LABEL_STUDIO_URL": ls_url, "LABEL_STUDIO_API_KEY": token,
           "BASIC_AUTH_USER": AUTH[0], "BASIC_AUTH_PASS": AUTH[1], "LOCAL_FILES_DOCUMENT_ROOT": str(media_root),
           "MEDIA_CACHE_DIR": str(work / "media-cache"), "DATA_DIR": str(work / "data"),
           "PREDICT_TIME_BUDGET_S": "60", "INTERACTIVE_WAIT_S": "60", "WRITE_INTERVAL_S": "1", "LOG_LEVEL": "INFO",
           "HEALTH_PORT": str(free_port()),  # entrypoint's default 9091 would collide between test backends
           **(extra_env or {})}
    health_port = int(env["HEALTH_PORT"]) or None
    log_path = work / "backend.log"
    work.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(["sh", str(REPO / "docker" / "entrypoint.sh")], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
    server = BackendServer(f"http://127.0.0.1:{port}", log_path, proc, health_port)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"backend exited with {proc.returncode}:\n{server.log()[-3000:]}")
        try:
            if requests.get(server.url + "/health", timeout=2).status_code == 200 or not require_ready:
                return server
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or busy loading on 2 cores
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"backend not healthy after {timeout_s} s:\n{server.log()[-3000:]}")

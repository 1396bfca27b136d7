"""/health: the model's state, on the app's route and on a dedicated listener that needs no request thread.

Under gunicorn's gthread worker every request (also /health) waits for one of THREADS request threads; nine slow
requests, or a few clients dripping their headers, leave none for /health, and an orchestrator then restarts a
healthy backend. A listener thread inside the process is not enough either: it shares the GIL with the request
threads' Python work (measured under load: p99 337 ms). So `HealthServer` writes the health report and a heartbeat
into a small file every second, and a separate process (`backend.serving.healthd`) answers GET /health on
HEALTH_PORT from it, 503 when the heartbeat is older than 15 s (the backend process is wedged). LS keeps calling
/health on the main port.

A separate process is not enough on busy cores either: at the same CPU priority as the engine it waits for a core
like any OpenVINO thread, and where the kernel shares CPU per session (autogroup) it pays for the worker's use of
that session's share. So the health process runs in a session of its own, and the gunicorn worker lowers its own
priority once the health process is started (`backend.serving.priority`, WORKER_NICE; see _wsgi.py).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from backend.serving.model import ModelHolder

logger = logging.getLogger(__name__)


def health_report(model: ModelHolder) -> tuple[dict, int]:
    """(body, status): 200 when the model is ready, 503 while loading or when it failed (with the error)."""
    state = model.state
    body = {"status": "UP" if state == "ready" else state.upper(), "model_class": "SAM2VideoOpenVINO",
            "model": model.name, "model_version": model.version, "state": state,
            "random_weights": bool(model.manifest.get("random_weights"))}
    if model.error:
        body["error"] = model.error
    return body, 200 if state == "ready" else 503


class HealthServer:
    """Runs the health process on `port` and feeds it a heartbeat file under `state_dir`."""

    def __init__(self, model: ModelHolder, port: int, state_dir: Path, *, interval_s: float = 1.0,
                 stale_s: float = 15.0):
        self.model, self.port, self.interval_s, self.stale_s = model, port, interval_s, stale_s
        self.state_file = Path(state_dir) / f"health-{os.getpid()}.json"
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None

    def start(self) -> HealthServer:
        """Start the heartbeat thread and the health process; a failure is logged, never fatal (the main /health
        still works)."""
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            self._beat()
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "backend.serving.healthd", "--port", str(self.port), "--state",
                 str(self.state_file), "--parent", str(os.getpid()), "--stale-s", str(self.stale_s)],
                cwd=Path(__file__).resolve().parents[2], stdin=subprocess.DEVNULL,
                # a session of its own: where the kernel groups CPU time per session (autogroup, on by default on
                # most Linux hosts), the worker's busy group must not make a probe wait for its share
                start_new_session=True)
        except OSError as e:
            logger.error("HEALTH_PORT=%s: cannot start the health process (%s); /health on the main port still "
                         "answers", self.port, e)
            return self
        threading.Thread(target=self._loop, name="health-heartbeat", daemon=True).start()
        logger.info("health process %s on port %s", self._proc.pid, self.port)
        return self

    def _beat(self) -> None:
        body, status = health_report(self.model)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(body, http_status=status, heartbeat=time.time())))
        os.replace(tmp, self.state_file)

    def _loop(self) -> None:
        wait_loaded = getattr(self.model, "wait_loaded", None)
        while True:
            if self.model.state == "loading" and wait_loaded is not None:
                # beat as soon as the load ends: HEALTH_PORT must not answer 503 LOADING for up to an interval
                # after the main port says UP (seen in tests/load: the first probes of a run)
                wait_loaded(self.interval_s)
                if self._stop.is_set():
                    return
            elif self._stop.wait(self.interval_s):
                return
            try:
                self._beat()
            except OSError as e:  # the health process turns a stale heartbeat into a 503
                logger.warning("health heartbeat not written: %s", e)

    def close(self) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()

"""/health: the model's state, on the app's route and on a dedicated listener that needs no request thread.

Under gunicorn's gthread worker every request (also /health) waits for one of THREADS request threads; nine slow
requests, or a few clients dripping their headers, leave none for /health, and Docker or a load balancer then
restarts a healthy backend. `HealthServer` answers GET /health on HEALTH_PORT from its own small thread, reading
only in-memory state (no lock a request holds), with a 5 s socket timeout per connection, so it answers while
every request thread is busy. Docker's HEALTHCHECK uses it; LS keeps calling /health on the main port.
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
    def __init__(self, model: ModelHolder, port: int, host: str = "0.0.0.0"):
        self.model, self.port, self.host = model, port, host
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> HealthServer:
        """Listen in a daemon thread; a port already taken is logged, never fatal (the main /health still works)."""
        model = self.model

        class Handler(BaseHTTPRequestHandler):
            timeout = 5.0  # a client that sends nothing holds a health thread at most this long

            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] not in ("/health", "/"):
                    body, status = {"error": "only GET /health is served on this port"}, 404
                else:
                    body, status = health_report(model)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt, *args):  # keep the access log quiet: Docker polls every few seconds
                logger.debug("health: " + fmt, *args)

        try:
            self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        except OSError as e:
            logger.error("HEALTH_PORT=%s: cannot listen (%s); /health on the main port still answers", self.port, e)
            return self
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="health", daemon=True).start()
        logger.info("health listener on port %s", self.port)
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

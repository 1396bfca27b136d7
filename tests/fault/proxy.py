"""A loopback reverse proxy in front of Label Studio whose failure mode a test switches at run time.

Modes: "pass" (forward everything), "5xx" (answer 503 to writes of predictions, forward the rest), "down" (close every
connection without an answer, as a stopped LS would look through a load balancer). `seen` records (mode, method,
path, status) of every request.
"""
from __future__ import annotations

import threading

import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length", "host"}


class LSProxy:
    def __init__(self, target: str):
        self.target = target.rstrip("/")
        self.mode = "pass"
        self.seen: list[tuple[str, str, str, int]] = []
        self.lock = threading.Lock()
        self._session = requests.Session()
        self.server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def writes(self, status: int | None = None) -> list[tuple[str, str, str, int]]:
        with self.lock:
            return [s for s in self.seen if s[1] in ("POST", "PATCH") and s[2].startswith("/api/predictions")
                    and (status is None or s[3] == status)]

    @Request.application
    def _app(self, request: Request):
        mode = self.mode
        is_write = request.method in ("POST", "PATCH", "DELETE") and request.path.startswith("/api/predictions")
        if mode == "down":
            self._log(mode, request, 0)
            # werkzeug cannot drop a connection from a handler; close the socket under it
            sock = request.environ.get("werkzeug.socket")
            if sock is not None:
                try:
                    sock.shutdown(2)
                except OSError:
                    pass
            return Response("", status=502)
        if mode == "5xx" and is_write:
            self._log(mode, request, 503)
            return Response('{"detail": "proxy: Label Studio unavailable"}', status=503,
                            content_type="application/json")
        url = self.target + request.full_path.rstrip("?")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        upstream = self._session.request(request.method, url, headers=headers, data=request.get_data(),
                                         allow_redirects=False, timeout=60)
        self._log(mode, request, upstream.status_code)
        out = Response(upstream.content, status=upstream.status_code)
        for k, v in upstream.headers.items():
            if k.lower() not in _HOP:
                out.headers[k] = v
        return out

    def _log(self, mode: str, request: Request, status: int) -> None:
        with self.lock:
            self.seen.append((mode, request.method, request.path, status))

    def close(self) -> None:
        self.server.shutdown()

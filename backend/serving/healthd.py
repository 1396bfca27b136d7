"""A /health answerer in a process of its own: no GIL, no request thread, nothing the backend holds.

The backend writes its health (the model state, plus a heartbeat time) into a small JSON file every second; this
process answers `GET /health` on HEALTH_PORT from that file. A heartbeat older than `--stale-s` means the backend
process is wedged: 503 saying so. It exits when the backend process is gone.

Every answer carries `Server-Timing: health;dur=<ms>`: the time from accepting the connection to writing the answer
in this process, so a slow probe can be split into this process's part and the rest (scheduling of the prober,
the network). The backend starts it in a session of its own and at a higher CPU priority than its own worker (see
`backend.serving.health`): a probe must not queue behind the engine's threads.

    python -m backend.serving.healthd --port 9091 --state /data/health.json --parent <pid>
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def _answer(state_file: Path, stale_s: float) -> tuple[int, bytes]:
    try:
        state = json.loads(state_file.read_text())
        age = time.time() - float(state.pop("heartbeat"))
        status = int(state.pop("http_status"))
    except (OSError, ValueError, KeyError, TypeError):
        return 503, json.dumps({"status": "STARTING", "error": "the backend has not reported its health yet"}).encode()
    if age > stale_s:
        state.update(status="STALLED", error=f"the backend process has not reported for {age:.0f} s")
        status = 503
    return status, json.dumps(state).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args, **kwargs):
        self.accepted: dict[int, float] = {}  # socket fd -> when it was accepted (perf_counter)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        self.accepted[request.fileno()] = time.perf_counter()
        super().process_request(request, client_address)


def serve(port: int, state_file: Path, parent: int, stale_s: float, host: str = "0.0.0.0") -> None:
    class Handler(BaseHTTPRequestHandler):
        timeout = 5.0

        def do_GET(self):  # noqa: N802
            t0 = self.server.accepted.pop(self.connection.fileno(), None)
            if self.path.split("?")[0] not in ("/health", "/"):
                status, data = 404, b'{"error": "only GET /health is served on this port"}'
            else:
                status, data = _answer(state_file, stale_s)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if t0 is not None:
                self.send_header("Server-Timing", f"health;dur={(time.perf_counter() - t0) * 1000:.2f}")
            self.end_headers()
            self.wfile.write(data)

        def finish(self):
            self.server.accepted.pop(self.connection.fileno(), None)  # a connection that sent no GET
            super().finish()

        def log_message(self, fmt, *args):
            pass

    deadline = time.monotonic() + 60
    while True:  # a restarting backend's previous health process may still hold the port for a moment
        try:
            server = _Server((host, port), Handler)
            break
        except OSError:
            if time.monotonic() > deadline or not _alive(parent):
                raise
            time.sleep(0.5)

    def watch_parent():
        while _alive(parent):
            time.sleep(1.0)
        server.shutdown()
    threading.Thread(target=watch_parent, daemon=True).start()
    server.serve_forever()
    server.server_close()


def _alive(pid: int) -> bool:
    if os.getppid() != pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--parent", type=int, required=True)
    p.add_argument("--stale-s", type=float, default=15.0)
    a = p.parse_args(argv)
    serve(a.port, a.state, a.parent, a.stale_s)


if __name__ == "__main__":
    main()

"""Test helpers: a tiny threaded HTTP server that imitates Label Studio endpoints or a media host, and fake JWTs."""
import base64
import json
import socket
import threading
import time

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

LEGACY = "0123456789abcdef0123456789abcdef01234567"


class FakeHost:
    """werkzeug server on 127.0.0.1:<free port> in a thread, addressed as `http://<name>:<port>`.

    `routes[path] = fn(request) -> Response` (any method); unknown paths answer 404. Every request is recorded in
    `seen` as {"method", "path", "args", "auth", "body"}.
    """

    def __init__(self, name: str = "127.0.0.1"):
        self.routes: dict = {}
        self.seen: list[dict] = []
        self.lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://{name}:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @Request.application
    def _app(self, request):
        with self.lock:
            self.seen.append({"method": request.method, "path": request.path, "args": dict(request.args),
                              "auth": request.headers.get("Authorization"), "body": request.get_data()})
        handler = self.routes.get(request.path)
        return handler(request) if handler else Response("not found", status=404)

    def hits(self, path: str) -> list[dict]:
        return [r for r in self.seen if r["path"] == path]

    def serve(self, path: str, body: bytes, delay_s: float = 0.0) -> None:
        """Answer `path` with `body` (with a Content-Length) after `delay_s` seconds."""
        def handler(_request):
            time.sleep(delay_s)
            return Response(body, content_type="application/octet-stream")
        self.routes[path] = handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def json_response(obj, status: int = 200) -> Response:
    return Response(json.dumps(obj), status=status, content_type="application/json")


def make_jwt(payload: dict) -> str:
    """An unsigned-looking JWT (header.payload.signature) with `payload`; LS would verify it, our code does not."""
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{enc({'alg': 'HS256', 'typ': 'JWT'})}.{enc(payload)}.c2ln"


def closed_port_url() -> str:
    """URL of a local port nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"

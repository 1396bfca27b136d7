"""The LS token never leaves the LS origin: hostile task URLs against a fake Label Studio and a raw listener (the
"attacker", 127.0.0.1 only) that records every byte it receives.

Each trick must answer 400/403 (or be fetched from LS itself, for a harmless '@' inside an LS path), and the listener
must receive no request carrying the token (for most tricks: no connection at all). On the code before the URL module
(`urlsplit` checks, urllib3 sends) the backslash tricks sent `GET /%5C@...` with the token to the listener, the
`/data/upload/../../api/...` path reached the LS API with the token, and the numeric-host / tab tricks were not refused.
"""
from __future__ import annotations

import socket
import threading

import pytest
from werkzeug.wrappers import Response

from backend.serving.errors import MediaError
from backend.serving.media import MediaResolver, MediaSettings
from backend.serving.urls import parse_http
from tests.fakehttp import LEGACY


class Listener:
    """A raw TCP server on 127.0.0.1:<free port>: records what each connection sends, answers 200 'ok'."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = False
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1.0)
                data = b""
                try:
                    while b"\r\n\r\n" not in data and len(data) < 65536:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                except OSError:
                    pass
                self.received.append(data)

    @property
    def tokens_seen(self) -> int:
        return sum(LEGACY.encode() in r for r in self.received)

    def close(self):
        self._stop = True
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def attacker():
    listener = Listener()
    yield listener
    listener.close()


@pytest.fixture
def lsr(ls, tmp_path):
    """A resolver for the fake LS (which serves one upload and a secret API page)."""
    ls.serve("/data/upload/1/x.mp4", b"VIDEO")
    ls.serve("/api/current-user/whoami", b"SECRET")
    return MediaResolver(MediaSettings(ls_url=ls.url, api_key=LEGACY, cache_dir=tmp_path / "cache", timeout_s=3))


def _refused(resolver, url, task_id=1) -> int:
    with pytest.raises(MediaError) as err:
        resolver.fetch(url, task_id=task_id)
    return err.value.status


def _ls_api_untouched(ls):
    assert [r for r in ls.seen if not r["path"].startswith(("/data/", "/tasks/"))] == []


TRICKS = [
    # the confirmed leak: urlsplit reads the host after '@', urllib3 connects to the one before '\'
    "http://{A}\\@{L}/data/upload/1/x.mp4",
    "http://{A}\\\\@{L}/data/upload/1/x.mp4",
    "http://{A}\\{L}/data/upload/1/x.mp4",
    "http://{A}/\\@{L}/data/upload/1/x.mp4",
    "http://{L}\\@{A}/data/upload/1/x.mp4",
    "HTTP://{A}\\@{L}/data/upload/1/x.mp4",
    # userinfo in every form
    "http://{L}@{A}/data/upload/1/x.mp4",
    "http://user:pw@{A}/data/upload/1/x.mp4",
    "http://{A}@{L}/data/upload/1/x.mp4",
    "http://{A}%40{L}/data/upload/1/x.mp4",
    "http://@{L}/data/upload/1/x.mp4",
    # control characters and whitespace (urlsplit deletes tab/CR/LF silently)
    "http://{A}\t@{L}/data/upload/1/x.mp4",
    "http://{A}\n@{L}/data/upload/1/x.mp4",
    "http://{A}\r\n@{L}/data/upload/1/x.mp4",
    "http://{A} @{L}/data/upload/1/x.mp4",
    "http://{L}/data/upload/1/x.mp4\x00@{A}",
    "http://{L}/data/upload/1/x\u200b.mp4",
    # not the LS origin (scheme, port, host spelling) or not allowed at all
    "HTTP://{A}/data/upload/1/x.mp4",
    "https://{L}/data/upload/1/x.mp4",
    "http://{A}/data/upload/1/x.mp4?@{L}",
    "http://{A}?@{L}/data/upload/1/x.mp4",
    "http://{A}#@{L}/data/upload/1/x.mp4",
    "http://{A}/data/upload/1/x@{L}.mp4",
    "http://[::1]:{P}/data/upload/1/x.mp4",
    "http://[::ffff:127.0.0.1]:{P}/data/upload/1/x.mp4",
    "http://[::1]\\@{L}/data/upload/1/x.mp4",
    "http://localhost:{P}/data/upload/1/x.mp4",
    # numeric host spellings that resolve to 127.0.0.1
    "http://127.1:{P}/data/upload/1/x.mp4",
    "http://2130706433:{P}/data/upload/1/x.mp4",
    "http://0x7f.0.0.1:{P}/data/upload/1/x.mp4",
    "http://0177.0.0.1:{P}/data/upload/1/x.mp4",
    "http://127.0.0.1.:{P}/data/upload/1/x.mp4",
    "http://127\u30020\u30020\u30021:{P}/data/upload/1/x.mp4",
    "http://127\uff0e0\uff0e0\uff0e1:{P}/data/upload/1/x.mp4",
    # malformed authorities and schemes
    "http://{L}:{P}/data/upload/1/x.mp4",
    "http:/{A}/data/upload/1/x.mp4",
    "http:{A}/data/upload/1/x.mp4",
    "//{A}/data/upload/1/x.mp4",
    "http://{A}:+{P}/data/upload/1/x.mp4",
    # LS API through path tricks, absolute and relative
    "http://{L}/data/upload/../../api/current-user/whoami",
    "http://{L}/api/current-user/whoami",
    "/data/upload/../../api/current-user/whoami",
    "/data/upload/%2e%2e/%2e%2e/api/current-user/whoami",
    "/data/upload/%2E%2E/%2E%2E/api/current-user/whoami",
    "/data/upload/.%2e/.%2e/api/current-user/whoami",
    "/data/upload/1%2f..%2f..%2fapi%2fcurrent-user%2fwhoami",
    "/data/upload/1%5c..%5c..%5capi/current-user/whoami",
    "/data/upload/%252e%252e/%252e%252e/api/current-user/whoami",
    "/data/upload/\u2025/\u2025/api/current-user/whoami",
    "/data/upload/%E2%80%A5/%E2%80%A5/api/current-user/whoami",
    "/data/upload/\uff0e\uff0e/\uff0e\uff0e/api/current-user/whoami",
    "/data/upload/%EF%BC%8F..%EF%BC%8F../api/current-user/whoami",
    "/data/./upload/1/x.mp4",
    "/data/upload//1/x.mp4",
    "/data/upload/1/x.mp4/..",
    "upload/../../api/current-user/whoami",
    "/data/local-files/../../api/current-user/whoami",
    "/data/local-files/?d=%00",
    "/data/local-files/?d=a%0Ab.jpg",
    "/data/local-files/?d=..%2F..%2Fetc%2Fpasswd",
    "/data/local-files/?d=a\\b.jpg",
    "/data/local-files/?d=%EF%BC%8E%EF%BC%8E/x.jpg",
    "/api/current-user/whoami",
]


@pytest.mark.parametrize("trick", TRICKS)
def test_hostile_url_is_refused_and_the_token_stays_home(lsr, ls, attacker, trick):
    L = ls.url.split("//", 1)[1]
    url = trick.format(A=f"127.0.0.1:{attacker.port}", L=L, P=attacker.port)
    status = _refused(lsr, url)
    assert status in (400, 403), status
    assert attacker.received == [] and attacker.tokens_seen == 0
    _ls_api_untouched(ls)


@pytest.mark.parametrize("trick", TRICKS)
def test_hostile_url_with_the_attacker_host_allowed_never_gets_the_token(ls, tmp_path, attacker, trick):
    # even when the operator allows the attacker's host (here: every port of 127.0.0.1), the token never goes there
    ls.serve("/data/upload/1/x.mp4", b"VIDEO")
    resolver = MediaResolver(MediaSettings(ls_url=ls.url, api_key=LEGACY, cache_dir=tmp_path / "c", timeout_s=3,
                                           allowed_hosts=("127.0.0.1",)))
    L = ls.url.split("//", 1)[1]
    url = trick.format(A=f"127.0.0.1:{attacker.port}", L=L, P=attacker.port)
    try:
        resolver.fetch(url, task_id=1)
    except MediaError as exc:
        assert exc.status in (400, 403, 404, 502), exc
    assert attacker.tokens_seen == 0
    assert all(b"%5C" not in r and b"\\" not in r for r in attacker.received)
    _ls_api_untouched(ls)


def test_at_sign_inside_an_ls_path_goes_to_ls_only(lsr, ls, attacker):
    ls.serve(f"/data/upload/1/x@127.0.0.1:{attacker.port}.mp4", b"AT")
    path = lsr.fetch(f"/data/upload/1/x@127.0.0.1:{attacker.port}.mp4?y=@127.0.0.1:{attacker.port}", task_id=1)
    assert path.read_bytes() == b"AT" and attacker.received == []


@pytest.mark.parametrize("target", ["http://127.0.0.1:{P}/steal", "//127.0.0.1:{P}/steal", "http://[::1]:{P}/steal",
                                    "http://127.0.0.1:{P}\\@{L}/data/upload/1/x.mp4", "/api/current-user/whoami",
                                    "/data/upload/../../api/current-user/whoami", "http://user@127.0.0.1:{P}/"])
@pytest.mark.parametrize("start", ["/data/upload/1/r.mp4", "s3://bucket/r.mp4"])
def test_redirect_from_ls_to_another_port_or_the_api_is_403_and_never_followed(lsr, ls, attacker, target, start):
    L = ls.url.split("//", 1)[1]
    location = target.format(P=attacker.port, L=L)
    for route in ("/data/upload/1/r.mp4", "/tasks/1/presign/"):
        ls.routes[route] = lambda r, loc=location: Response(status=302, headers={"Location": loc})
    assert _refused(lsr, start) == 403
    assert attacker.received == []
    _ls_api_untouched(ls)


def test_redirect_to_an_allowed_host_is_followed_without_the_token(ls, tmp_path, attacker):
    ls.routes["/data/upload/1/r.mp4"] = lambda r: Response(status=302, headers={
        "Location": f"http://127.0.0.1:{attacker.port}/bucket/r.mp4?X-Amz-Signature=s3cr3t"})
    resolver = MediaResolver(MediaSettings(ls_url=ls.url, api_key=LEGACY, cache_dir=tmp_path / "c", timeout_s=3,
                                           allowed_hosts=(f"127.0.0.1:{attacker.port}",)))
    assert resolver.fetch("/data/upload/1/r.mp4", task_id=1).read_bytes() == b"ok"
    assert len(attacker.received) == 1 and attacker.tokens_seen == 0
    assert b"Authorization" not in attacker.received[0] and b"Cookie" not in attacker.received[0]


def test_token_goes_to_ls_media_paths_only(lsr, ls):
    assert lsr.fetch("/data/upload/1/x.mp4", task_id=1).read_bytes() == b"VIDEO"
    assert lsr.fetch(f"{ls.url.upper().replace('HTTP://', 'HtTp://')}/data/upload/1/x.mp4", task_id=1).exists()
    assert [r["auth"] for r in ls.seen] == [f"Token {LEGACY}"]  # the second is a cache hit of the same key
    _ls_api_untouched(ls)


def test_an_allowed_host_cannot_poison_the_cache_entry_of_an_ls_upload(ls, tmp_path, attacker):
    ls.serve("/data/upload/1/x.mp4", b"VIDEO")
    resolver = MediaResolver(MediaSettings(ls_url=ls.url, api_key=LEGACY, cache_dir=tmp_path / "c", timeout_s=3,
                                           allowed_hosts=("127.0.0.1",)))
    evil = resolver.fetch(f"http://127.0.0.1:{attacker.port}/data/upload/1/x.mp4", task_id=1)
    assert evil.read_bytes() == b"ok" and attacker.tokens_seen == 0
    good = resolver.fetch("/data/upload/1/x.mp4", task_id=2)
    assert good != evil and good.read_bytes() == b"VIDEO"


@pytest.mark.parametrize("ls_url, url, same", [
    ("http://ls:80", "http://ls/data/upload/1/a.jpg", True),
    ("http://ls", "http://LS:80/data/upload/1/a.jpg", True),
    ("https://ls", "https://ls:443/data/upload/1/a.jpg", True),
    ("http://ls", "https://ls/data/upload/1/a.jpg", False),
    ("http://ls", "http://ls:443/data/upload/1/a.jpg", False),
    ("https://ls", "http://ls:443/data/upload/1/a.jpg", False),
    ("http://ls:8080", "http://ls:08080/data/upload/1/a.jpg", True),
    ("http://[::1]:8080", "http://[0:0::1]:8080/data/upload/1/a.jpg", True),
    ("http://ls/sub", "http://ls/sub/data/upload/1/a.jpg", True),
    ("http://ls/sub", "http://ls/data/upload/1/a.jpg", False),
])
def test_origin_includes_scheme_and_default_port(tmp_path, ls_url, url, same):
    resolver = MediaResolver(MediaSettings(ls_url=ls_url, api_key=LEGACY, cache_dir=tmp_path))
    assert (resolver._ls_kind(parse_http(url)) == "upload") is same

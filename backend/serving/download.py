"""HTTP GETs of checked URLs with a total deadline: the request sent is exactly `HttpURL.url`, and when the deadline
passes the sockets of the download are shut down, so a server that drips one byte per read timeout (or never ends its
headers) cannot hold a thread longer than the deadline.

How: requests' adapter is given urllib3 connection classes that register themselves with the thread's current
`Deadline` when they send a request; the deadline's timer shuts those sockets down, which makes the blocked read fail
at once. Cookies are never stored (a cookie set by one port of a host would otherwise go to its other ports) and
`.netrc` is ignored; proxies from the environment (HTTP(S)_PROXY, NO_PROXY) are still honoured.
"""
from __future__ import annotations

import http.cookiejar
import logging
import socket
import threading
import time

import requests
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from backend.serving.urls import HttpURL, redact

_current = threading.local()


class _RedactQueries(logging.Filter):
    """urllib3 logs every request line at DEBUG ("GET /k.mp4?X-Amz-Signature=... HTTP/1.1"): redact such queries."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) and "?" in a else a for a in record.args)
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_RedactQueries())


class Deadline:
    """A total time budget for the downloads made inside `with deadline:` on this thread."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.expires = time.monotonic() + self.seconds
        self.expired = False
        self._lock = threading.Lock()
        self._conns: list[HTTPConnection] = []
        self._timer = threading.Timer(max(0.0, self.seconds), self._fire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return max(0.0, self.expires - time.monotonic())

    def __enter__(self) -> Deadline:
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        _current.deadline = None
        with self._lock:
            self._conns.clear()

    def watch(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._conns.append(conn)
            if self.expired:
                _shutdown(conn)

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            for conn in self._conns:
                _shutdown(conn)


def _shutdown(conn: HTTPConnection) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Watched:
    def request(self, *args, **kwargs):  # noqa: D401 - urllib3 API
        deadline = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline.watch(self)
        return super().request(*args, **kwargs)


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _HTTPSPool}


def new_session() -> requests.Session:
    """A requests session whose connections obey the thread's `Deadline` and which keeps no cookies."""
    session = requests.Session()
    session.trust_env = False  # no .netrc credentials; proxies are passed explicitly by `get`
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = _Adapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def get(session: requests.Session, url: HttpURL, headers: dict[str, str], *, read_timeout_s: float,
        deadline: Deadline) -> requests.Response:
    """GET exactly `url.url` (streamed, no redirects followed) within `deadline`; requests errors propagate."""
    request = requests.Request("GET", url.url, headers=headers)
    prepared = session.prepare_request(request)
    if prepared.url != url.url:  # urls.parse_http guarantees this; never send something that was not checked
        raise ValueError(f"prepared URL differs from the checked one: {url}")
    budget = max(0.001, min(read_timeout_s, deadline.remaining()))
    return session.send(prepared, stream=True, allow_redirects=False, timeout=(budget, budget),
                        proxies=get_environ_proxies(url.url))

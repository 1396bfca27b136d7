"""gunicorn's gthread worker with a deadline on each request's line and headers (slowloris).

gunicorn's gthread worker (27.0.1 here) waits at most 5 s in a thread for a new connection's first byte, but then
reads the request line and headers from a blocking socket with no deadline: a client that sends one header byte
every few seconds holds a request thread for as long as it likes, and THREADS such clients leave none for Label
Studio (HEALTH_PORT keeps answering, so nothing restarts the backend). This worker notes when a thread starts
reading a request; the worker's main loop (which wakes at least once a second) answers 408 and shuts down every
connection whose headers are not complete HEADER_TIMEOUT_S later, so the blocked read returns and the thread is
free. Bodies are bounded separately, by BODY_TIMEOUT_S in the app.

    gunicorn --worker-class backend.serving.gworker.HeaderDeadlineWorker --threads 8 _wsgi:app
"""
from __future__ import annotations

import os
import socket
import threading
import time

from gunicorn.workers.gthread import ThreadWorker

from backend.serving.limits import Limits

_408 = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 52\r\n\r\n" \
       b"the request headers did not arrive within the limit\n"


class HeaderDeadlineWorker(ThreadWorker):
    def init_process(self):
        self.header_timeout_s = Limits.from_env(os.environ).header_timeout_s
        self._reading: dict[object, float] = {}  # connection -> when its request line and headers must be in
        self._reading_lock = threading.Lock()
        super().init_process()  # runs the worker's loop; returns when it stops

    def handle(self, conn):
        with self._reading_lock:
            self._reading[conn] = time.monotonic() + self.header_timeout_s
        try:
            return super().handle(conn)
        finally:
            self._done_reading(conn)

    def handle_request(self, req, conn):
        self._done_reading(conn)  # the headers are in; the app bounds the body (BODY_TIMEOUT_S)
        return super().handle_request(req, conn)

    def _done_reading(self, conn) -> None:
        with self._reading_lock:
            self._reading.pop(conn, None)

    def murder_keepalived(self, force=False):
        if force:  # gunicorn 27; 23-26 call it without arguments
            super().murder_keepalived(force)
        else:
            super().murder_keepalived()
        now = time.monotonic()
        with self._reading_lock:
            late = [c for c, deadline in self._reading.items() if deadline < now]
            for c in late:
                del self._reading[c]
        for conn in late:
            self.log.warning("request headers from %s not complete after %.0f s (HEADER_TIMEOUT_S): 408, closed",
                             conn.client, self.header_timeout_s)
            try:
                conn.sock.send(_408, socket.MSG_DONTWAIT)
            except OSError:
                pass
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)  # the thread blocked in recv() gets EOF and lets go
            except OSError:
                pass

"""Prometheus metrics of one app instance (own registry, so tests can build several apps in one process)."""
from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("sam2_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("sam2_request_seconds", "HTTP request latency in seconds", ["endpoint"],
                                 buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 20, 40, 100), registry=self.registry)

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A value read at scrape time (cache bytes, sessions, jobs; also the frames-propagated total)."""
        Gauge(name, doc, registry=self.registry).set_function(read)

"""Small bounded helpers: a token bucket (work per minute) and an LRU dict (caches that must not grow forever).

Both are a few lines over the standard library; a dependency (cachetools, limits) would add more than it saves.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TokenBucket:
    """`rate_per_min` tokens a minute, at most `burst` saved up. `take()` never blocks; `wait_time()` says how long
    until the next token."""

    def __init__(self, rate_per_min: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.rate = rate_per_min / 60.0
        self.burst = float(burst if burst is not None else max(1.0, rate_per_min / 6))
        self._clock = clock
        self._tokens, self._t = self.burst, clock()
        self._lock = threading.Lock()

    def _refill_locked(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
        self._t = now

    def take(self) -> bool:
        with self._lock:
            self._refill_locked()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    def wait_time(self) -> float:
        with self._lock:
            self._refill_locked()
            return max(0.0, (1.0 - self._tokens) / self.rate)


class LRUDict(Generic[K, V]):
    """A dict that forgets its least recently used key beyond `max_items` (thread-safe)."""

    def __init__(self, max_items: int):
        self.max_items = max_items
        self._d: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, default: V | None = None) -> V | None:
        with self._lock:
            if key not in self._d:
                return default
            self._d.move_to_end(key)
            return self._d[key]

    def __contains__(self, key: K) -> bool:
        with self._lock:
            return key in self._d

    def __setitem__(self, key: K, value: V) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.max_items:
                self._d.popitem(last=False)

    def pop(self, key: K, default: V | None = None) -> V | None:
        with self._lock:
            return self._d.pop(key, default)

    def __len__(self) -> int:
        with self._lock:
            return len(self._d)
